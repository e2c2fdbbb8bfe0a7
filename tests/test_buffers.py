"""The sequence replay buffer: alignment, episode starts, per-env streams, ring capacity, memory."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_rssm import DreamerV3
from sb3_rssm.common.buffers import SequenceReplayBuffer
from tests.conftest import tiny_model

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


class SpaceEnv(gym.Env):
    """An env of the given observation space (for VecNormalize's construction; never stepped)."""

    def __init__(self, observation_space):
        self.observation_space, self.action_space = observation_space, ACTION

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def vec_normalize(space, norm_reward=True, **kwargs):
    """A VecNormalize with statistics far from the identity (a mean of 3, a std of 2 or 0.5, rewards over 3)."""
    env = VecNormalize(DummyVecEnv([lambda: SpaceEnv(space)]), norm_reward=norm_reward, **kwargs)
    for rms in env.obs_rms.values() if isinstance(env.obs_rms, dict) else [env.obs_rms]:
        rms.mean = np.full(rms.mean.shape, 3.0)
        rms.var = np.resize([4.0, 0.25], rms.var.shape)
    env.ret_rms.var = np.float64(9.0)
    return env


def paired_samples(buffer, env, batch_size=64, seed=0):
    """The same chunks sampled as stored and through ``env``."""
    np.random.seed(seed)
    raw = buffer.sample(batch_size)
    np.random.seed(seed)
    return raw, buffer.sample(batch_size, env=env)


def assert_rewards_follow_norm_reward(env, raw, normalized):
    """As SB3's ReplayBuffer: ``env.normalize_reward`` of the stored rewards (the identity without norm_reward)."""
    expected = env.normalize_reward(raw.rewards.numpy()).astype(np.float32)
    np.testing.assert_allclose(normalized.rewards.numpy(), expected, rtol=1e-6)
    scaled = not np.allclose(normalized.rewards.numpy(), raw.rewards.numpy())
    assert scaled == env.norm_reward, f"rewards scaled={scaled} under norm_reward={env.norm_reward}"


@pytest.mark.parametrize("norm_reward", [True, False])
def test_vec_normalize_applies_to_sampled_vector_observations_and_rewards(norm_reward):
    """Breaks if ``sample(env=...)`` ignores the VecNormalize, or normalizes rewards whatever ``norm_reward`` says."""
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, n_envs=2, sequence_length=4)
    fill(buffer, 30, episode_length=7, n_envs=2)
    env = vec_normalize(VECTOR, norm_reward=norm_reward)
    raw, normalized = paired_samples(buffer, env)
    np.testing.assert_allclose(normalized.observations.numpy(), env.normalize_obs(raw.observations.numpy()), rtol=1e-6)
    assert not np.allclose(normalized.observations.numpy(), raw.observations.numpy())
    assert normalized.observations.dtype == th.float32
    assert_rewards_follow_norm_reward(env, raw, normalized)
    # everything else is as stored
    for name in ("actions", "is_first", "terminated", "truncated"):
        th.testing.assert_close(getattr(normalized, name), getattr(raw, name))
    # the stored rows are the original observations
    np.testing.assert_array_equal(buffer.observations[: buffer.env_pos[0], 0, 1], 0)


@pytest.mark.parametrize("norm_obs_keys", [None, ["state"]], ids=["default_keys", "state_key"])
def test_vec_normalize_applies_to_the_chosen_keys_of_sampled_dict_observations(norm_obs_keys):
    """
    Dict observations: the keys VecNormalize normalizes (all by default, or ``norm_obs_keys``) come out normalized,
    the others as stored (an image key stays uint8). Breaks as the test above, or if a key is normalized or left
    alone against ``norm_obs_keys``.
    """
    vectors = spaces.Dict({"state": VECTOR, "other": spaces.Box(-10, 10, (3,), np.float32)})
    space = spaces.Dict({**vectors.spaces, "image": spaces.Box(0, 255, (3, 64, 64), np.uint8)})
    env = vec_normalize(space if norm_obs_keys else vectors, norm_obs_keys=norm_obs_keys)
    normalized_keys = norm_obs_keys or ["state", "other"]
    buffer = SequenceReplayBuffer(60, space, ACTION, n_envs=2, sequence_length=3)
    g = np.random.default_rng(0)
    for t in range(20):

        def obs():
            return {
                "state": g.normal(size=(2, 2)).astype(np.float32),
                "other": g.normal(size=(2, 3)).astype(np.float32),
                "image": g.integers(0, 256, (2, 3, 64, 64), dtype=np.uint8),
            }

        done = np.array([t % 6 == 5, False])
        buffer.add(obs(), obs(), g.uniform(-1, 1, (2, 1)), g.normal(size=2), done, [{}, {}])
    raw, normalized = paired_samples(buffer, env, batch_size=16)
    raw_obs = {key: value.numpy() for key, value in raw.observations.items()}
    expected = env.normalize_obs(raw_obs)
    for key in space.spaces:
        actual = normalized.observations[key].numpy()
        if key in normalized_keys:
            np.testing.assert_allclose(actual, expected[key], rtol=1e-6, err_msg=key)
            assert not np.allclose(actual, raw_obs[key]), f"{key} was not normalized"
        else:
            np.testing.assert_array_equal(actual, raw_obs[key], err_msg=key)
    assert normalized.observations["image"].dtype == th.uint8
    assert_rewards_follow_norm_reward(env, raw, normalized)


def test_training_batches_of_a_multi_input_policy_pass_through_its_vec_normalize():
    """
    The algorithm hands its VecNormalize to ``sample``: every training batch of a MultiInputPolicy under
    ``VecNormalize(norm_obs_keys=["vec"], norm_reward=True)`` has the vector key and the rewards normalized with the
    statistics of that moment, the (resized) image as stored. Breaks if training samples with ``env=None``.
    """
    # channel-first frames: channel-last ones under VecNormalize are the bug of the xfail test below
    make_env = lambda: SimpleMultiObsEnv(discrete_actions=False, channel_last=False)  # noqa: E731
    env = VecNormalize(DummyVecEnv([make_env]), norm_obs_keys=["vec"])
    model = tiny_model(DreamerV3, "MultiInputPolicy", env, seed=0)
    buffer, sample, seen = model.replay_buffer, model.replay_buffer.sample, []

    def checked_sample(batch_size, env=None, sequence_length=None):
        state = np.random.get_state()
        raw = sample(batch_size, sequence_length=sequence_length)
        np.random.set_state(state)  # the same chunks again, and training draws what it would have drawn
        batch = sample(batch_size, env=env, sequence_length=sequence_length)
        vec_normalize = model.get_vec_normalize_env()
        expected = vec_normalize.normalize_obs({key: value.numpy() for key, value in raw.observations.items()})
        np.testing.assert_allclose(batch.observations["vec"].numpy(), expected["vec"], rtol=1e-5)
        assert not np.allclose(batch.observations["vec"].numpy(), raw.observations["vec"].numpy())
        th.testing.assert_close(batch.observations["img"], raw.observations["img"])
        np.testing.assert_allclose(batch.rewards.numpy(), vec_normalize.normalize_reward(raw.rewards.numpy()), rtol=1e-5)
        seen.append(batch_size)
        return batch

    buffer.sample = checked_sample
    model.learn(40)
    assert model._n_updates > 0 and len(seen) == model._n_updates


@pytest.mark.parametrize("space", ["box_64x64x3", "dict_20x20x1"])
def test_vec_normalize_over_channel_last_images_collects(space):
    """
    Channel-last frames under ``VecNormalize(norm_obs=False)``: collection stores them channel-first like without it
    (it reads VecNormalize's original observations, from below SB3's VecTransposeImage; SB3's own algorithms store
    them untransposed, SB3 issue #819).
    """
    if space == "box_64x64x3":
        policy, make_env = "CnnPolicy", lambda: FakeImageEnv(5, 64, 64, 3, discrete=False)
    else:
        policy, make_env = "MultiInputPolicy", lambda: SimpleMultiObsEnv(discrete_actions=False)
    env = VecNormalize(DummyVecEnv([make_env]), norm_obs=False)
    model = tiny_model(DreamerV3, policy, env, buffer_size=100, seed=0)
    model.learn(25)
    assert model._n_updates > 0


def fill_with_row_ids(buffer: SequenceReplayBuffer, steps: int, episode_lengths: list):
    """
    Env i's episodes last ``episode_lengths[i]`` steps (None: no end). Every stored row carries a unique id per env
    in its observation ``[id, env]``: step t's next observation is t, an episode's first observation 1000 + t.

    :return: per env, the ids of the rows the stream holds, oldest first (what the ring keeps of all it was given)
    """
    n_envs = len(episode_lengths)
    written = [[] for _ in range(n_envs)]
    starting = np.ones(n_envs, dtype=bool)
    for t in range(steps):
        obs = np.array([[1000 + t, i] for i in range(n_envs)], dtype=np.float32)
        nxt = np.array([[t, i] for i in range(n_envs)], dtype=np.float32)
        done = np.array([length is not None and (t + 1) % length == 0 for length in episode_lengths])
        buffer.add(obs, nxt, np.zeros((n_envs, 1)), np.zeros(n_envs), done, [{} for _ in range(n_envs)])
        for i in range(n_envs):
            written[i] += [1000 + t, t] if starting[i] else [t]
        starting = done
    return [ids[-buffer.buffer_size :] for ids in written]


def valid_chunks(streams: list, length: int) -> set:
    """Every (env, first row id) of ``length`` consecutive rows of one stream, in the order they were written."""
    return {(env, ids[k]) for env, ids in enumerate(streams) for k in range(len(ids) - length + 1)}


def sampled_chunks(batch, streams: list) -> list:
    """
    The (env, first row id) of each sampled chunk, after checking it is consecutive rows of one stream, whose
    ``is_first`` flags mark the episodes' first rows (a chunk may cross episodes).
    """
    obs, is_first = batch.observations.numpy(), batch.is_first.numpy()
    chunks = []
    for chunk, flags in zip(obs, is_first):
        env = int(chunk[0, 1])
        assert np.all(chunk[:, 1] == env), "a chunk mixes env streams"
        ids = streams[env]
        k = ids.index(int(chunk[0, 0]))
        assert list(chunk[:, 0]) == ids[k : k + len(chunk)], f"not consecutive rows of env {env}'s stream: {chunk[:, 0]}"
        np.testing.assert_array_equal(flags, chunk[:, 0] >= 1000)
        chunks.append((env, int(chunk[0, 0])))
    return chunks


def three_streams(length: int):
    """
    12 rows per stream after 10 steps: env 0 (episodes of 3: 14 rows) has wrapped to position 2, env 1 (no episode
    end: 11 rows) has not wrapped, env 2 (episodes of 5: 12 rows) is exactly full. 9 + 8 + 9 = 26 chunks of 4.
    """
    buffer = SequenceReplayBuffer(36, VECTOR, ACTION, n_envs=3, sequence_length=length)
    streams = fill_with_row_ids(buffer, 10, [3, None, 5])
    assert buffer.env_full.tolist() == [True, False, True] and buffer.env_pos.tolist() == [2, 11, 0]
    return buffer, streams


def test_sampling_enumerates_every_valid_chunk_exactly_once(monkeypatch):
    """
    The promise of the docstring: chunks of consecutive rows of one env stream, "uniformly over all valid chunks".
    Feeding the sampler every number it can draw must give every valid chunk once, and nothing else: no chunk across
    the ring's write head or between streams, none left out (off by one at a stream's end), none twice.
    """
    length = 4
    buffer, streams = three_streams(length)
    expected = valid_chunks(streams, length)
    assert len(expected) == 26
    drawn = []

    def every_number(low, high, size):
        drawn.append(high)
        return np.arange(low, high)

    monkeypatch.setattr(np.random, "randint", every_number)
    chunks = sampled_chunks(buffer.sample(26), streams)
    assert drawn == [26], "the sampler draws one number per chunk from as many as there are valid chunks"
    assert len(chunks) == len(set(chunks)) and set(chunks) == expected


def test_sampled_chunks_are_uniform_over_valid_chunks():
    """
    A chi-square test of 26,000 sampled chunks against the uniform distribution over the 26 valid chunks of
    streams of unequal lengths (so "each env equally often, then uniformly within it" fails: env 1's 8 chunks
    would be drawn 1/24 instead of 1/26 of the time each, a statistic near 100), every valid chunk drawn.
    """
    length = 4
    buffer, streams = three_streams(length)
    expected = valid_chunks(streams, length)
    np.random.seed(0)
    chunks = [chunk for _ in range(13) for chunk in sampled_chunks(buffer.sample(2000), streams)]
    counts = {chunk: 0 for chunk in expected}
    for chunk in chunks:
        assert chunk in counts, f"{chunk} is not a valid chunk"
        counts[chunk] += 1
    mean = len(chunks) / len(counts)
    statistic = sum((count - mean) ** 2 / mean for count in counts.values())
    # the chi-square quantile of p = 0.001 for 25 degrees of freedom (scipy.stats.chi2.ppf(0.999, 25) = 52.6)
    assert statistic < 52.6, (statistic, counts)
    assert min(counts.values()) > 0
