"""
The replay context (``replay_buffer_kwargs=dict(replay_context=True)``): each row's latent state stored while acting
and refreshed by training, the stored state of the row before a chunk sampled as its start, the world-model losses
starting from it, and all of it saved and resumed with the buffer.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.buffers import SequenceReplayBuffer
from tests.conftest import tiny_model

VECTOR = spaces.Box(-1e6, 1e6, (2,), np.float32)
ACTION = spaces.Box(-1, 1, (1,), np.float32)


def collect(buffer: SequenceReplayBuffer, steps: int, lengths: tuple[int, ...]) -> None:
    """
    Drive the buffer as the algorithm does (the state on each observation is stored before the step that leaves it),
    with n_envs = len(lengths) envs whose episodes last ``lengths[i]`` steps (even episodes truncated, odd ones
    terminated). Env i's observation value v (unique over the run) is reached in the state (h, s) = (v, -v): a
    stored state names the observation it belongs to.
    """
    n_envs = len(lengths)
    value = np.arange(n_envs, dtype=np.float32) * 1e5
    starting = np.ones(n_envs, dtype=bool)
    episode_step = np.zeros(n_envs, dtype=int)
    episodes = np.zeros(n_envs, dtype=int)
    for _ in range(steps):
        obs = np.stack([value, np.arange(n_envs)], axis=1).astype(np.float32)
        buffer.store_latents(np.repeat(value[:, None], 3, 1), -value[:, None], starting)
        episode_step += 1
        done = episode_step == np.array(lengths)
        value = value + 1
        nxt = np.stack([value, np.arange(n_envs)], axis=1).astype(np.float32)
        infos = [{"TimeLimit.truncated": bool(d and e % 2 == 0)} for d, e in zip(done, episodes)]
        buffer.add(obs, nxt, np.zeros((n_envs, 1)), np.zeros(n_envs), done, infos)
        # after an episode's end the env is reset: a fresh value, whose row the next add() writes as is_first
        value = np.where(done, value + 1000, value)
        episodes += done
        episode_step[done] = 0
        starting = done


@pytest.mark.parametrize("steps", [40, 130])  # the ring of 50 rows per env not yet full, and wrapped more than twice
def test_stored_states_belong_to_their_rows_and_contexts_to_the_row_before(steps):
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, n_envs=2, sequence_length=6, replay_context=True)
    collect(buffer, steps, lengths=(7, 11))
    rows = buffer._rows_per_env()
    valid = buffer.latent_valid
    for env in range(2):
        observed = buffer.observations[: rows[env], env, 0]
        stored = valid[: rows[env], env]
        # every observation the agent filtered has its state; an episode's last observation never has one, and the
        # newest observation not yet
        expected = ~(buffer.terminated | buffer.truncated)[: rows[env], env]
        expected[buffer.env_pos[env] - 1] = False
        np.testing.assert_array_equal(stored, expected)
        np.testing.assert_array_equal(
            buffer.latent_deterministic[: rows[env], env][stored], np.repeat(observed[stored, None], 3, 1)
        )
        np.testing.assert_array_equal(buffer.latent_stochastic[: rows[env], env, 0][stored], -observed[stored])
    np.random.seed(0)
    seen = {"context": 0, "none": 0}
    for _ in range(20):
        batch = buffer.sample(32)
        (chunk_rows, envs), first = buffer.last_sample, batch.observations[:, 0, 0].numpy()
        context = batch.context_deterministic.numpy()
        before = (chunk_rows[:, 0] - 1) % buffer.buffer_size
        oldest = np.where(buffer.env_full[envs[:, 0]], buffer.env_pos[envs[:, 0]], 0)
        has = (chunk_rows[:, 0] != oldest) & valid[before, envs[:, 0]]
        # the row before holds the observation reached one step before (v - 1) unless an episode started between
        np.testing.assert_array_equal(context[has, 0], buffer.observations[before, envs[:, 0], 0][has])
        inside = has & (batch.is_first[:, 0].numpy() == 0)
        np.testing.assert_array_equal(context[inside, 0], first[inside] - 1)
        np.testing.assert_array_equal(batch.context_stochastic.numpy()[has, 0], -context[has, 0])
        assert (context[~has] == 0).all() and (batch.context_stochastic.numpy()[~has] == 0).all()
        seen["context"] += int(has.sum())
        seen["none"] += int((~has).sum())
    assert seen["context"] > 0 and seen["none"] > 0


def test_write_latents_replaces_the_sampled_rows():
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=5, replay_context=True)
    collect(buffer, 30, lengths=(9,))
    buffer.sample(4)
    rows, envs = buffer.last_sample
    buffer.write_latents(rows, envs, np.full((4, 5, 3), 7.0, np.float32), np.full((4, 5, 1), 8.0, np.float32))
    assert (buffer.latent_deterministic[rows, envs] == 7).all() and buffer.latent_valid[rows, envs].all()
    assert (buffer.latent_stochastic[rows, envs] == 8).all()


def test_without_replay_context_the_buffer_keeps_no_states():
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=5)
    collect(buffer, 30, lengths=(9,))
    batch = buffer.sample(4)
    assert buffer.latent_deterministic is None and batch.context_deterministic is None


def test_a_buffer_of_another_model_size_is_refused():
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=5, replay_context=True)
    collect(buffer, 10, lengths=(9,))
    with pytest.raises(ValueError, match="another model size"):
        buffer.store_latents(np.zeros((1, 4)), np.zeros((1, 1)), np.zeros(1, bool))


@pytest.mark.parametrize("algorithm", [DreamerV3, DreamerV1, PlaNet])
def test_the_agent_stores_its_filter_states_and_the_losses_start_from_the_context(algorithm, tmp_path):
    env = gym.make("Pendulum-v1", max_episode_steps=30)
    kwargs = dict(replay_buffer_kwargs=dict(replay_context=True), learning_starts=40, sequence_length=8, batch_size=4)
    model = tiny_model(algorithm, "MlpPolicy", env, seed=0, train_freq=70, gradient_steps=0, buffer_size=1000, **kwargs)
    model.learn(70)  # collection only: every stored state is the filter's
    assert not model.replay_buffer.full
    buffer, rssm = model.replay_buffer, model.policy.world_model.rssm
    rows = buffer.pos
    h = th.as_tensor(buffer.latent_deterministic[:rows, 0])
    s = th.as_tensor(buffer.latent_stochastic[:rows, 0])
    actions = th.as_tensor(buffer.actions[:rows, 0])
    valid = buffer.latent_valid[:rows, 0]
    first = buffer.is_first[:rows, 0]
    # the newest observation is not filtered yet
    assert valid[first].all() and valid.sum() == rows - 1 - (buffer.terminated | buffer.truncated)[:rows, 0].sum() > 30
    with th.no_grad():
        # h_t = f(h_{t-1}, s_{t-1}, a_{t-1}) within an episode, f(initial, 0) at its start: each row has its own state
        previous = rssm.from_belief(h[:-1], s[:-1])
        expected = rssm.deterministic_step(previous, actions[1:])
        start = rssm.deterministic_step(rssm.initial(int(first.sum())), th.zeros(int(first.sum()), actions.shape[1]))
    inside = th.as_tensor(valid[1:] & valid[:-1] & ~first[1:])
    th.testing.assert_close(h[1:][inside], expected[inside], rtol=1e-5, atol=1e-5)
    th.testing.assert_close(h[first], start, rtol=1e-5, atol=1e-5)

    # the world-model loss starts each chunk from its context: the first posterior step's h comes from it
    np.random.seed(3)
    batch = buffer.sample(16)
    assert (batch.context_deterministic.abs().sum(-1) > 0).any()
    with th.no_grad():
        _, _, posterior = model.policy.world_model.loss(batch)
        h0 = rssm.deterministic_step(rssm.context_state(batch), batch.actions[:, 0])
    inner = batch.is_first[:, 0] == 0
    th.testing.assert_close(posterior.deterministic[inner, 0], h0[inner], rtol=1e-5, atol=1e-5)

    # training writes the update's posteriors into the rows it sampled
    model.train(gradient_steps=1, batch_size=4)
    rows, _ = buffer.last_sample
    written = {}  # chunks may overlap: the later one's state stays
    for chunk in range(len(rows)):
        for t, row in enumerate(rows[chunk]):
            written[row] = model._replay_posterior[0][chunk, t].float().numpy()
    for row, state in written.items():
        np.testing.assert_array_equal(buffer.latent_deterministic[row, 0], state)

    # saved and loaded with the buffer
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = tiny_model(algorithm, "MlpPolicy", env, seed=0, **kwargs)
    loaded.load_replay_buffer(tmp_path / "buffer")
    assert loaded.replay_buffer.replay_context
    np.testing.assert_array_equal(loaded.replay_buffer.latent_deterministic, buffer.latent_deterministic)
    np.testing.assert_array_equal(loaded.replay_buffer.latent_valid, buffer.latent_valid)


def test_non_finite_posteriors_are_not_written_back():
    # a skipped (non-finite) update's posteriors would start every later chunk after their rows and spread
    buffer = SequenceReplayBuffer(100, VECTOR, ACTION, sequence_length=5, replay_context=True)
    collect(buffer, 30, lengths=(9,))
    buffer.sample(4)
    rows, envs = buffer.last_sample
    before = buffer.latent_deterministic[rows, envs].copy(), buffer.latent_stochastic[rows, envs].copy()
    deterministic, stochastic = np.full((4, 5, 3), 7.0, np.float32), np.full((4, 5, 1), 8.0, np.float32)
    deterministic[0, 2, 1] = np.nan
    stochastic[3, 4, 0] = np.inf
    buffer.write_latents(rows, envs, deterministic, stochastic)
    bad = np.zeros((4, 5), bool)
    bad[0, 2] = bad[3, 4] = True
    # a row sampled twice keeps the write of its finite copy
    kept = bad & ~np.isin(rows * 10 + envs, (rows * 10 + envs)[~bad])
    assert np.isfinite(buffer.latent_deterministic).all() and np.isfinite(buffer.latent_stochastic).all()
    np.testing.assert_array_equal(buffer.latent_deterministic[rows, envs][kept], before[0][kept])
    np.testing.assert_array_equal(buffer.latent_stochastic[rows, envs][kept], before[1][kept])
    assert (buffer.latent_deterministic[rows, envs][~bad] == 7).all()


def test_the_memory_warning_counts_the_stored_states():
    import os

    buffer = SequenceReplayBuffer(1000, VECTOR, ACTION, sequence_length=5, replay_context=True)
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # a share between the frames' bytes and the frames' and states' bytes: only the states push the buffer over it
    states = 1000 * (4096 + 512) * 4
    buffer.max_memory_share = (buffer.nbytes + states / 2) / machine
    with pytest.warns(UserWarning, match=r"of them the replay context's latent states"):
        buffer.store_latents(np.zeros((1, 4096)), np.zeros((1, 512)), np.ones(1, bool))
