"""DreamerV1 and DreamerV3, and their policies."""

from sb3_rssm.dreamer.dreamer_v1 import DreamerV1
from sb3_rssm.dreamer.dreamer_v3 import DreamerV3
from sb3_rssm.dreamer.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "DreamerV1", "DreamerV3", "MlpPolicy", "MultiInputPolicy"]
