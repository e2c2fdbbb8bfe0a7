"""DreamerV1 (Hafner et al., 2020): the algorithm and its policies."""

from sb3_rssm.dreamer_v1.dreamer_v1 import DreamerV1
from sb3_rssm.dreamer_v1.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "DreamerV1", "MlpPolicy", "MultiInputPolicy"]
