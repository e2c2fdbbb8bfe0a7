"""The sequence replay buffer: alignment, episode starts, per-env streams, ring capacity, memory."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm.common.buffers import SequenceReplayBuffer

VECTOR = spaces.Box(-10, 10, (2,), np.float32)
ACTION = spaces.Box(-1, 1, (1,), np.float32)


def fill(buffer: SequenceReplayBuffer, steps: int, episode_length: int = 1000, n_envs: int = 1, truncate: bool = False):
    """Env i at step t observes [t, i], gets action t/100 and reward t + 0.5 (so each row is identifiable)."""
    for t in range(steps):
        obs = np.array([[t % episode_length, i] for i in range(n_envs)], dtype=np.float32)
        nxt = np.array([[t % episode_length + 1, i] for i in range(n_envs)], dtype=np.float32)
        done = np.full(n_envs, (t + 1) % episode_length == 0)
        infos = [{"TimeLimit.truncated": bool(truncate and d)} for d in done]
        buffer.add(obs, nxt, np.full((n_envs, 1), t / 100), np.full(n_envs, t + 0.5), done, infos)


def test_alignment_of_a_stored_episode():
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=4)
    fill(buffer, 3)
    assert buffer.size() == 4  # the first observation gets a row of its own
    np.testing.assert_array_equal(buffer.observations[:4, 0, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(buffer.actions[:4, 0, 0], [0, 0.0, 0.01, 0.02])  # a_{t-1} leads into o_t
    np.testing.assert_allclose(buffer.rewards[:4, 0], [0, 0.5, 1.5, 2.5])  # r_t received on arriving at o_t
    np.testing.assert_array_equal(buffer.is_first[:4, 0], [True, False, False, False])
    batch = buffer.sample(8)
    assert batch.observations.shape == (8, 4, 2) and batch.actions.shape == (8, 4, 1)
    assert batch.rewards.shape == batch.is_first.shape == batch.terminated.shape == (8, 4)
    th.testing.assert_close(batch.observations[:, :, 0], th.arange(4.0).expand(8, 4))


def test_episode_boundaries_terminal_and_truncated():
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=4)
    fill(buffer, 6, episode_length=3)  # two episodes of 3 steps, terminated
    np.testing.assert_array_equal(buffer.observations[:8, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3])
    np.testing.assert_array_equal(buffer.is_first[:8, 0], [1, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(buffer.terminated[:8, 0], [0, 0, 0, 1, 0, 0, 0, 1])
    assert not buffer.truncated.any()
    np.testing.assert_allclose(buffer.actions[4, 0], 0)  # no action leads into a first observation
    truncated = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=4)
    fill(truncated, 3, episode_length=3, truncate=True)
    assert truncated.truncated[3, 0] and not truncated.terminated.any()


def test_per_env_streams_and_exact_ring_capacity():
    buffer = SequenceReplayBuffer(20, VECTOR, ACTION, n_envs=2, sequence_length=3)
    assert buffer.buffer_size == 10
    fill(buffer, 25, n_envs=2)
    assert buffer.env_full.all() and buffer.size() == 20
    for env in range(2):
        np.testing.assert_array_equal(buffer.observations[:, env, 1], env)  # streams never mix
        # the ring holds the last 10 of 26 observations, oldest at the write position
        pos = buffer.env_pos[env]
        ordered = np.roll(buffer.observations[:, env, 0], -pos)
        np.testing.assert_array_equal(ordered, np.arange(16, 26))
    np.random.seed(0)
    batch = buffer.sample(200)
    obs = batch.observations.numpy()
    assert np.all(np.diff(obs[:, :, 0], axis=1) == 1), "chunks must be consecutive steps and never span the write head"
    assert np.all(obs[:, :, 1] == obs[:, :1, 1]), "a chunk comes from a single env"
    assert set(np.unique(obs[:, 0, 1])) == {0.0, 1.0}


def test_sampling_too_early_is_a_clear_error():
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=10)
    fill(buffer, 3)
    assert not buffer.can_sample()
    with pytest.raises(ValueError, match="sequences of length 10"):
        buffer.sample(4)


def test_discrete_actions_stored_one_hot():
    buffer = SequenceReplayBuffer(10, VECTOR, spaces.Discrete(3), sequence_length=2)
    buffer.add(np.zeros((1, 2)), np.ones((1, 2)), np.array([2]), np.array([1.0]), np.array([False]), [{}])
    np.testing.assert_array_equal(buffer.actions[:2, 0], [[0, 0, 0], [0, 0, 1]])


def test_dict_observations():
    space = spaces.Dict({"image": spaces.Box(0, 255, (3, 64, 64), np.uint8), "state": VECTOR})
    buffer = SequenceReplayBuffer(10, space, ACTION, sequence_length=2)
    obs = {"image": np.full((1, 3, 64, 64), 7, np.uint8), "state": np.ones((1, 2), np.float32)}
    buffer.add(obs, obs, np.zeros((1, 1)), np.zeros(1), np.array([False]), [{}])
    batch = buffer.sample(3)
    assert batch.observations["image"].dtype == th.uint8 and batch.observations["image"].shape == (3, 2, 3, 64, 64)
    assert batch.observations["state"].shape == (3, 2, 2)


def test_memory_per_pixel_transition():
    image = spaces.Box(0, 255, (3, 64, 64), np.uint8)
    buffer = SequenceReplayBuffer(1000, image, spaces.Box(-1, 1, (6,), np.float32), n_envs=2)
    assert buffer.observations.dtype == np.uint8
    assert not hasattr(buffer, "next_observations")
    per_transition = buffer.nbytes / 1000
    assert per_transition <= 12_500, per_transition
    assert per_transition == 12_319


def test_non_finite_input_is_rejected_and_nothing_stored():
    buffer = SequenceReplayBuffer(10, VECTOR, ACTION, n_envs=2, sequence_length=2)
    fill(buffer, 2, n_envs=2)
    before = (buffer.observations.copy(), buffer.rewards.copy(), buffer.env_pos.copy())
    with pytest.raises(ValueError, match="Non-finite reward from env 1"):
        buffer.add(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 1)), np.array([0.0, np.nan]), np.zeros(2), [{}, {}])
    bad_obs = np.zeros((2, 2), np.float32)
    bad_obs[0, 1] = np.inf
    with pytest.raises(ValueError, match="Non-finite observation from env 0"):
        buffer.add(np.zeros((2, 2)), bad_obs, np.zeros((2, 1)), np.zeros(2), np.zeros(2), [{}, {}])
    np.testing.assert_array_equal(buffer.observations, before[0])
    np.testing.assert_array_equal(buffer.rewards, before[1])
    np.testing.assert_array_equal(buffer.env_pos, before[2])
