"""dm_control tasks: spaces, seeding, action repeat, registered ids (vec envs, subprocesses) and clear errors."""

import os
import subprocess
import sys
import textwrap
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import sb3_rssm
from sb3_rssm import make_dmc_env
from sb3_rssm.common import dmc
from sb3_rssm.common.dmc import DMC_TASKS, ActionRepeat, dmc_env_id

pytest.importorskip("dm_control")
pytest.importorskip("shimmy")


@pytest.fixture
def cartpole():
    env = make_dmc_env("cartpole-swingup", seed=0)
    yield env
    env.close()


def test_pixel_spaces_and_steps(cartpole):
    assert cartpole.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert cartpole.action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs, _ = cartpole.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3) and cartpole.observation_space.contains(obs)
    obs, reward, terminated, truncated, _ = cartpole.step(cartpole.action_space.sample())
    assert cartpole.observation_space.contains(obs) and np.isfinite(reward)
    assert not terminated and not truncated
    # render() shows the frame the agent saw, without rendering again
    assert np.array_equal(cartpole.render(), obs)


def test_seeded_resets_are_deterministic(cartpole):
    first, _ = cartpole.reset(seed=3)
    cartpole.step(cartpole.action_space.sample())
    again, _ = cartpole.reset(seed=3)
    other = make_dmc_env("cartpole-swingup")
    try:
        assert np.array_equal(first, again)
        assert np.array_equal(first, other.reset(seed=3)[0])
        assert not np.array_equal(first, other.reset(seed=4)[0])
    finally:
        other.close()
    # the constructor's seed makes the first unseeded reset reproducible
    a, b = make_dmc_env("cartpole-swingup", pixels=False, seed=7), make_dmc_env("cartpole-swingup", pixels=False, seed=7)
    assert np.array_equal(a.reset()[0], b.reset()[0])


def test_action_repeat_renders_once_and_sums_rewards():
    env = make_dmc_env("cartpole-swingup", action_repeat=4)
    base = env.unwrapped
    renders, rewards = [], []
    render, step = base.render, base.step

    def counting_render():
        renders.append(1)
        return render()

    def recording_step(action):
        result = step(action)
        rewards.append(float(result[1]))
        return result

    base.render, base.step = counting_render, recording_step
    env.reset(seed=0)
    renders.clear()
    for _ in range(3):
        rewards.clear()
        _, reward, _, _, _ = env.step(np.array([0.5], dtype=np.float32))
        assert len(rewards) == 4
        assert reward == pytest.approx(sum(rewards))
    assert len(renders) == 3
    env.close()


class _ShortEnv(gym.Env):
    """Ends (by truncation) after 3 steps; reward 1 per step."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.zeros(1, np.float32), 1.0, False, self.steps >= 3, {}


def test_action_repeat_stops_at_episode_end():
    env = ActionRepeat(_ShortEnv(), 4)
    env.reset()
    _, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    assert (reward, terminated, truncated, env.unwrapped.steps) == (3.0, False, True, 3)
    with pytest.raises(ValueError, match="positive integer"):
        ActionRepeat(_ShortEnv(), 0)


def test_state_variant_and_episode_length():
    env = gym.make(dmc_env_id("cartpole-swingup", pixels=False))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.dtype == np.float32 and obs.shape == env.observation_space.shape == (5,)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        steps += 1
    # 1000 physics steps at the papers' action repeat of 8 for cartpole
    assert steps == 125
    env.close()


def test_registered_ids():
    for name, (_, _, repeat) in DMC_TASKS.items():
        for pixels in (True, False):
            spec = gym.spec(dmc_env_id(name, pixels))
            assert spec.kwargs["action_repeat"] == repeat and spec.kwargs["pixels"] is pixels
    env = gym.make("sb3_rssm/dmc-cup-catch-pixels-v0", action_repeat=2)
    assert env.get_wrapper_attr("repeat") == 2
    assert env.reset(seed=0)[0].shape == (64, 64, 3)
    env.close()


def test_registered_id_in_subprocess_workers():
    # "module:id" makes gymnasium import sb3_rssm inside each worker, whatever the main module imported
    venv = make_vec_env(f"sb3_rssm:{dmc_env_id('cartpole-swingup')}", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        obs = venv.reset()
        assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
        # make_vec_env seeds the envs 0 and 1
        assert not np.array_equal(obs[0], obs[1])
        obs, rewards, _, _ = venv.step(np.zeros((2, 1), np.float32))
        assert obs.shape == (2, 64, 64, 3) and rewards.shape == (2,)
    finally:
        venv.close()


def test_import_is_lazy_and_picks_egl_headless(tmp_path):
    """``import sb3_rssm`` loads no dm_control/MuJoCo, sets MUJOCO_GL=egl without a display; plain ids work in workers."""
    # forkserver/spawn workers re-import the main script, so one that imports sb3_rssm at the top gets the ids
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import sys

            import sb3_rssm
            from stable_baselines3.common.env_util import make_vec_env
            from stable_baselines3.common.vec_env import SubprocVecEnv

            if __name__ == "__main__":
                loaded = [m for m in sys.modules if m.split(".")[0] in ("dm_control", "mujoco", "shimmy")]
                assert not loaded, loaded
                print(os.environ.get("MUJOCO_GL"))
                venv = make_vec_env("sb3_rssm/dmc-cartpole-swingup-pixels-v0", n_envs=2, vec_env_cls=SubprocVecEnv)
                print(venv.reset().shape)
                venv.close()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["egl", "(2, 64, 64, 3)"]


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"Unknown dm_control task 'cartpole-jump'.*cartpole-swingup"):
        make_dmc_env("cartpole-jump")
    with pytest.raises(ValueError, match=r"not of the form '<domain>-<task>'.*Valid tasks"):
        make_dmc_env("cartpole")
    with pytest.raises(ValueError, match="render_mode='bogus'"):
        make_dmc_env("cartpole-swingup", render_mode="bogus")
    with pytest.raises(ValueError, match="action_repeat"):
        make_dmc_env("cartpole-swingup", action_repeat=0)
    # aliases and other suite tasks
    env = make_dmc_env("ball_in_cup-catch", pixels=False)
    assert env.get_wrapper_attr("repeat") == 4
    env.close()
    env = make_dmc_env("hopper-stand", pixels=False)
    assert env.get_wrapper_attr("repeat") == dmc.DEFAULT_ACTION_REPEAT
    env.close()


def test_rendering_error_names_values_and_fix(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    probes = {"egl": (False, "EGL not found"), "osmesa": (True, "")}
    monkeypatch.setattr(dmc, "_probe_backend", lambda backend: probes[backend])
    message = str(dmc._rendering_error(RuntimeError("no display")))
    assert "MUJOCO_GL=glfw (this process): RuntimeError: no display" in message
    assert "MUJOCO_GL=egl (fresh process): failed: EGL not found" in message
    assert "export MUJOCO_GL=osmesa" in message
    probes["osmesa"] = (False, "no libOSMesa")
    message = str(dmc._rendering_error(RuntimeError("no display")))
    assert "No OpenGL backend works" in message and "apt-get install" in message


def test_invalid_backend_end_to_end():
    code = "from sb3_rssm import make_dmc_env; make_dmc_env('cartpole-swingup')"
    env = {**os.environ, "MUJOCO_GL": "bogus"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last = result.stderr[result.stderr.rindex("RuntimeError: Cannot render") :]
    assert "MUJOCO_GL=bogus (this process)" in last
    assert "MUJOCO_GL=egl (fresh process): works" in last and "export MUJOCO_GL=egl" in last


def test_package_exports():
    assert sb3_rssm.make_dmc_env is make_dmc_env
