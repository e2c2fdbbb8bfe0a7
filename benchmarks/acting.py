"""
Acting speed (issue 36): env steps per second of ``learn()`` collecting without updates (``gradient_steps=0``), in
warm-up (random actions, the belief still filtered) and with the agent's own policy, and of a ``predict`` loop that
carries the recurrent state as ``evaluate_policy`` does, for every agent, beside SB3's SAC and the raw vec env.

Two observation kinds: Pendulum-v1 (vectors; the zoo's Pendulum-v1 settings of each agent) and 64x64x3 pixels (the
CI's point-mass task drawn as frames, an env that costs almost nothing, so that the agent's own cost shows; the
networks of each agent's cpu preset for cartpole-swingup from pixels). SAC runs with its defaults (``MlpPolicy`` /
``CnnPolicy``).

    python -m benchmarks.acting --out docs/benchmarks/acting.json
    python -m benchmarks.acting --algos dreamer_v3 --obs vector --profile   # where the time goes (cProfile)

Run it alone: the figures are per-step times of a few hundred microseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_rssm.common.envs import PointMassEnv
from sb3_rssm.zoo import ALGOS, load_hyperparams

PRESETS = {
    "vector": ("Pendulum-v1", "default"),
    "pixels": ("sb3_rssm/dmc-cartpole-swingup-pixels-v0", "cpu"),
}
#: how many env steps each configuration is timed for (PlaNet plans with CEM at every step)
STEPS = {"dreamer_v1": 1.0, "dreamer_v3": 1.0, "planet": 0.1, "sac": 1.0}


def make_env(obs: str) -> DummyVecEnv:
    if obs == "vector":
        return DummyVecEnv([lambda: Monitor(gym.make("Pendulum-v1"))])
    return DummyVecEnv([lambda: Monitor(PointMassEnv(max_steps=100, pixels=True))])


def build(algo: str, obs: str, learning_starts: int, buffer_size: int) -> Any:
    """The agent acting on ``obs`` without updates: its preset's networks, a buffer just big enough."""
    env = make_env(obs)
    common = dict(learning_starts=learning_starts, train_freq=1, gradient_steps=0, buffer_size=buffer_size, seed=0)
    if algo == "sac":
        return SAC("MlpPolicy" if obs == "vector" else "CnnPolicy", env, **common)
    env_id, preset = PRESETS[obs]
    kwargs = load_hyperparams(algo, env_id, preset=preset)
    policy = kwargs.pop("policy")
    for key in ("learning_starts", "train_freq", "gradient_steps", "buffer_size"):
        kwargs.pop(key, None)
    return ALGOS[algo](policy, env, **kwargs, **common)


def rate(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def raw_env(obs: str, steps: int) -> float:
    env = make_env(obs)
    env.seed(0)
    env.reset()
    env.action_space.seed(0)
    actions = [np.array([env.action_space.sample()]) for _ in range(steps + 200)]
    iterator = iter(actions)
    rate(lambda: env.step(next(iterator)), 200)
    return rate(lambda: env.step(next(iterator)), steps)


def learn_rate(algo: str, obs: str, warm_up: bool, steps: int) -> float:
    model = build(algo, obs, learning_starts=10**9 if warm_up else 0, buffer_size=steps + 400)
    model.learn(200)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def predict_rate(algo: str, obs: str, steps: int) -> float:
    model = build(algo, obs, learning_starts=0, buffer_size=400)
    env = make_env(obs)
    env.seed(0)
    observation = env.reset()
    state: Any = None
    starts = np.ones(1, dtype=bool)

    def step() -> None:
        nonlocal observation, state, starts
        action, state = model.predict(observation, state=state, episode_start=starts, deterministic=True)
        observation, _, starts, _ = env.step(action)

    rate(step, 50)
    return rate(step, steps)


def profile(algo: str, obs: str, steps: int, top: int) -> None:
    """cProfile of ``learn()`` acting with the policy: the functions with the most time of their own."""
    model = build(algo, obs, learning_starts=0, buffer_size=steps + 400)
    model.learn(200)
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(steps, reset_num_timesteps=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["dreamer_v1", "dreamer_v3", "planet", "sac"])
    parser.add_argument("--obs", nargs="+", default=["vector", "pixels"], choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=2000, help="env steps timed per configuration (PlaNet: a tenth)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--profile", action="store_true", help="profile learn() acting instead of timing")
    parser.add_argument("--top", type=int, default=25, help="rows of each profile table")
    parser.add_argument("--out", default=None, help="JSON file of the results")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    if args.profile:
        for obs in args.obs:
            for algo in args.algos:
                print(f"## {algo}, {obs}", flush=True)
                profile(algo, obs, max(int(args.steps * STEPS[algo]), 20), args.top)
        return
    results: list[dict[str, Any]] = []
    for obs in args.obs:
        row: dict[str, Any] = dict(obs=obs, agent="raw vec env", env_steps_per_s=round(raw_env(obs, args.steps)))
        print(json.dumps(row), flush=True)
        results.append(row)
        for algo in args.algos:
            steps = max(int(args.steps * STEPS[algo]), 20)
            row = dict(
                obs=obs,
                agent=algo,
                steps=steps,
                learn_warm_up_steps_per_s=round(learn_rate(algo, obs, True, steps)),
                learn_policy_steps_per_s=round(learn_rate(algo, obs, False, steps), 1),
                predict_steps_per_s=round(predict_rate(algo, obs, steps), 1),
            )
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(threads=args.threads, torch=th.__version__, results=results), f, indent=1)


if __name__ == "__main__":
    main()
