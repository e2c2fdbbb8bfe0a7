"""PlaNet and its policies."""

from sb3_rssm.planet.planet import PlaNet
from sb3_rssm.planet.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "PlaNet"]
