"""sb3_rssm: world-model agents (PlaNet, Dreamer) for Stable-Baselines3."""

from sb3_rssm.dreamer import DreamerV1
from sb3_rssm.planet import PlaNet
from sb3_rssm.version import __version__

__all__ = ["DreamerV1", "PlaNet", "__version__"]
