"""
CI-sized learning. The point-mass task (start 0, 30 steps of at most 0.1, reward -|position - target|) draws its
target per episode from -0.5 and +0.5, so an agent must observe it to know which way to go: the optimum is -1.0
(five steps towards the target), and no policy blind to the observation can do better than -15 in expectation
(for any position x, |x - 0.5| + |x + 0.5| >= 1, so each step costs at least 0.5 on average over the two targets),
nor in an evaluation of one episode per target if it acts deterministically: it then takes the same path in both.
A random policy returns -16.5 +/- 5.8 (100 episodes; the last test here computes these figures). A tiny agent
must return more than -8 (the mean of one deterministic episode per target) in three evaluations in a row (every
100 steps, through SB3's ``EvalCallback`` on envs of its own) within a couple of thousand steps; training stops
there, so a test takes as long as its agent needs to learn.
``benchmarks/break_tests.py`` runs these tests with their agents broken on purpose: each must fail.
"""

from typing import Callable, Optional

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.envs import ColourCueEnv, PointMassEnv

THRESHOLD = -8.0
# how closely a point-mass agent's predicted rewards of its own episodes must follow the true ones (DreamerV1 Box)
REWARD_CORRELATION = 0.5
START, TARGETS = 0.0, (-0.5, 0.5)
WORLD_MODEL = dict(stochastic_size=8, deterministic_size=32, hidden_size=32, mlp_units=32, reward_units=32, free_bits=1.0)
COMMON = dict(learning_starts=300, batch_size=16, sequence_length=15, train_freq=30, gradient_steps=20, seed=0)
# learning tests run several minutes on a slow 2-core machine: past pytest-timeout's default, which is there for hangs
pytestmark = pytest.mark.timeout(900)


class StopWhenLearned(BaseCallback):
    """
    Called by ``EvalCallback`` after each evaluation: keeps the returns and stops training once ``times``
    evaluations in a row returned more than ``threshold``.
    """

    def __init__(self, threshold: float, times: int = 3) -> None:
        super().__init__()
        self.threshold = threshold
        self.times = times
        self.returns: list[float] = []

    @property
    def learned(self) -> bool:
        recent = self.returns[-self.times :]
        return len(recent) == self.times and min(recent) > self.threshold

    def _on_step(self) -> bool:
        self.returns.append(float(self.parent.last_mean_reward))
        return not self.learned


def assert_learns(model: BaseAlgorithm, total_timesteps: int, eval_env: VecEnv, threshold: float, episodes: int) -> None:
    """
    Train ``model`` with an evaluation on ``eval_env`` every 100 steps, until three in a row return more than
    ``threshold`` (:class:`StopWhenLearned`); fail, with the evaluations, if that has not happened in ``total_timesteps``.
    """
    stop = StopWhenLearned(threshold)
    evaluations = EvalCallback(eval_env, eval_freq=100, n_eval_episodes=episodes, callback_after_eval=stop, verbose=0)
    model.learn(total_timesteps, callback=evaluations)
    returns = ", ".join(f"{value:.1f}" for value in stop.returns)
    assert stop.learned, f"{type(model).__name__} did not learn in {total_timesteps} steps; evaluations every 100: {returns}"


def point_mass(discrete: bool = False, mirrored: bool = False) -> PointMassEnv:
    """The training env of the point-mass tests: a target drawn per episode (see the module docstring)."""
    return PointMassEnv(discrete=discrete, start=START, targets=TARGETS, mirrored=mirrored)


def point_mass_eval_env(discrete: bool = False, mirrored: bool = False) -> VecEnv:
    """One env per target: an evaluation of ``len(TARGETS)`` episodes runs one episode with each."""
    return DummyVecEnv(
        [lambda t=t: Monitor(PointMassEnv(discrete=discrete, start=START, target=t, mirrored=mirrored)) for t in TARGETS]
    )


def assert_learns_point_mass(model: BaseAlgorithm, total_timesteps: int, discrete: bool = False) -> None:
    """Train ``model`` until it has learned the point-mass task (see the module docstring), at most ``total_timesteps``."""
    assert_learns(model, total_timesteps, point_mass_eval_env(discrete), THRESHOLD, len(TARGETS))


def test_dreamer_learns_point_mass():
    # The returns alone do not catch every break here: without its reward head this agent passed them once, its
    # policy drifting towards the target for a while by chance (benchmarks/break_tests.py). So the test also asks
    # that the agent's belief predicts the rewards of its own episodes, as a working world model does. A version that
    # learns the task and its mirror image side by side (no reward-blind agent can pass both at once) fails with the
    # working agent too (its mirror-way agent never learns; docs/benchmarks.md, "The CI learning tests").
    model = DreamerV1(
        "MlpPolicy",
        point_mass(),
        learning_rate=1e-3,
        actor_learning_rate=3e-4,
        value_learning_rate=3e-4,
        imagination_horizon=10,
        policy_kwargs=dict(**WORLD_MODEL, actor_units=32, actor_layers=2, value_units=32, value_layers=2, actor_init_std=1.0),
        **COMMON,
    )
    assert_learns_point_mass(model, 2500)
    own_episodes = DummyVecEnv([lambda: Monitor(point_mass())])
    predicted, true = reward_predictions_through_predict(model, env=own_episodes, own_actions=True)
    # correlation, not explained variance: a learned policy's rewards vary little, and a small bias in the
    # prediction then outweighs their variance
    correlation = float(np.corrcoef(predicted, true)[0, 1]) if predicted.std() > 0 else 0.0
    measured = f"predicted and true rewards of its own episodes correlate {correlation:.2f}"
    print(measured)  # benchmarks/break_tests.py --breaks none shows it for a working agent
    assert correlation > REWARD_CORRELATION, measured


def test_planet_learns_point_mass():
    model = PlaNet(
        "MlpPolicy",
        point_mass(),
        learning_rate=1e-3,
        policy_kwargs=dict(**WORLD_MODEL, planning_horizon=10, num_candidates=100, num_elites=10, cem_iterations=5),
        **COMMON,
    )
    assert_learns_point_mass(model, 1500)


def test_dreamer_learns_discrete_point_mass():
    discrete = True
    model = DreamerV1(
        "MlpPolicy",
        point_mass(discrete),
        learning_rate=1e-3,
        actor_learning_rate=3e-4,
        value_learning_rate=3e-4,
        imagination_horizon=10,
        policy_kwargs=dict(**WORLD_MODEL, actor_units=32, actor_layers=2, value_units=32, value_layers=2),
        **COMMON,
    )
    assert_learns_point_mass(model, 2500, discrete=discrete)


def reward_predictions_through_predict(
    model, transform=lambda frames: frames, episodes=6, env: Optional[VecEnv] = None, own_actions: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """
    The rewards the model's belief predicts and the true ones, with the belief built the way a user's loop builds
    it: ``predict`` on the frames of ``env`` (default ``model.get_env()``, one env), the state passed back, and
    random actions taken (put into the returned state, as ``predict`` would have them had it chosen them) or, with
    ``own_actions``, the model's deterministic ones.
    """
    env, rng = model.get_env() if env is None else env, np.random.default_rng(0)
    predicted, true = [], []
    for episode in range(episodes):
        env.seed(100 + episode)
        obs, state, start, done, reward = env.reset(), None, np.ones(1, dtype=bool), False, 0.0
        while not done:
            action, state = model.predict(transform(obs), state=state, episode_start=start, deterministic=True)
            if not start[0]:  # the belief after o_t predicts r_t, the reward of arriving at o_t
                features = th.as_tensor(np.concatenate([state[1], state[0]], axis=-1))
                with th.no_grad():
                    predicted.append(float(model.policy.world_model.reward(features)[0]))
                true.append(reward)
            if not own_actions:
                action = rng.uniform(-1, 1, size=(1, 1)).astype(np.float32)
                state = (state[0], state[1], action)
            obs, rewards, dones, _ = env.step(action)
            reward, done, start = float(rewards[0]), bool(dones[0]), dones
    return np.array(predicted), np.array(true)


def reward_r2_through_predict(model, transform=lambda frames: frames, episodes=6) -> float:
    """Share of the reward variance that the belief explains (:func:`reward_predictions_through_predict`)."""
    predicted, true = reward_predictions_through_predict(model, transform, episodes)
    return float(1 - np.mean((predicted - true) ** 2) / true.var())


def test_dreamer_world_model_reads_pixels_through_predict():
    # The point-mass task seen as 64x64 frames (two progress bars: the point's in red in the upper half, the
    # target's in green in the lower half), channel-last as gymnasium renders them, from random actions. The
    # reward can only be read from the image, so predicting it needs every part of the image path: the transpose
    # into the model's layout, the conv encoder, the decoder's alignment with its target, the reward head, and the
    # same preprocessing in predict as in training. Frames turned upside down or with red and green swapped must
    # not be read as well: the model sees what the env renders, not a statistic of it.
    model = DreamerV1(
        "CnnPolicy",
        PointMassEnv(pixels=True),
        learning_starts=10**9,  # collection only: random actions
        batch_size=8,
        sequence_length=10,
        learning_rate=1e-3,
        policy_kwargs=dict(**WORLD_MODEL, cnn_depth=4),
        seed=0,
    )
    model.learn(1500)
    model.train(gradient_steps=500, batch_size=8)
    r2 = reward_r2_through_predict(model)
    upside_down = reward_r2_through_predict(model, lambda frames: frames[:, :, ::-1].copy())
    channels_swapped = reward_r2_through_predict(model, lambda frames: frames[:, [1, 0, 2]].copy())
    assert r2 > 0.6, f"the belief explains {r2:.2f} of the reward variance"
    assert upside_down < r2 - 0.3 and channels_swapped < r2 - 0.3, (r2, upside_down, channels_swapped)


class FrameTransform(gym.ObservationWrapper):
    """Shows the agent every frame through ``transform``: an image path that does the same to what it was trained on."""

    def __init__(self, env: gym.Env, transform: Callable[[np.ndarray], np.ndarray]) -> None:
        super().__init__(env)
        self.transform = transform

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.transform(observation))


def colour_cue_env(transform: Optional[Callable[[np.ndarray], np.ndarray]] = None, seed: int = 123) -> DummyVecEnv:
    """Seeded :class:`ColourCueEnv` episodes (channel-last frames, as the env renders them), seen through ``transform``."""
    env = DummyVecEnv([lambda: Monitor(ColourCueEnv() if transform is None else FrameTransform(ColourCueEnv(), transform))])
    env.seed(seed)
    return env


def colour_cue_return(model, transform: Optional[Callable[[np.ndarray], np.ndarray]] = None, episodes: int = 5) -> float:
    """Mean return of ``model`` on fresh :class:`ColourCueEnv` episodes seen through ``transform``."""
    mean, _ = evaluate_policy(model, colour_cue_env(transform), n_eval_episodes=episodes)
    return float(mean)


def test_colour_cue_frames_turn_into_each_other_when_flipped_or_swapped():
    from gymnasium.utils.env_checker import check_env

    env = ColourCueEnv()
    check_env(env, skip_render_check=True)
    frames, cues = {}, []
    obs, _ = env.reset(seed=0)
    for _ in range(env.max_steps):
        frames[env.cue] = obs
        cue = env.cue
        obs, reward, terminated, truncated, _ = env.step(np.array([0.5], dtype=np.float32))
        assert reward == 0.5 * cue and not terminated
        cues.append(cue)
    assert truncated and set(cues) == {1.0, -1.0}
    for transform in (lambda frame: frame[::-1], lambda frame: frame[..., [1, 0, 2]]):
        assert np.array_equal(transform(frames[1.0]), frames[-1.0])
    again, _ = ColourCueEnv().reset(seed=0)
    assert np.array_equal(again, env.reset(seed=0)[0])


CUE_THRESHOLD = 15.0


def test_dreamer_learns_from_pixels():
    # ColourCueEnv: the reward of each action is cue * action, and the cue (+1 or -1, new after every step) is only
    # in the 64x64 frame, so beating random (0 +/- 2.6 per 20-step episode; a constant action 0 +/- 4.5) needs
    # the whole image path to work, from the env's channel-last uint8 frames through the encoder into the belief, the
    # reward head and the actor. Frames turned upside down or with red and green swapped show the other cue, so the
    # same agent then scores about -20: an image path that flips or swaps between training and acting fails the test,
    # and so does one that trains without the reward head (python -m benchmarks.break_tests shows each). The
    # agent must score more than 15 over 5 episodes in three evaluations in a row within 1,500 steps (about 140 s alone
    # on 1 thread on the Intel Xeon machine).
    model = DreamerV1(
        "CnnPolicy",
        ColourCueEnv(),
        learning_starts=200,
        batch_size=16,
        sequence_length=10,
        train_freq=20,
        gradient_steps=20,
        learning_rate=1e-3,
        actor_learning_rate=1e-3,
        value_learning_rate=1e-3,
        imagination_horizon=5,
        policy_kwargs=dict(**WORLD_MODEL, cnn_depth=4, actor_units=32, actor_layers=2, value_units=32, value_layers=2),
        seed=0,
    )
    assert_learns(model, 1500, colour_cue_env(seed=7), CUE_THRESHOLD, episodes=5)
    upside_down = colour_cue_return(model, lambda frame: frame[::-1])
    channels_swapped = colour_cue_return(model, lambda frame: frame[..., [1, 0, 2]])
    assert upside_down < -CUE_THRESHOLD and channels_swapped < -CUE_THRESHOLD, (upside_down, channels_swapped)


def test_dreamer_v3_learns_point_mass():
    # DreamerV3's losses and its fixed hyperparameters (return normalization, entropy 3e-4, slow critic, replay value
    # loss, KL 0.5 / 0.1 with 1 free nat, discount 1 - 1/333), with a tiny model and learning rates and a warm-up
    # sized for a couple of thousand updates
    model = DreamerV3(
        "MlpPolicy",
        point_mass(),
        learning_rate=1e-3,
        actor_learning_rate=3e-4,
        critic_learning_rate=3e-4,
        imagination_horizon=10,
        policy_kwargs=dict(
            size="size1m",
            stochastic_size=8,
            deterministic_size=64,
            hidden_size=32,
            blocks=1,
            mlp_units=32,
            mlp_layers=2,
            reward_units=32,
            actor_units=32,
            actor_layers=2,
            critic_units=32,
            critic_layers=2,
            optimizer_kwargs=dict(warmup=100),
        ),
        **COMMON,
    )
    assert_learns_point_mass(model, 2500)


def test_the_point_mass_figures_of_the_module_docstring():
    """The random, blind and optimal returns the pass mark rests on, computed as the docstring states them."""

    def episode_return(policy: Callable[[np.ndarray, int], np.ndarray], target: float) -> float:
        env = PointMassEnv(start=START, target=target)
        obs, _ = env.reset(seed=0)
        total, t, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs, t))
            total, t, done = total + reward, t + 1, terminated or truncated
        return total

    rng = np.random.default_rng(0)
    random = [episode_return(lambda o, t: rng.uniform(-1, 1, 1), target) for target in TARGETS for _ in range(50)]
    assert (round(float(np.mean(random)), 1), round(float(np.std(random)), 1)) == (-16.5, 5.8)
    optimum = [episode_return(lambda o, t: np.clip([10 * o[1]], -1, 1), target) for target in TARGETS]
    assert optimum == pytest.approx([-1.0, -1.0])
    # blind: a constant action for k steps, then standing still, the same for both targets
    blind = max(
        np.mean([episode_return(lambda o, t, c=c, k=k: np.array([c if t < k else 0.0]), target) for target in TARGETS])
        for c in np.linspace(-1, 1, 41)
        for k in range(31)
    )
    assert blind == pytest.approx(-15.0) and blind < THRESHOLD
