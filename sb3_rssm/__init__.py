"""sb3_rssm: world-model agents (PlaNet, Dreamer) for Stable-Baselines3."""

# first, before any torch tensor exists: PyTorch reads the variable at its first allocation
from sb3_rssm.common.memory import enable_huge_pages

enable_huge_pages()

# ruff: noqa: E402
from sb3_rssm.common.dmc import configure_mujoco_gl, make_dmc_env, register_dmc_envs
from sb3_rssm.dreamer_v1 import DreamerV1
from sb3_rssm.dreamer_v3 import DreamerV3
from sb3_rssm.legacy import install as install_legacy_module_paths
from sb3_rssm.planet import PlaNet
from sb3_rssm.version import __version__

# headless machines: MUJOCO_GL=egl unless set, before anything imports dm_control (it reads the variable once)
configure_mujoco_gl()
# gymnasium ids such as "sb3_rssm/dmc-cartpole-swingup-pixels-v0"; dm_control is imported only when one is made
register_dmc_envs()
# models and replay buffers saved before a module moved name it by its old path
install_legacy_module_paths()

__all__ = ["DreamerV1", "DreamerV3", "PlaNet", "__version__", "make_dmc_env", "register_dmc_envs"]
