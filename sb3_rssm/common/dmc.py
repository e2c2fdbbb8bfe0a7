"""
DeepMind Control Suite tasks as gymnasium envs for the world-model agents.

:func:`make_dmc_env` builds a dm_control task through shimmy's ``dm_control/<domain>-<task>-v0`` ids and returns
64x64x3 uint8 frames (or a flat float32 state vector), with an action repeat and seeded resets. The wrapper order
matters for speed: the action repeat sits *inside* the pixel wrapper, so each agent step renders one frame (the
last of the repeat), not one per physics step.

:func:`register_dmc_envs` registers the papers' six pixel tasks (and state-vector variants) as gymnasium ids, e.g.
``sb3_rssm/dmc-cartpole-swingup-pixels-v0``, with entry-point strings: importing ``sb3_rssm`` never imports
dm_control or MuJoCo, and a subprocess worker that only has the id's spec imports this module by itself.

Rendering needs an OpenGL backend. With ``MUJOCO_GL`` unset and no display, ``import sb3_rssm`` sets it to ``egl``
(and :func:`make_dmc_env` checks again before it imports dm_control): dm_control reads it once, at its own import,
and would otherwise try GLFW first, which needs a display and can abort the process. If rendering still fails, the
alternatives are tried in fresh processes (a backend cannot be switched once dm_control has loaded one) and a
``RuntimeError`` names every value tried, which of them works, and how to fix the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Optional, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# The papers' tasks: short name -> (dm_control domain, task, action repeat). The repeats are PlaNet's (Hafner et
# al., 2019); Dreamer (Hafner et al., 2020) used 2 for every task.
DMC_TASKS: dict[str, tuple[str, str, int]] = {
    "cartpole-swingup": ("cartpole", "swingup", 8),
    "reacher-easy": ("reacher", "easy", 4),
    "cheetah-run": ("cheetah", "run", 4),
    "finger-spin": ("finger", "spin", 2),
    "cup-catch": ("ball_in_cup", "catch", 4),
    "walker-walk": ("walker", "walk", 2),
}
# Other dm_control suite tasks get Dreamer's action repeat.
DEFAULT_ACTION_REPEAT = 2
# Headless backends, in the order they are worth trying: EGL is hardware-accelerated where a GPU driver exists.
HEADLESS_GL_BACKENDS = ("egl", "osmesa")
ENV_ID_PREFIX = "sb3_rssm/dmc-"

_RENDER_PROBE = "from dm_control import suite; suite.load('cartpole', 'swingup').physics.render(8, 8, camera_id=0)"


def dmc_env_id(name: str, pixels: bool = True) -> str:
    """
    The gymnasium id registered for one of :data:`DMC_TASKS`.

    :param name: short task name, e.g. ``"cartpole-swingup"``
    :param pixels: the 64x64 pixel variant (else the state-vector variant)
    :return: e.g. ``"sb3_rssm/dmc-cartpole-swingup-pixels-v0"``
    """
    return f"{ENV_ID_PREFIX}{name}-{'pixels' if pixels else 'state'}-v0"


def _valid_tasks_message() -> str:
    named = ", ".join(f"{name} (action repeat {repeat})" for name, (_, _, repeat) in DMC_TASKS.items())
    return (
        f"Valid tasks: {named}; 'ball_in_cup-catch' is accepted for 'cup-catch', and any other dm_control suite "
        "task as '<domain>-<task>' (e.g. 'hopper-hop', 'quadruped-run')."
    )


def _parse_task(domain_task: str) -> tuple[str, str, Optional[int]]:
    """Split ``"<domain>-<task>"`` into dm_control's names and the papers' action repeat (None if not a paper task)."""
    if not isinstance(domain_task, str) or "-" not in domain_task:
        raise ValueError(f"dm_control task {domain_task!r} is not of the form '<domain>-<task>'. {_valid_tasks_message()}")
    if domain_task in DMC_TASKS:
        domain, task, repeat = DMC_TASKS[domain_task]
        return domain, task, repeat
    # suite domain names have no hyphens (task names may have underscores), so the first hyphen splits them
    domain, _, task = domain_task.partition("-")
    for domain_, task_, repeat in DMC_TASKS.values():
        if (domain, task) == (domain_, task_):
            return domain, task, repeat
    return domain, task, None


def configure_mujoco_gl() -> None:
    """
    Set ``MUJOCO_GL=egl`` when it is unset on Linux without a display. It only matters before dm_control (or
    PyOpenGL) is first imported; a value the user set is never changed.
    """
    if "MUJOCO_GL" in os.environ:
        return
    headless = sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    if headless:
        os.environ["MUJOCO_GL"] = "egl"


def _probe_backend(backend: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Render one small frame with ``MUJOCO_GL=backend`` in a fresh Python process: (works, last error line)."""
    env = {**os.environ, "MUJOCO_GL": backend}
    # PyOpenGL's platform must agree with the backend; a value inherited from this process would break the probe
    env.pop("PYOPENGL_PLATFORM", None)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _RENDER_PROBE], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if result.returncode == 0:
        return True, ""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit code {result.returncode}"


def _rendering_error(exc: BaseException) -> RuntimeError:
    """A RuntimeError naming the MUJOCO_GL values tried (this process and fresh ones), which work, and the fix."""
    current = os.environ.get("MUJOCO_GL", "<unset>")
    tried = [f"MUJOCO_GL={current} (this process): {type(exc).__name__}: {exc}"]
    working = []
    # the backend in use is probed afresh too: working there means this process set MUJOCO_GL too late
    for backend in HEADLESS_GL_BACKENDS:
        works, error = _probe_backend(backend)
        tried.append(f"MUJOCO_GL={backend} (fresh process): {'works' if works else 'failed: ' + error}")
        if works:
            working.append(backend)
    if working:
        fix = (
            f"MUJOCO_GL={working[0]} works on this machine in a fresh process: set it before Python starts "
            f"(`export MUJOCO_GL={working[0]}`). dm_control picks its backend once, when it is first imported, so "
            "setting MUJOCO_GL after dm_control (or PyOpenGL) was imported has no effect."
        )
    else:
        fix = (
            "No OpenGL backend works on this machine. Install one and set MUJOCO_GL before Python starts: EGL "
            "(Debian/Ubuntu: `apt-get install libegl1 libgl1-mesa-dri`, then `export MUJOCO_GL=egl`) or OSMesa "
            "(`apt-get install libosmesa6`, then `export MUJOCO_GL=osmesa`); with a display, GLFW (`MUJOCO_GL=glfw`). "
            "State observations (pixels=False, or the '-state-v0' ids) need no rendering."
        )
    return RuntimeError("Cannot render dm_control frames. Tried:\n  " + "\n  ".join(tried) + "\n" + fix)


class ActionRepeat(gym.Wrapper):
    """
    Repeat each action ``repeat`` times and sum the rewards; stop early when the episode ends.

    :param env: the env to wrap
    :param repeat: physics steps per agent step (>= 1)
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        if int(repeat) != repeat or repeat < 1:
            raise ValueError(f"action_repeat must be a positive integer, got {repeat!r}")
        self.repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class DMCObservation(gym.Wrapper):
    """
    The agent's view of a shimmy dm_control env: a (size, size, 3) uint8 frame rendered once per agent step, or the
    task's observation dict flattened to float32; actions in [-1, 1] (float32), mapped linearly onto the task's bounds.

    Put it *outside* :class:`ActionRepeat`, so a repeated action is rendered once.

    :param env: a shimmy ``DmControlCompatibilityV0`` env (possibly wrapped) created with ``render_mode="rgb_array"``
        and render kwargs of the target size, when ``pixels``
    :param pixels: observe frames (else the flattened state)
    :param size: frame height and width
    :param render_fps: agent steps per second of simulated time (for videos)
    """

    def __init__(self, env: gym.Env, pixels: bool, size: int, render_fps: float = 50.0) -> None:
        super().__init__(env)
        self.pixels = pixels
        self.size = size
        inner_space = env.action_space
        if not isinstance(inner_space, spaces.Box):
            raise ValueError(f"dm_control task has a non-Box action space {inner_space}")
        self._action_low = inner_space.low.astype(np.float64)
        self._action_high = inner_space.high.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, inner_space.shape, np.float32)
        if pixels:
            self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        else:
            size_ = sum(int(np.prod(sub.shape)) for sub in env.observation_space.spaces.values())
            self.observation_space = spaces.Box(-np.inf, np.inf, (size_,), np.float32)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": render_fps}
        self._last_frame: Optional[np.ndarray] = None

    @property
    def render_mode(self) -> Optional[str]:
        return "rgb_array" if self.env.render_mode is not None else None

    def _observe(self, obs: dict[str, Any]) -> np.ndarray:
        if not self.pixels:
            return np.concatenate([np.asarray(value, dtype=np.float32).reshape(-1) for value in obs.values()])
        frame = np.asarray(self.env.render(), dtype=np.uint8)
        if frame.shape != (self.size, self.size, 3):
            raise RuntimeError(f"dm_control rendered a frame of shape {frame.shape}, expected {(self.size, self.size, 3)}")
        self._last_frame = frame
        return frame.copy()

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -1.0, 1.0)
        scaled = self._action_low + (action + 1.0) * 0.5 * (self._action_high - self._action_low)
        obs, reward, terminated, truncated, info = self.env.step(scaled)
        return self._observe(obs), reward, terminated, truncated, info

    def render(self) -> Optional[np.ndarray]:
        # the pixel variant shows what the agent saw rather than paying for another render
        if self.pixels and self._last_frame is not None:
            return self._last_frame.copy()
        return self.env.render()


def make_dmc_env(
    domain_task: str,
    pixels: bool = True,
    size: int = 64,
    action_repeat: Optional[int] = None,
    camera_id: int = 0,
    seed: Optional[int] = None,
    render_mode: Optional[str] = None,
) -> gym.Env:
    """
    A dm_control suite task as a gymnasium env, the way PlaNet and Dreamer see it.

    Observations are (size, size, 3) uint8 frames from camera ``camera_id`` (channel-last: SB3 transposes them), or
    with ``pixels=False`` the task's state observations flattened to float32. Actions are float32 in [-1, 1]. Each
    agent step repeats the action ``action_repeat`` times, sums the rewards and renders one frame; an episode is 1000
    physics steps, so 1000 / action_repeat agent steps, and ends by truncation (dm_control tasks never terminate).

    The agents' conv encoder and decoder need ``size=64``; other sizes are allowed here for other uses.

    :param domain_task: ``"<domain>-<task>"``: one of the papers' six tasks (``cartpole-swingup``, ``reacher-easy``,
        ``cheetah-run``, ``finger-spin``, ``cup-catch`` (or ``ball_in_cup-catch``), ``walker-walk``) or any other
        dm_control suite task
    :param pixels: observe rendered frames (else state vectors, which need no OpenGL unless rendered)
    :param size: frame height and width in pixels
    :param action_repeat: physics steps per agent step; default: the papers' value for the task
        (cartpole 8, reacher 4, cheetah 4, finger 2, cup 4, walker 2; other tasks 2)
    :param camera_id: the dm_control camera to render
    :param seed: seeds the task's random initial states, so the first ``reset()`` without a seed is reproducible;
        ``reset(seed=...)`` reseeds it, and the same seed gives the same first observation
    :param render_mode: ``None``, ``"rgb_array"`` (``render()`` returns the last frame, or a frame of the state
        variant) or ``"human"`` (shows the frames in a window through gymnasium's ``HumanRendering``; needs pygame
        and a display)
    :return: the env
    """
    domain, task, paper_repeat = _parse_task(domain_task)
    repeat = action_repeat if action_repeat is not None else (paper_repeat or DEFAULT_ACTION_REPEAT)
    if int(repeat) != repeat or repeat < 1:
        raise ValueError(f"action_repeat must be a positive integer, got {action_repeat!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if render_mode not in (None, "rgb_array", "human"):
        raise ValueError(
            f"render_mode={render_mode!r} is not supported: pass None, 'rgb_array' or 'human'. "
            "Videos: `python -m sb3_rssm.zoo.record_video` (or SB3's VecVideoRecorder on 'rgb_array' envs)."
        )

    configure_mujoco_gl()
    try:
        import dm_control.suite as suite
        import shimmy
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("dm_control", "shimmy", "mujoco", "dm_env"):
            raise ImportError(
                f"dm_control tasks need dm_control and shimmy ({exc}): pip install 'sb3_rssm[dmc]' "
                "(or pip install dm-control 'shimmy[dm-control]')"
            ) from exc
        raise _rendering_error(exc) from exc
    except (ImportError, RuntimeError, AttributeError, OSError) as exc:
        # dm_control loads its OpenGL backend while it is imported
        raise _rendering_error(exc) from exc
    del shimmy  # imported for its registration of the dm_control/<domain>-<task>-v0 ids

    if (domain, task) not in suite.ALL_TASKS:
        raise ValueError(f"Unknown dm_control task {domain_task!r}. {_valid_tasks_message()}")

    renders = pixels or render_mode is not None
    make_kwargs: dict[str, Any] = {}
    if seed is not None:
        make_kwargs["task_kwargs"] = {"random": int(seed)}
    if renders:
        make_kwargs.update(render_mode="rgb_array", render_kwargs={"width": size, "height": size, "camera_id": camera_id})
    inner = gym.make(f"dm_control/{domain}-{task}-v0", **make_kwargs)
    if renders:
        try:
            # a first render here turns a broken OpenGL setup into one clear error at construction; unwrapped,
            # because gymnasium's order enforcing forbids render() before reset()
            inner.unwrapped.render()
        except Exception as exc:
            inner.close()
            raise _rendering_error(exc) from exc
    fps = 1.0 / (float(inner.unwrapped.dt) * int(repeat))
    env: gym.Env = DMCObservation(ActionRepeat(inner, int(repeat)), pixels=pixels, size=int(size), render_fps=fps)
    if render_mode == "human":
        env = gym.wrappers.HumanRendering(env)
    return env


def register_dmc_envs() -> None:
    """
    Register the papers' six tasks as gymnasium ids with the papers' action repeats:
    ``sb3_rssm/dmc-<task>-pixels-v0`` (64x64 frames) and ``sb3_rssm/dmc-<task>-state-v0`` (state vectors).
    Keyword arguments of :func:`make_dmc_env` can be passed to ``gymnasium.make`` (e.g. ``action_repeat=2``).
    Registration stores entry-point strings only, so it imports neither dm_control nor MuJoCo.
    """
    for name, (_, _, repeat) in DMC_TASKS.items():
        for pixels in (True, False):
            env_id = dmc_env_id(name, pixels)
            if env_id in gym.registry:
                continue
            gym.register(
                id=env_id,
                entry_point="sb3_rssm.common.dmc:make_dmc_env",
                kwargs={"domain_task": name, "pixels": pixels, "action_repeat": repeat},
            )
