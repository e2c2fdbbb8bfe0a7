"""
DreamerV3 (Hafner et al., 2023): the algorithm, its policies, and what only it uses (the categorical RSSM, its
networks and world model, the LaProp optimizer).
"""

from sb3_rssm.dreamer_v3.dreamer_v3 import DreamerV3
from sb3_rssm.dreamer_v3.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "DreamerV3", "MlpPolicy", "MultiInputPolicy"]
