"""
The Stable-Baselines3 contract, for every world-model algorithm: spaces, policies, vec envs, callbacks,
recurrent predict with evaluate_policy, save/load, logging.
"""

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Image, KVWriter, Logger, configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecMonitor, VecNormalize

from sb3_rssm.common.envs import PointMassEnv
from sb3_rssm.common.type_aliases import SequenceSamples
from tests.conftest import ALGORITHMS, tiny_model

pytestmark = pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__)


def image_env(discrete=False):
    return FakeImageEnv(screen_height=64, screen_width=64, n_channels=3, discrete=discrete)


@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
def test_learn_vector_observations(algorithm, discrete):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(discrete=discrete), seed=0)
    model.learn(60)
    assert model.num_timesteps == 60
    assert model._n_updates > 0
    action, _ = model.predict(np.zeros(2, np.float32), deterministic=True)
    assert model.action_space.contains(action if discrete else action.astype(np.float32))


@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
def test_cnn_policy_with_auto_transpose(algorithm, discrete):
    model = tiny_model(algorithm, "CnnPolicy", image_env(discrete), seed=0)
    assert model.observation_space.shape == (3, 64, 64)  # SB3 wrapped the channel-last env in VecTransposeImage
    model.learn(30)
    obs = model.get_env().reset()
    actions, _ = model.predict(obs)
    assert actions.shape == ((1,) if discrete else (1, 5))
    # a raw channel-last observation is transposed by predict too
    raw = image_env().reset(seed=0)[0]
    action, state = model.predict(raw, deterministic=True)
    assert action.shape == (() if discrete else (5,))
    assert state[0].shape == (1, 8)


def test_multi_input_policy(algorithm):
    """
    A Dict of an image and a vector: the model trains on both (stored per key, the image resized to 64x64), every
    key reaches the belief that acting filters, and it evaluates. Breaks if a key is dropped on its way to the
    encoder, or stored under another shape.
    """
    env = SimpleMultiObsEnv(discrete_actions=False)
    model = tiny_model(algorithm, "MultiInputPolicy", env, seed=0)
    model.learn(30)
    assert model.num_timesteps == 30 and model._n_updates > 0
    stored = model.replay_buffer.observations
    assert {key: value.shape[2:] for key, value in stored.items()} == {"img": (1, 64, 64), "vec": (5,)}
    rows = model.replay_buffer.env_pos[0]
    assert stored["img"][:rows].std() > 0 and stored["vec"][:rows].std() > 0
    # changing either key changes the belief (the posterior's distribution) of a first step
    policy = model.policy
    obs = {key: value[None] for key, value in env.reset(seed=0)[0].items()}

    def belief(observation):
        with th.no_grad():
            tensors, _ = policy.obs_to_tensor(observation)
            latent = policy.filter(tensors, policy.initial_state(1), th.ones(1), sample=False)
        return th.cat([x.flatten() for x in latent])

    base = belief(obs)
    for key in obs:
        changed = dict(obs)
        changed[key] = 255 - obs[key] if key == "img" else 1.0 - obs[key]
        assert not th.allclose(belief(changed), base), f"the belief ignores {key!r}"
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
    assert np.isfinite(mean)


def test_policy_aliases_check_observation_kind(algorithm):
    with pytest.raises(ValueError, match="use CnnPolicy"):
        tiny_model(algorithm, "MlpPolicy", image_env())
    with pytest.raises(ValueError, match="use MlpPolicy"):
        tiny_model(algorithm, "CnnPolicy", PointMassEnv())
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        tiny_model(algorithm, "MlpPolicy", SimpleMultiObsEnv())


class SpaceEnv(gym.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize(
    "observation_space, action_space, match",
    [
        (spaces.Box(-1, 1, (2,)), spaces.MultiDiscrete([2, 2]), "Unsupported action space"),
        (spaces.Box(-1, 1, (2,)), spaces.MultiBinary(2), "Unsupported action space"),
        (spaces.Box(-1, 1, (2,)), spaces.Box(-np.inf, np.inf, (2,)), "infinite bounds"),
        (spaces.MultiBinary(3), spaces.Discrete(2), "Unsupported observation space"),
        (spaces.Box(0, 255, (8, 8, 3), np.uint8), spaces.Discrete(2), "8x8 is too small to resize"),
        (spaces.Tuple([spaces.Box(-1, 1, (2,))]), spaces.Discrete(2), "Unsupported observation space"),
    ],
)
def test_unsupported_spaces_fail_at_construction(algorithm, observation_space, action_space, match):
    policy = "CnnPolicy" if len(getattr(observation_space, "shape", None) or ()) == 3 else "MlpPolicy"
    with pytest.raises(ValueError, match=match):
        tiny_model(algorithm, policy, SpaceEnv(observation_space, action_space))


def test_nested_dict_observations_are_not_implemented(algorithm):
    nested = spaces.Dict({"a": spaces.Dict({"b": spaces.Box(-1, 1, (2,))}), "c": spaces.Box(-1, 1, (2,))})
    with pytest.raises(NotImplementedError, match=r"Nested observation spaces are not supported.*'a' is a Dict"):
        tiny_model(algorithm, "MultiInputPolicy", SpaceEnv(nested, spaces.Discrete(2)))


@pytest.mark.parametrize("vec_env_class", [DummyVecEnv, SubprocVecEnv])
def test_two_envs(algorithm, vec_env_class):
    env = make_vec_env(PointMassEnv, n_envs=2, vec_env_cls=vec_env_class, seed=0)
    try:
        model = tiny_model(algorithm, "MlpPolicy", env, seed=0)
        model.learn(80)
        assert model.num_timesteps == 80
        streams = model.replay_buffer.env_pos
        assert np.all(streams == streams[0]) and streams[0] == 42  # 40 steps + a first row for each of 2 episodes
        mean, _ = evaluate_policy(model, env, n_eval_episodes=2)
        assert np.isfinite(mean)
    finally:
        env.close()


def test_vec_monitor_and_frame_stack(algorithm):
    env = VecFrameStack(VecMonitor(DummyVecEnv([image_env])), n_stack=2)
    model = tiny_model(algorithm, "CnnPolicy", env, seed=0)
    assert model.observation_space.shape == (6, 64, 64)
    model.learn(30)
    assert len(model.ep_info_buffer) > 0  # VecMonitor reports episodes


def test_vec_normalize_on_vectors(algorithm):
    env = VecNormalize(DummyVecEnv([PointMassEnv]), norm_obs=True, norm_reward=True)
    model = tiny_model(algorithm, "MlpPolicy", env, seed=0)
    sample, normalizers = model.replay_buffer.sample, []

    def recording_sample(batch_size, env=None, sequence_length=None):
        normalizers.append(env)
        return sample(batch_size, env, sequence_length)

    model.replay_buffer.sample = recording_sample
    model.learn(40)
    # the buffer holds the original observations; they are normalized on sampling (tests/test_buffers.py checks how):
    # every training batch is sampled through the VecNormalize
    assert model.replay_buffer.observations[1, 0, 0] == pytest.approx(
        -0.5 + 0.1 * model.replay_buffer.actions[1, 0, 0], abs=1e-5
    )
    assert len(normalizers) == model._n_updates > 0 and all(normalizer is env for normalizer in normalizers)


def test_vec_normalize_on_images_is_a_clear_error(algorithm):
    env = VecNormalize(DummyVecEnv([image_env]), norm_obs=True)
    with pytest.raises(ValueError, match="norm_obs=False"):
        tiny_model(algorithm, "CnnPolicy", env)


def test_callbacks(algorithm, tmp_path):
    eval_env = PointMassEnv()
    eval_callback = EvalCallback(eval_env, eval_freq=25, n_eval_episodes=1, log_path=str(tmp_path / "eval"), warn=False)
    checkpoint = CheckpointCallback(save_freq=30, save_path=str(tmp_path / "ckpt"), save_replay_buffer=True)
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(60, callback=CallbackList([eval_callback, checkpoint]), progress_bar=True)
    data = np.load(tmp_path / "eval" / "evaluations.npz")
    assert list(data["timesteps"]) == [25, 50]
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert "rl_model_30_steps.zip" in files and "rl_model_replay_buffer_30_steps.pkl" in files
    loaded = algorithm.load(tmp_path / "ckpt" / "rl_model_60_steps.zip")
    loaded.load_replay_buffer(tmp_path / "ckpt" / "rl_model_replay_buffer_60_steps.pkl")
    # callbacks run after the step is stored: the checkpoint at step 60 holds all of it
    assert loaded.num_timesteps == 60
    assert loaded.replay_buffer.size() == model.replay_buffer.size()


def test_callback_returning_false_stops_training(algorithm):
    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 15

    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(100, callback=StopAt())
    assert model.num_timesteps == 15


def test_stop_on_reward_threshold(algorithm):
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1e9)
    eval_callback = EvalCallback(PointMassEnv(), eval_freq=10, n_eval_episodes=1, callback_on_new_best=stop, warn=False)
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(100, callback=eval_callback)
    assert model.num_timesteps == 10


def test_evaluation_does_not_disturb_collection_state(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(25)
    before = tuple(x.clone() for x in model._filter_state)
    evaluate_policy(model, PointMassEnv(), n_eval_episodes=1)
    for a, b in zip(before, model._filter_state):
        assert th.equal(a, b)


def test_collection_filters_every_step_with_the_action_taken(algorithm):
    """During warm-up the belief is advanced with the random action actually taken; episode starts reset it."""
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(max_steps=5), learning_starts=1000, train_freq=1, seed=0)
    model.learn(7)
    buffer = model.replay_buffer
    # last stored row is the transition of step 7, whose action the belief state holds as "previous action"
    last = buffer.env_pos[0] - 1
    np.testing.assert_allclose(model._filter_state[2].numpy(), buffer.actions[last], atol=1e-6)
    assert np.flatnonzero(buffer.is_first[: buffer.env_pos[0], 0]).tolist() == [0, 6]
    assert not model._last_episode_starts[0]
    model.learn(3, reset_num_timesteps=False)  # step 10 ends the second episode
    assert model._last_episode_starts[0]


def test_predict_recurrent_state(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    obs = np.array([[0.1, 0.2], [0.3, -0.1]], np.float32)
    actions, state = model.predict(obs, deterministic=True)
    assert actions.shape == (2, 1)
    assert [x.shape for x in state] == [(2, 8), (2, 4), (2, 1)]
    again, state2 = model.predict(obs, state=state, episode_start=np.array([False, True]), deterministic=True)
    fresh, fresh_state = model.predict(obs, deterministic=True)
    # env 1 was reset: same as a fresh start; env 0 continued from its state
    np.testing.assert_allclose(again[1], fresh[1])
    np.testing.assert_allclose(state2[0][1], fresh_state[0][1])
    assert not np.allclose(state2[0][0], fresh_state[0][0])
    single, single_state = model.predict(obs[0], deterministic=True)
    assert single.shape == (1,) and single_state[0].shape == (1, 8)
    with pytest.raises(ValueError, match="state must be"):
        model.predict(obs, state=(state[0],), deterministic=True)


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "sampled"])
def test_predict_recurrent_state_with_discrete_actions(algorithm, deterministic):
    """
    Discrete actions: the state carries the belief and the one-hot of the action returned; an env whose
    ``episode_start`` is set acts from then on exactly as from a fresh state (same actions, same states), while an
    env that goes on carries its history. Sampled actions (which vary, where an untrained model's modes may not)
    draw the same numbers for an env at the same step, the random numbers being seeded per step and drawn per env.
    Breaks if predict drops the state, ignores ``episode_start``, or carries another action than the one it
    returned (e.g. the index instead of its one-hot).
    """
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(discrete=True), seed=0)
    g = np.random.default_rng(0)
    observations = g.uniform(-1, 1, (6, 2, 2)).astype(np.float32)  # 6 steps of 2 envs
    restart = 3  # env 1 starts a new episode at step 3

    def run(steps, starts):
        actions, states, state = [], [], None
        for step, episode_start in zip(steps, starts):
            th.manual_seed(step)  # PlaNet's planner draws candidates: the same numbers at the same step
            action, state = model.predict(observations[step], state, episode_start, deterministic)
            assert action.shape == (2,) and action.dtype.kind == "i" and all(model.action_space.contains(a) for a in action)
            assert state[2].shape == (2, 3)
            np.testing.assert_array_equal(state[2], np.eye(3)[action])  # the action taken, as the model's one-hot
            actions.append(action)
            states.append(state)
        return np.array(actions), states

    starts = [np.ones(2, bool)] + [np.array([False, step == restart]) for step in range(1, 6)]
    actions, states = run(range(6), starts)
    if not deterministic:
        assert len(np.unique(actions)) > 1
    fresh_actions, fresh_states = run(range(restart, 6), [np.ones(2, bool)] + [np.zeros(2, bool)] * 2)
    # env 1 from its new episode on: the actions and states of a fresh start on the same observations
    np.testing.assert_array_equal(actions[restart:, 1], fresh_actions[:, 1])
    for carried, fresh in zip(states[restart:], fresh_states):
        for x, y in zip(carried, fresh):
            np.testing.assert_allclose(x[1], y[1], rtol=1e-5, atol=1e-6)
    # env 0 went on: its belief holds the steps before (a fresh start on the same observations differs)
    for carried, fresh in zip(states[restart:], fresh_states):
        assert not np.allclose(carried[0][0], fresh[0][0])


def test_save_load_round_trip(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(40)
    obs = np.array([[0.1, 0.2]], np.float32)
    _, state = model.predict(obs, deterministic=True)
    expected, _ = model.predict(obs, state=state, deterministic=True)
    model.save(tmp_path / "model.zip")
    loaded = algorithm.load(tmp_path / "model.zip")  # no env needed
    actual, _ = loaded.predict(obs, state=state, deterministic=True)
    np.testing.assert_array_equal(actual, expected)
    for name in model.policy.optimizer_names:
        saved, restored = getattr(model.policy, name).state_dict(), getattr(loaded.policy, name).state_dict()
        assert saved["param_groups"] == restored["param_groups"]
        for key, value in saved["state"].items():
            for field, tensor in value.items():
                assert th.equal(tensor, restored["state"][key][field])
    params = model.get_parameters()
    assert set(params) == {"policy", *(f"policy.{n}" for n in model.policy.optimizer_names)}
    fresh = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=1)
    fresh.set_parameters(params)
    np.testing.assert_array_equal(fresh.predict(obs, state=state, deterministic=True)[0], expected)
    loaded.set_env(PointMassEnv())
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.num_timesteps == 60


def test_set_env_checks_spaces(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    with pytest.raises(ValueError):
        model.set_env(PointMassEnv(discrete=True))


def test_logger_records_training_metrics(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(max_steps=10), seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(60, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    # the world model's terms: log-likelihoods of the Gaussian world model, losses of DreamerV3's
    term = "loss" if algorithm.__name__ == "DreamerV3" else "log_lik"
    expected = {
        "train/model_loss",
        f"train/reward_{term}",
        "train/kl",
        "train/model_grad_norm",
        "time/updates_per_s",
        f"train/reconstruction_{term}/observation",
        "train/learning_rate",
    }
    expected |= {
        "DreamerV1": {
            "train/actor_loss",
            "train/value_loss",
            "train/actor_entropy",
            "train/imagined_return",
            "train/actor_grad_norm",
            "train/value_grad_norm",
        },
        "DreamerV3": {
            "train/continuation_loss",
            "train/actor_loss",
            "train/critic_loss",
            "train/replay_critic_loss",
            "train/actor_entropy",
            "train/imagined_return",
            "train/return_scale",
            "train/actor_grad_norm",
            "train/critic_grad_norm",
            "train/actor_learning_rate",
            "train/critic_learning_rate",
        },
    }.get(algorithm.__name__, set())
    assert expected <= set(header), expected - set(header)


class ImageCapture(KVWriter):
    """A logger output that keeps the Image records it is given, with the step of each."""

    def __init__(self):
        self.images = {}
        self.steps = []

    def write(self, key_values, key_excluded, step=0):
        images = {k: v for k, v in key_values.items() if isinstance(v, Image)}
        self.images.update(images)
        self.steps += [step] * len(images)


def flash_batch(n, length, action_size, seed):
    """Sequences of 64x64 frames that are all red or all green at random, one episode each, with zero actions."""
    g = th.Generator().manual_seed(seed)
    colours = th.nn.functional.one_hot(th.randint(0, 2, (n, length), generator=g), 3).to(th.uint8) * 255
    frames = colours[..., None, None].expand(n, length, 3, 64, 64).contiguous()
    is_first = th.zeros(n, length)
    is_first[:, 0] = 1
    zeros = th.zeros(n, length)
    return SequenceSamples(frames, th.zeros(n, length, action_size), zeros, is_first, zeros, zeros)


# fitting the flash frames of the test below: world-model learning rate, updates and model sizes. The tiny models (conv
# depth 2, DreamerV3's 2 latents of 2 classes) mostly stay at the mean frame. With these, 7 of 8 model seeds tried fit
# (the eighth stays at the mean frame too); seed 0 reaches a context error of 0.003 (DreamerV1), 0.005 (PlaNet) and
# 0.0 (DreamerV3) against 0.17, 0.13 and 0.11 for the open-loop frames, and 0.33 for a blank one.
OPEN_LOOP_FIT = {
    "DreamerV1": (3e-3, 100, dict(cnn_depth=8, kl_scale=0.1)),
    "PlaNet": (3e-3, 100, dict(cnn_depth=8, kl_scale=0.1)),
    "DreamerV3": (1e-2, 60, dict(stochastic_size=4, classes=4)),
}


def test_open_loop_prediction_image_logged(algorithm):
    """
    The logged strips (per sequence: real frames, the model's frames, their difference) mean what they say: a model
    fitted to frames that are all red or all green at random reproduces the 5 context frames of a new batch (from the
    posterior, which sees them) far better than the open-loop ones (from the prior, which cannot know their colours)
    and than a blank frame. Breaks if the context is reconstructed from the prior or from the wrong step, or the rows
    show other sequences or are out of order.
    """
    capture = ImageCapture()
    model = tiny_model(algorithm, "CnnPolicy", image_env(), log_prediction_interval=1, sequence_length=8, seed=0)
    model.set_logger(Logger(None, [capture]))
    model.learn(40, log_interval=1)  # trains at step 30, dumps the logs at the episode end at step 40
    image = capture.images["train/open_loop"]
    # rows: real, predicted, error for 2 sequences of 64 pixels; columns: 8 steps of 64 pixels
    assert image.image.shape == (3 * 2 * 64, 8 * 64, 3) and image.dataformats == "HWC"
    assert 0 <= image.image.min() and image.image.max() <= 1

    learning_rate, updates, sizes = OPEN_LOOP_FIT[algorithm.__name__]
    model = tiny_model(algorithm, "CnnPolicy", image_env(), policy_kwargs=sizes, seed=0)
    model.set_logger(Logger(None, [capture]))
    world_model, action_size = model.policy.world_model, model.policy.model_action_size
    th.manual_seed(0)
    fitted, new = flash_batch(4, 6, action_size, seed=1), flash_batch(4, 8, action_size, seed=2)
    optimizer = th.optim.Adam(world_model.parameters(), lr=learning_rate)
    model.policy.set_training_mode(True)
    for _ in range(updates):
        loss, _, _ = world_model.loss(fitted)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.policy.set_training_mode(False)
    model._log_open_loop(new)
    model.logger.dump(0)
    strips = capture.images["train/open_loop"].image.reshape(4, 3, 64, 8, 64, 3)  # (sequence, row, H, time, W, C)
    real, predicted, error = strips[:, 0], strips[:, 1], strips[:, 2]
    np.testing.assert_array_equal(real, new.observations.permute(0, 3, 1, 4, 2).numpy() / 255.0)
    np.testing.assert_allclose(error, (predicted - real + 1.0) / 2.0, atol=1e-6)
    per_step = ((predicted - real) ** 2).mean(axis=(0, 1, 3, 4))
    context, open_loop, blank = per_step[:5].max(), per_step[5:].mean(), (real**2).mean()
    assert context < 0.3 * open_loop and context < 0.3 * blank, (per_step, blank)


def test_open_loop_prediction_image_logged_at_the_first_training_phase(algorithm):
    capture = ImageCapture()
    # the default interval (1000 updates) is far away: only the first phase logs one
    model = tiny_model(algorithm, "CnnPolicy", image_env(), gradient_steps=2, sequence_length=4, seed=0)
    model.set_logger(Logger(None, [capture]))
    model.learn(40, log_interval=1)  # phases at steps 30 and 40, logs dumped at the episode end at step 40
    assert model._n_updates == 4
    assert list(capture.images) == ["train/open_loop"] and capture.steps == [40]
    assert "train/open_loop" not in model.logger.name_to_value  # the second phase (not yet dumped) logged none
    assert capture.images["train/open_loop"].image.shape == (3 * 2 * 64, 4 * 64, 3)


def test_load_replay_buffer_checks(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(20)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    other = tiny_model(algorithm, "MlpPolicy", PointMassEnv(discrete=True), seed=0)
    with pytest.raises(ValueError, match="action space"):
        other.load_replay_buffer(tmp_path / "buffer.pkl")
    data = (tmp_path / "buffer.pkl").read_bytes()
    (tmp_path / "truncated.pkl").write_bytes(data[: len(data) // 2])
    before = model.replay_buffer
    with pytest.raises(ValueError, match="truncated"):
        model.load_replay_buffer(tmp_path / "truncated.pkl")
    assert model.replay_buffer is before  # a failed load leaves the buffer in place
    model.load_replay_buffer(tmp_path / "buffer.pkl")
    np.testing.assert_array_equal(model.replay_buffer.observations, before.observations)
    # a buffer with another storage layout (here: an env stream lost) is refused
    broken = model.replay_buffer
    broken.is_first = broken.is_first[:, :0]
    model.save_replay_buffer(tmp_path / "broken.pkl")
    with pytest.raises(ValueError, match="sequence layout"):
        other_seed = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=1)
        other_seed.load_replay_buffer(tmp_path / "broken.pkl")
    # the sequence length is the loading model's: storage is per step
    longer = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, sequence_length=6)
    longer.load_replay_buffer(tmp_path / "buffer.pkl")
    assert longer.replay_buffer.sample(2).rewards.shape == (2, 6)


def test_same_seed_same_updates_different_seed_differs(algorithm):
    def parameters_after_training(seed):
        model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=seed)
        model.learn(40)
        assert model._n_updates > 0
        return th.cat([p.detach().flatten() for p in model.policy.parameters()])

    first, again, other = parameters_after_training(0), parameters_after_training(0), parameters_after_training(1)
    assert th.equal(first, again)
    assert not th.allclose(first, other)


def test_non_finite_update_is_skipped_then_stops(algorithm):
    from sb3_rssm.common.world_model_algorithm import NonFiniteUpdateError

    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), max_nonfinite_updates=3, seed=0)
    model.learn(30)
    before = [p.detach().clone() for p in model.policy.world_model.parameters()]
    model.replay_buffer.rewards[:] = np.nan  # the world-model loss becomes NaN; Dreamer's actor and value stay finite
    model.set_logger(Logger(None, []))
    model.train(gradient_steps=2, batch_size=2)
    assert model.logger.name_to_value["train/skipped_updates"] == 2
    for a, b in zip(before, model.policy.world_model.parameters()):
        assert th.equal(a, b), "a non-finite update must not touch the parameters"
    with pytest.raises(NonFiniteUpdateError, match="world model loss at update"):
        model.train(gradient_steps=2, batch_size=2)


def learn_mixed(algorithm, precision, dtype):
    """A tiny model trained a little with ``mixed_precision=precision``: forward in ``dtype``, parameters float32."""
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, mixed_precision=precision)
    dtypes = set()
    model.policy.world_model.reward_head.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    model.learn(40)
    assert model._n_updates > 0 and dtype in dtypes
    assert all(th.isfinite(p).all() and p.dtype == th.float32 for p in model.policy.parameters())
    return model


def test_bf16_mixed_precision_trains_in_bfloat16_close_to_float32(algorithm):
    model = learn_mixed(algorithm, "bf16", th.bfloat16)
    batch = model.replay_buffer.sample(2)
    with th.no_grad():
        full, _, _ = model.policy.world_model.loss(batch)
        with model._autocast():
            mixed, _, _ = model.policy.world_model.loss(batch)
    assert mixed.dtype == th.float32
    assert abs(mixed.item() - full.item()) < 0.05 * abs(full.item())


def test_fp16_mixed_precision_scales_the_loss_and_skips_overflows(algorithm, tmp_path):
    model = learn_mixed(algorithm, "fp16", th.float16)
    assert model.logger.name_to_value["train/grad_scale"] > 1
    # a scale so large that the float16 gradients overflow: the update is skipped and the scale lowered,
    # without counting as a non-finite update
    model.grad_scaler.update(new_scale=2.0**100)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.set_logger(Logger(None, []))
    model.train(gradient_steps=1, batch_size=2)
    values = model.logger.name_to_value
    assert values["train/overflow_skips"] == 1 and values["train/skipped_updates"] == 0
    assert model.grad_scaler.get_scale() == 2.0**99
    assert all(th.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    model.train(gradient_steps=1, batch_size=2)  # the halved scale still overflows: a second skip, not an error
    assert model._nonfinite_in_a_row == 0
    # the scale is saved with the model
    model.grad_scaler.update(new_scale=1024.0)
    model.save(tmp_path / "model.zip")
    loaded = algorithm.load(tmp_path / "model.zip", env=PointMassEnv())
    assert loaded.mixed_precision == "fp16" and loaded.grad_scaler.get_scale() == 1024.0


def test_mixed_precision_choices(algorithm):
    with pytest.raises(ValueError, match="'fp16'"):
        tiny_model(algorithm, "MlpPolicy", PointMassEnv(), mixed_precision="fp8")


def short_buffer_warnings(record):
    return [w for w in record if "Training is skipped until the replay buffer holds" in str(w.message)]


def test_training_waits_for_a_full_sequence_when_learning_starts_is_smaller(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), learning_starts=2, sequence_length=8, train_freq=3, seed=0)
    with pytest.warns(UserWarning) as record:
        model.learn(12)
    assert len(short_buffer_warnings(record)) == 1  # once, although the phases at steps 3 and 6 were both skipped
    assert model._n_updates == 2  # the phases at steps 9 and 12 trained (the stream then holds 10 and 13 rows)


def test_training_waits_for_a_full_sequence_after_load_and_set_env(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), sequence_length=8, train_freq=5, seed=0)
    model.learn(30)
    model.save(tmp_path / "model.zip")
    for resumed in (algorithm.load(tmp_path / "model.zip", env=PointMassEnv()), model):
        if resumed is model:
            model.set_env(PointMassEnv())
            model.replay_buffer.reset()  # the empty buffer a fresh process starts with
        updates = resumed._n_updates
        with pytest.warns(UserWarning) as record:
            resumed.learn(10, reset_num_timesteps=False)  # learning_starts passed; 6 rows at step 35, 11 at step 40
        assert len(short_buffer_warnings(record)) == 1
        assert resumed._n_updates == updates + 1


def test_policy_saved_alone_loads_and_predicts_the_same(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(30)
    model.policy.save(tmp_path / "policy.pth")
    loaded = algorithm.policy_aliases["MlpPolicy"].load(tmp_path / "policy.pth")
    assert type(loaded) is type(model.policy)
    obs = np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32)
    starts = np.ones(2, dtype=bool)
    expected, expected_state = model.predict(obs, episode_start=starts, deterministic=True)
    actual, state = loaded.predict(obs, episode_start=starts, deterministic=True)
    np.testing.assert_array_equal(actual, expected)
    # and the next step, from the carried state
    expected, _ = model.predict(obs, state=expected_state, episode_start=~starts, deterministic=True)
    actual, _ = loaded.predict(obs, state=state, episode_start=~starts, deterministic=True)
    np.testing.assert_array_equal(actual, expected)


def test_tensorboard_runs_are_named_after_the_algorithm(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), tensorboard_log=str(tmp_path), seed=0)
    model.learn(5)
    model.learn(5, tb_log_name="mine")
    assert sorted(os.listdir(tmp_path)) == sorted([f"{algorithm.__name__}_1", "mine_1"])


def test_predict_refuses_the_gym_reset_tuple_with_sb3s_error(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    with pytest.raises(ValueError, match="mixing Gym API with SB3 VecEnv API"):
        model.predict(PointMassEnv().reset(seed=0))


def stateless_warnings(record):
    return [w for w in record if "predict() was called again without state=" in str(w.message)]


def test_predict_without_state_twice_in_a_row_warns_once(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    obs = np.array([0.1, 0.2], np.float32)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first, _ = model.predict(obs, deterministic=True)
        assert not stateless_warnings(record)  # one call alone is fine
        second, _ = model.predict(obs, deterministic=True)
        assert len(stateless_warnings(record)) == 1
        assert "state=state, episode_start=episode_start" in str(stateless_warnings(record)[0].message)
        model.predict(obs, deterministic=True)
        model.predict(obs, state=None, episode_start=np.ones(1, bool), deterministic=True)
        model.predict(obs, deterministic=True)
        model.predict(obs, deterministic=True)
    assert len(stateless_warnings(record)) == 1  # once per policy
    np.testing.assert_array_equal(first, second)  # the warning changes nothing in what predict returns


def test_evaluate_policy_and_eval_callback_pass_the_state_without_warning(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(max_steps=5), seed=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        evaluate_policy(model, PointMassEnv(max_steps=5), n_eval_episodes=2)
        model.learn(10, callback=EvalCallback(PointMassEnv(max_steps=5), eval_freq=5, n_eval_episodes=2, warn=False))
    assert not stateless_warnings(record)
    assert not model.policy._warned_stateless_predict


def test_cuda_without_a_gpu_warns_naming_the_device_used(algorithm, monkeypatch, tmp_path):
    monkeypatch.setattr(th.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match=r"device='cuda' was asked for, but CUDA is not available.* runs on cpu instead"):
        model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), device="cuda", seed=0)
    assert model.device.type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)  # "auto": no warning
        model.save(tmp_path / "model.zip")
    with pytest.warns(UserWarning, match="runs on cpu instead"):
        algorithm.load(tmp_path / "model.zip", device=th.device("cuda"))


def test_missing_files_are_reported_as_given(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0)
    with pytest.raises(FileNotFoundError) as error:
        algorithm.load(tmp_path / "missing.zip")
    message = str(error.value)
    assert f"no file '{tmp_path / 'missing.zip'}' (also tried: '{tmp_path / 'missing.zip.zip'}')" in message
    with pytest.raises(FileNotFoundError) as error:
        model.load_replay_buffer(tmp_path / "buffer.pkl")
    assert f"replay buffer: there is no file '{tmp_path / 'buffer.pkl'}' (also tried" in str(error.value)


def test_unknown_policy_name_lists_the_valid_ones(algorithm):
    with pytest.raises(ValueError, match=r"Unknown policy 'MLPPolicy' .*\. Did you mean 'MlpPolicy'\?") as error:
        algorithm("MLPPolicy", PointMassEnv())
    assert "Use one of 'MlpPolicy', 'CnnPolicy', 'MultiInputPolicy'" in str(error.value)


def test_unknown_policy_kwargs_key_names_the_closest_valid_ones(algorithm):
    with pytest.raises(TypeError, match=r"Unknown policy_kwargs key .*'stoch_size' \(did you mean 'stochastic_size'\?\)"):
        tiny_model(algorithm, "MlpPolicy", PointMassEnv(), policy_kwargs=dict(stoch_size=4))
    own = "num_candidates" if algorithm.__name__ == "PlaNet" else "actor_units"  # a subclass's own parameter
    with pytest.raises(TypeError, match=rf"'{own[:-1]}' \(did you mean '{own}'"):
        tiny_model(algorithm, "MlpPolicy", PointMassEnv(), policy_kwargs={own[:-1]: 8})


class MatrixActionEnv(PointMassEnv):
    """PointMassEnv with a (2, 2) Box action: the point moves by its mean entry."""

    def __init__(self, max_steps=10):
        super().__init__(max_steps=max_steps)
        self.action_space = spaces.Box(-1.0, 1.0, (2, 2), np.float32)

    def step(self, action):
        assert np.shape(action) == (2, 2), f"the env got an action of shape {np.shape(action)}"
        return super().step(np.mean(action))


def test_multi_dimensional_box_actions(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", MatrixActionEnv(), seed=0)
    model.learn(30)
    assert model._n_updates > 0
    assert model.replay_buffer.actions.shape[-1] == 4  # the flat model action
    obs = np.array([0.1, 0.2], np.float32)
    action, state = model.predict(obs, episode_start=np.ones(1, bool), deterministic=True)
    assert action.shape == (2, 2) and model.action_space.contains(action.astype(np.float32))
    assert state[2].shape == (1, 4)
    actions, _ = model.predict(np.stack([obs, obs]), episode_start=np.ones(2, bool), deterministic=True)
    assert actions.shape == (2, 2, 2)
    mean, _ = evaluate_policy(model, MatrixActionEnv(), n_eval_episodes=2)
    assert np.isfinite(mean)


def sized_image_env(height, width, channels=3, channel_first=False):
    return FakeImageEnv(5, height, width, channels, discrete=False, channel_first=channel_first)


@pytest.mark.parametrize(
    "height, width, channels, channel_first",
    [(84, 84, 3, False), (96, 96, 3, True), (40, 40, 3, False), (84, 84, 1, False), (210, 160, 1, True)],
    ids=["84x84x3", "3x96x96", "40x40x3", "84x84x1", "1x210x160"],
)
def test_images_of_other_sizes_are_resized_to_64x64(algorithm, height, width, channels, channel_first):
    make_env = lambda: sized_image_env(height, width, channels, channel_first)  # noqa: E731
    model = tiny_model(algorithm, "CnnPolicy", make_env(), seed=0)
    assert model.observation_space.shape == (channels, 64, 64)
    model.learn(30)
    assert model._n_updates > 0
    assert model.replay_buffer.observations.shape[2:] == (channels, 64, 64)
    # predict takes the env's own frames, one or a batch, and resizes them
    frame = make_env().reset(seed=0)[0]
    action, state = model.predict(frame, episode_start=np.ones(1, bool), deterministic=True)
    assert action.shape == (5,) and state[0].shape == (1, 8)
    resized = model.get_env().resize(frame[None])  # what collection stores
    assert resized.shape == (1, channels, 64, 64)
    np.testing.assert_array_equal(model.predict(resized, episode_start=np.ones(1, bool), deterministic=True)[0][0], action)
    actions, _ = model.predict(np.stack([frame, frame]), episode_start=np.ones(2, bool), deterministic=True)
    assert actions.shape == (2, 5)
    mean, _ = evaluate_policy(model, make_env(), n_eval_episodes=1)  # an eval env without the model's wrappers
    assert np.isfinite(mean)


def test_resized_images_are_the_frames_scaled_down(algorithm):
    from sb3_rssm.common.resize import VecResizeImage

    model = tiny_model(algorithm, "CnnPolicy", sized_image_env(84, 84), seed=0)
    wrapper = model.get_env()
    assert isinstance(wrapper, VecResizeImage) and wrapper.device == model.device
    # a frame of flat colour stays that colour; a left/right split stays split in the middle
    frame = np.zeros((1, 3, 84, 84), np.uint8)
    frame[..., :42] = 200
    frame[:, 1] = 17
    resized = wrapper.resize(frame)
    assert resized.shape == (1, 3, 64, 64) and resized.dtype == np.uint8
    assert np.all(resized[:, 0, :, :31] == 200) and np.all(resized[:, 0, :, 33:] == 0) and np.all(resized[:, 1] == 17)
    # channel-last frames, as predict gets them from an unwrapped env, resize the same
    np.testing.assert_array_equal(model.policy.image_resizer(frame.transpose(0, 2, 3, 1), model.device), resized)
    # terminal observations in infos are resized as well: the buffer stores them
    model.learn(10)
    assert model.replay_buffer.terminated.sum() + model.replay_buffer.truncated.sum() == 1


def test_resized_images_with_save_load_set_env_and_eval_callback(algorithm, tmp_path):
    make_env = lambda: sized_image_env(84, 84)  # noqa: E731
    eval_callback = EvalCallback(make_env(), eval_freq=15, n_eval_episodes=1, log_path=str(tmp_path), warn=False)
    model = tiny_model(algorithm, "CnnPolicy", make_env(), seed=0)
    model.learn(30, callback=eval_callback)
    assert list(np.load(tmp_path / "evaluations.npz")["timesteps"]) == [15, 30]
    model.save(tmp_path / "model.zip")
    loaded = algorithm.load(tmp_path / "model.zip", env=make_env())
    frame = make_env().reset(seed=0)[0]
    starts = np.ones(1, bool)
    np.testing.assert_array_equal(
        loaded.predict(frame, episode_start=starts, deterministic=True)[0],
        model.predict(frame, episode_start=starts, deterministic=True)[0],
    )
    loaded.learn(10, reset_num_timesteps=False)
    model.set_env(make_env())
    model.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps == 40


def test_resized_images_under_vec_normalize_and_in_dicts(algorithm):
    env = VecNormalize(DummyVecEnv([lambda: sized_image_env(84, 84)]), norm_obs=False, norm_reward=True)
    model = tiny_model(algorithm, "CnnPolicy", env, seed=0)
    model.learn(30)  # collection stores VecNormalize's original frames, resized
    assert model._n_updates > 0 and model.get_vec_normalize_env() is env
    dict_space = spaces.Dict({"image": spaces.Box(0, 255, (48, 48, 1), np.uint8), "vector": spaces.Box(-1, 1, (3,))})
    model = tiny_model(algorithm, "MultiInputPolicy", SpaceEnv(dict_space, spaces.Discrete(2)), seed=0)
    assert model.observation_space["image"].shape == (1, 64, 64)
    model.learn(30)
    action, _ = model.predict(dict_space.sample(), episode_start=np.ones(1, bool))
    assert model.action_space.contains(action)
