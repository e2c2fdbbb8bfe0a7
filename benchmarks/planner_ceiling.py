"""
What PlaNet's Pendulum-v1 figure can reach: the benchmark's final evaluation replayed episode by episode, once with
the trained policy (optionally planning over another horizon) and once with the same CEM planner searching Pendulum's
true dynamics instead of the learned model. The second is the ceiling of the planner settings on those very start
states: Pendulum's return depends as much on where an episode starts as on the agent (the same CEM on the true
dynamics returns -0.3 from one start and -314 from another of the same evaluation), so a 10-episode mean says
little without it.

    python -m benchmarks.planner_ceiling --seed 2 --horizon 20
    python -m benchmarks.planner_ceiling --seed 2 --horizon 20 --policy runs/benchmark/planet_Pendulum-v1_2/policy.zip
    python -m benchmarks.planner_ceiling --reset-seeds 101 --horizon 12 --policy runs/benchmark/planet_Pendulum-v1_2/policy.zip

``examples/benchmark.py`` evaluates on an env seeded ``1000 + seed``: ``--evaluations-before`` EvalCallback
evaluations (``timesteps // eval_freq``, 5 for the Pendulum command of docs/benchmarks.md), then the final one.
Each ``evaluate_policy`` call resets its env once and auto-resets after every episode, so it draws
``episodes + 1`` start states of which it plays the first ``episodes``. Prints one JSON line per agent: the returns,
their mean and the median milliseconds per action.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch as th

from sb3_rssm.common.rssm import RSSMState
from sb3_rssm.planet.planning import CEMPlanner
from sb3_rssm.planet.policies import MlpPolicy, PlaNetPolicy

#: Pendulum-v1's constants (gymnasium.envs.classic_control.pendulum)
MAX_TORQUE, MAX_SPEED, DT, GRAVITY = 2.0, 8.0, 0.05, 10.0


def angle_normalize(angle: th.Tensor) -> th.Tensor:
    return ((angle + np.pi) % (2 * np.pi)) - np.pi


class PendulumDynamics:
    """
    Pendulum-v1's equations of motion in the shape of the planner's :class:`~sb3_rssm.planet.planning.LatentModel`:
    a state's ``deterministic`` field holds (angle, angular velocity) and its ``stochastic`` field the reward of the
    transition that led to it, which :meth:`reward` reads back from the features. Actions are normalized to [-1, 1],
    as the planner's are.
    """

    @property
    def rssm(self) -> PendulumDynamics:
        return self

    @staticmethod
    def belief(env_state: np.ndarray) -> RSSMState:
        """The planner's start state from the env's ``unwrapped.state`` (angle, angular velocity)."""
        physical = th.as_tensor(np.asarray(env_state, dtype=np.float64)).reshape(1, 2)
        zero = physical.new_zeros(1, 1)
        return RSSMState(physical, zero, zero, zero)

    def imagine_step(self, state: RSSMState, action: th.Tensor, sample: bool = True) -> RSSMState:
        angle, velocity = state.deterministic.unbind(-1)
        torque = MAX_TORQUE * action[:, 0].clamp(-1.0, 1.0)
        reward = -(angle_normalize(angle) ** 2 + 0.1 * velocity**2 + 0.001 * torque**2)
        velocity = (velocity + (3 * GRAVITY / 2 * th.sin(angle) + 3.0 * torque) * DT).clamp(-MAX_SPEED, MAX_SPEED)
        angle = angle + velocity * DT
        zero = reward.new_zeros(reward.shape[0], 1)
        return RSSMState(th.stack([angle, velocity], dim=-1), reward.unsqueeze(-1), zero, zero)

    def reward(self, features: th.Tensor) -> th.Tensor:
        return features[..., 0]


def final_evaluation_starts(seed: int, evaluations_before: int = 5, episodes: int = 10) -> list[np.ndarray]:
    """
    The Pendulum start states (angle, angular velocity) of the final evaluation of ``examples/benchmark.py``'s
    run with ``--seeds seed`` (see the module docstring for the count).
    """
    env = gym.make("Pendulum-v1")
    first = evaluations_before * (episodes + 1)
    starts = []
    for index in range(first + episodes):
        env.reset(seed=1000 + seed if index == 0 else None)
        starts.append(np.array(env.unwrapped.state, dtype=np.float64))  # type: ignore[attr-defined]
    return starts[first:]


def reset_start(seed: int) -> np.ndarray:
    """The Pendulum start state (angle, angular velocity) that ``env.reset(seed=seed)`` draws."""
    env = gym.make("Pendulum-v1")
    env.reset(seed=seed)
    return np.array(env.unwrapped.state, dtype=np.float64)  # type: ignore[attr-defined]


Agent = Callable[[gym.Env, np.ndarray, bool], np.ndarray]


def play(start: np.ndarray, act: Agent) -> float:
    """Return of one Pendulum-v1 episode from ``start``; ``act(env, obs, first)`` gives the env action."""
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.state = start.copy()  # type: ignore[attr-defined]
    obs, total, first, done = env.unwrapped._get_obs(), 0.0, True, False  # type: ignore[attr-defined]
    while not done:
        obs, reward, terminated, truncated, _ = env.step(act(env, obs, first))
        total, first, done = total + float(reward), False, terminated or truncated
    return total


def true_dynamics_agent(planner: CEMPlanner) -> Agent:
    """CEM over Pendulum's true dynamics, seeded per step as the deterministic PlaNet policy is."""
    dynamics = PendulumDynamics()

    def act(env: gym.Env, obs: np.ndarray, first: bool) -> np.ndarray:
        th.manual_seed(0)
        action = planner.plan(dynamics, PendulumDynamics.belief(env.unwrapped.state))  # type: ignore[attr-defined]
        return MAX_TORQUE * action[0].numpy().astype(np.float32)

    return act


def policy_agent(policy: PlaNetPolicy) -> Agent:
    """The trained policy, deterministic, carrying its belief through ``predict`` as ``evaluate_policy`` does."""
    state: list[Optional[tuple[np.ndarray, ...]]] = [None]

    def act(env: gym.Env, obs: np.ndarray, first: bool) -> np.ndarray:
        action, state[0] = policy.predict(obs[None], state=state[0], episode_start=np.array([first]), deterministic=True)
        return action[0]

    return act


def replay(agent: Agent, starts: list[np.ndarray]) -> dict[str, Any]:
    """Per-episode returns from ``starts``, their mean, and the agent's median milliseconds per action."""
    seconds: list[float] = []

    def timed(env: gym.Env, obs: np.ndarray, first: bool) -> np.ndarray:
        begin = time.perf_counter()
        action = agent(env, obs, first)
        seconds.append(time.perf_counter() - begin)
        return action

    returns = [play(start, timed) for start in starts]
    return dict(
        returns=[round(r, 1) for r in returns],
        mean=round(float(np.mean(returns)), 1),
        ms_per_action=round(1000 * float(np.median(seconds)), 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the benchmark run's --seeds value")
    parser.add_argument("--evaluations-before", type=int, default=5, help="EvalCallback evaluations before the final one")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per evaluation (--eval-episodes)")
    parser.add_argument(
        "--reset-seeds",
        nargs="+",
        type=int,
        help="replay the starts of env.reset(seed=K) for each K instead of the benchmark's final evaluation",
    )
    parser.add_argument("--policy", help="a trained PlaNet policy (the run's policy.zip) to replay beside the ceiling")
    parser.add_argument("--horizon", type=int, default=20, help="planning horizon of both agents")
    parser.add_argument("--num-candidates", type=int, default=150, help="CEM candidates per iteration")
    parser.add_argument("--num-elites", type=int, default=15, help="CEM elites")
    parser.add_argument("--cem-iterations", type=int, default=4, help="CEM iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    if args.reset_seeds:
        starts = [reset_start(seed) for seed in args.reset_seeds]
    else:
        starts = final_evaluation_starts(args.seed, args.evaluations_before, args.episodes)
    settings = dict(
        horizon=args.horizon, num_candidates=args.num_candidates, num_elites=args.num_elites, iterations=args.cem_iterations
    )
    ceiling = replay(true_dynamics_agent(CEMPlanner(1, **settings)), starts)
    print(json.dumps(dict(agent="cem_on_true_dynamics", seed=args.seed, **settings, **ceiling)))
    if args.policy:
        policy = MlpPolicy.load(args.policy, device="cpu")
        trained = policy.planner
        policy.planner = CEMPlanner(
            trained.action_size, trained.discrete, min_std=trained.min_std, sample_latents=trained.sample_latents, **settings
        )
        print(json.dumps(dict(agent="trained_policy", seed=args.seed, **settings, **replay(policy_agent(policy), starts))))


if __name__ == "__main__":
    main()
