"""DreamerV1 and its policies."""

from sb3_rssm.dreamer.dreamer_v1 import DreamerV1
from sb3_rssm.dreamer.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "DreamerV1", "MlpPolicy", "MultiInputPolicy"]
