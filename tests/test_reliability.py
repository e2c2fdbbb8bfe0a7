"""Reliability: exact resume from checkpoints, clear errors for bad files and dying env workers, bounded memory."""

import gc
import io
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_rssm import DreamerV1, PlaNet
from sb3_rssm.common.envs import PointMassEnv
from sb3_rssm.common.world_model_algorithm import EnvWorkerError
from tests.conftest import ALGORITHMS, tiny_model

pytestmark = pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__)

EPISODE = 10  # PointMassEnv episode length used below: checkpoints at multiples of it fall on episode ends


def state_of(model):
    """Parameters and optimizer states: what a resumed run must agree on."""
    params = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    optimizers = {name: getattr(model.policy, name).state_dict()["state"] for name in model.policy.optimizer_names}
    return params, optimizers


def assert_same_buffer(a, b):
    assert a.size() == b.size()
    np.testing.assert_array_equal(a.env_pos, b.env_pos)
    np.testing.assert_array_equal(a.env_full, b.env_full)
    np.testing.assert_array_equal(a.episode_start, b.episode_start)
    for name in ("observations", "actions", "rewards", "is_first", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("policy", ["MlpPolicy", "CnnPolicy"])
@pytest.mark.parametrize("checkpoint_at", [10, 40], ids=["during-warm-up", "after-updates"])
def test_interrupted_and_resumed_run_equals_uninterrupted(algorithm, checkpoint_at, policy, tmp_path):
    # a small buffer: the default (1M steps) pickles 12 GB of 64x64 frames at each checkpoint
    kwargs = dict(seed=0, learning_starts=20, train_freq=10, gradient_steps=2, buffer_size=200)
    total = 80
    pixels = policy == "CnnPolicy"
    uninterrupted = tiny_model(algorithm, policy, PointMassEnv(max_steps=EPISODE, pixels=pixels), **kwargs)
    uninterrupted.learn(total)

    first = tiny_model(algorithm, policy, PointMassEnv(max_steps=EPISODE, pixels=pixels), **kwargs)
    checkpoint = CheckpointCallback(save_freq=checkpoint_at, save_path=str(tmp_path), save_replay_buffer=True)
    first.learn(checkpoint_at, callback=checkpoint)
    del first  # the process "dies" here: only the files remain

    resumed = algorithm.load(
        tmp_path / f"rl_model_{checkpoint_at}_steps.zip", env=PointMassEnv(max_steps=EPISODE, pixels=pixels)
    )
    resumed.load_replay_buffer(tmp_path / f"rl_model_replay_buffer_{checkpoint_at}_steps.pkl")
    assert resumed.num_timesteps == checkpoint_at
    resumed.learn(total - checkpoint_at, reset_num_timesteps=False)

    assert resumed.num_timesteps == uninterrupted.num_timesteps == total
    assert resumed._n_updates == uninterrupted._n_updates > 0
    assert_same_buffer(resumed.replay_buffer, uninterrupted.replay_buffer)
    params_a, optimizers_a = state_of(uninterrupted)
    params_b, optimizers_b = state_of(resumed)
    for key in params_a:
        th.testing.assert_close(params_b[key], params_a[key], rtol=1e-5, atol=1e-6, msg=key)
    for name, states in optimizers_a.items():
        assert states.keys() == optimizers_b[name].keys()
        for index, state in states.items():
            for key, value in state.items():
                th.testing.assert_close(optimizers_b[name][index][key], value, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")


def test_a_resume_in_the_middle_of_an_episode_cuts_it_in_the_buffer(algorithm, tmp_path):
    """
    The env's own state is not saved: a run resumed in the middle of an episode starts a new one. The interrupted
    episode stays in the buffer as it was (neither terminated nor truncated: it just stops), the new one starts with
    a row of its own flagged ``is_first``, and a chunk sampled across the cut resets the belief there.
    """
    middle = 3 * EPISODE + EPISODE // 2  # 35: step 5 of the fourth episode
    first = tiny_model(
        algorithm, "MlpPolicy", PointMassEnv(max_steps=EPISODE), seed=0, learning_starts=20, train_freq=5, buffer_size=200
    )
    first.learn(middle, callback=CheckpointCallback(save_freq=middle, save_path=str(tmp_path), save_replay_buffer=True))
    stored = int(first.replay_buffer.env_pos[0])
    del first
    resumed = algorithm.load(tmp_path / f"rl_model_{middle}_steps.zip", env=PointMassEnv(max_steps=EPISODE))
    resumed.load_replay_buffer(tmp_path / f"rl_model_replay_buffer_{middle}_steps.pkl")
    updates = resumed._n_updates
    resumed.learn(20, reset_num_timesteps=False)
    buffer = resumed.replay_buffer
    # rows: 4 episode starts + 35 transitions before the cut; then the new episode's first observation
    assert stored == 4 + middle
    last_before, first_after = stored - 1, stored
    assert not buffer.is_first[last_before, 0] and not buffer.terminated[last_before, 0]
    assert not buffer.truncated[last_before, 0]
    assert buffer.is_first[first_after, 0] and buffer.rewards[first_after, 0] == 0
    np.testing.assert_array_equal(buffer.observations[first_after, 0], PointMassEnv(max_steps=EPISODE).reset()[0])
    assert resumed._n_updates > updates
    # a chunk across the cut: flagged where the new episode starts
    rows = np.arange(first_after - 2, first_after + 2)[None, :]
    chunk = buffer._get_samples((rows, np.zeros((1, 1), dtype=int)))
    assert chunk.is_first[0].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_resume_without_replay_buffer_warns_and_trains_on(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(max_steps=EPISODE), seed=0)
    model.learn(40, callback=CheckpointCallback(save_freq=40, save_path=str(tmp_path)))
    resumed = algorithm.load(tmp_path / "rl_model_40_steps.zip", env=PointMassEnv(max_steps=EPISODE))
    assert resumed._pending_gradient_steps > 0
    with pytest.warns(UserWarning, match="load_replay_buffer"):
        resumed.learn(40, reset_num_timesteps=False)
    assert resumed.num_timesteps == 80


def test_load_errors_name_the_problem(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    path = tmp_path / "model.zip"
    model.save(path)
    content = path.read_bytes()

    with pytest.raises(FileNotFoundError):
        algorithm.load(tmp_path / "missing.zip")

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="truncated"):
        algorithm.load(truncated)

    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(path) as archive:
        policy = archive.getinfo("policy.pth")
        start = policy.header_offset + 30 + len(policy.filename.encode()) + len(policy.extra)
    damaged = bytearray(content)
    for i in range(start + 200, start + 210):
        damaged[i] ^= 0xFF
    corrupt.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="corrupt"):
        algorithm.load(corrupt)

    not_a_model = tmp_path / "other.zip"
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a model saved by Stable-Baselines3"):
        algorithm.load(not_a_model)

    text = tmp_path / "text.zip"
    text.write_text("not a zip at all")
    with pytest.raises(ValueError, match="not a readable zip"):
        algorithm.load(text)

    foreign = tmp_path / "sac.zip"
    SAC("MlpPolicy", PointMassEnv(), policy_kwargs=dict(net_arch=[8]), buffer_size=10).save(foreign)
    with pytest.raises(ValueError, match="another algorithm"):
        algorithm.load(foreign)
    other = PlaNet if algorithm is DreamerV1 else DreamerV1
    with pytest.raises(ValueError, match=f"another algorithm than {other.__name__}"):
        other.load(path)

    with pytest.raises(ValueError, match="Action spaces do not match"):
        algorithm.load(path, env=PointMassEnv(discrete=True))

    # a file object works and is left where it was
    buffer = io.BytesIO(content)
    loaded = algorithm.load(buffer)
    assert isinstance(loaded, algorithm)


def test_checkpoint_tensors_load_with_weights_only(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(30)
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        tensors = [name for name in archive.namelist() if name.endswith(".pth")]
        expected = {"pytorch_variables.pth", "policy.pth", *(f"policy.{n}.pth" for n in model.policy.optimizer_names)}
        assert set(tensors) == expected
        for name in tensors:
            with archive.open(name) as file:
                th.load(io.BytesIO(file.read()), weights_only=True)


def test_env_error_in_subprocess_reaches_the_user_and_model_can_be_saved(algorithm, tmp_path, capfd):
    if algorithm is not DreamerV1:
        pytest.skip("collection is shared by every algorithm: one is enough")

    class FailingEnv(PointMassEnv):
        """Raises inside ``step`` after 25 steps (defined here so that cloudpickle sends it by value)."""

        total_steps = 0

        def step(self, action):
            self.total_steps += 1
            if self.total_steps > 25:
                raise RuntimeError(f"env exploded at its step {self.total_steps}")
            return super().step(action)

    # spawn: the workers write to this test's captured stderr, and inherit no other worker's pipe
    # (with fork, a sibling holding the dead worker's pipe open makes the parent wait forever)
    env = SubprocVecEnv([PointMassEnv, FailingEnv], start_method="spawn")
    model = tiny_model(algorithm, "MlpPolicy", env, seed=0)
    try:
        with pytest.raises(EnvWorkerError, match="worker's traceback is printed above"):
            model.learn(200)
        assert "env exploded at its step 26" in capfd.readouterr().err
        assert model.num_timesteps == 50  # 25 steps of 2 envs were collected
        model.save(tmp_path / "model.zip")
        model.save_replay_buffer(tmp_path / "buffer.pkl")
        loaded = algorithm.load(tmp_path / "model.zip")
        loaded.load_replay_buffer(tmp_path / "buffer.pkl")
        assert loaded.replay_buffer.size() == model.replay_buffer.size() == 2 * 26  # 25 steps + first obs per env
    finally:
        for process in env.processes:
            process.terminate()


class NaNRewardEnv(PointMassEnv):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.bad_step = bad_step
        self.total_steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.total_steps += 1
        return obs, (np.nan if self.total_steps == self.bad_step else reward), terminated, truncated, info


def test_non_finite_reward_from_env_is_refused_before_storing(algorithm):
    env = DummyVecEnv([lambda: PointMassEnv(), lambda: NaNRewardEnv(bad_step=15)])
    model = tiny_model(algorithm, "MlpPolicy", env, seed=0, learning_starts=100)
    model.learn(20)
    before = {name: getattr(model.replay_buffer, name).copy() for name in ("observations", "rewards", "is_first")}
    with pytest.raises(ValueError, match="Non-finite reward from env 1"):
        model.learn(20, reset_num_timesteps=False)
    assert model.replay_buffer.size() == 2 * (14 + 1)  # steps 11..14 of this learn() were stored, step 15 was not
    for name, array in before.items():
        stored = getattr(model.replay_buffer, name)
        np.testing.assert_array_equal(stored[:11], array[:11], err_msg=name)
    assert np.isfinite(model.replay_buffer.rewards).all()


def rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_memory_stays_flat_over_a_long_run(algorithm):
    if algorithm is not DreamerV1:
        pytest.skip("the buffer and update loop are shared: one algorithm is enough")
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, buffer_size=300, train_freq=20)
    model.learn(2000)
    gc.collect()
    buffer_bytes, rss, tensors = model.replay_buffer.nbytes, rss_bytes(), count_tensors()
    model.learn(6000, reset_num_timesteps=False)
    gc.collect()
    assert model.replay_buffer.nbytes == buffer_bytes
    assert model.replay_buffer.size() == 300
    assert count_tensors() <= tensors + 5, "tensors are retained across updates"
    growth = rss_bytes() - rss
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 6000 steps"


def count_tensors() -> int:
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), th.Tensor))


def test_a_buffer_that_can_never_hold_a_sequence_is_refused(algorithm):
    with pytest.raises(ValueError, match=r"never hold a sequence: buffer_size=50 .* fewer than sequence_length=100"):
        tiny_model(algorithm, "MlpPolicy", PointMassEnv(), buffer_size=50, sequence_length=100)
    with pytest.raises(ValueError, match=r"at least 40 \(sequence_length \* n_envs\)"):
        tiny_model(algorithm, "MlpPolicy", DummyVecEnv([PointMassEnv] * 2), buffer_size=30, sequence_length=20)


def test_a_buffer_larger_than_a_share_of_the_memory_says_so(algorithm, monkeypatch):
    from sb3_rssm.common.envs import ColourCueEnv

    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PHYS_PAGES": 2**18, "SC_PAGE_SIZE": 4096}[name])  # 1 GiB
    with pytest.warns(UserWarning, match=r"take 0\.6 GiB once full \(50,000 transitions of 12,\d\d\d bytes each\)"):
        tiny_model(algorithm, "CnnPolicy", ColourCueEnv(), buffer_size=50_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model(
            algorithm, "CnnPolicy", ColourCueEnv(), buffer_size=50_000, replay_buffer_kwargs=dict(max_memory_share=None)
        )
