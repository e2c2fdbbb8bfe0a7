"""
How far a trained PlaNet's plans can be trusted: for every step of an episode, the return the model predicts for the
plan CEM settles on (its final mean sequence, imagined on the prior mean) beside the return the true env gives that
same action sequence, executed open-loop from a copy of the env's current state. Also the planner's own statistics
(the spread of the first, random candidates' predicted returns, and the final elites' mean and spread).

    python -m benchmarks.planet_diagnostics path/to/planet_model.zip --env Pendulum-v1 --episodes 1

Needs an env whose state a ``copy.deepcopy`` of the unwrapped env carries (the classic-control tasks do). Prints a
JSON summary (correlation, mean bias and mean absolute error of predicted against true returns, mean planner
statistics) and one line every 20 steps.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from sb3_rssm import PlaNet


def true_return(env: gym.Env, actions: np.ndarray) -> float:
    """Sum of the rewards of ``actions`` (env units) executed open-loop from a copy of ``env``'s state."""
    simulator = copy.deepcopy(env.unwrapped)
    total = 0.0
    for action in actions:
        _, reward, terminated, _, _ = simulator.step(action)
        total += float(reward)
        if terminated:
            break
    return total


def diagnose(model: PlaNet, env_id: str, episodes: int, seed: int) -> list[dict[str, Any]]:
    policy, planner = model.policy, model.policy.planner
    world_model = policy.world_model
    env = gym.make(env_id)
    rows = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, start, done, t = policy.initial_state(1), th.ones(1, device=policy.device), False, 0
        while not done:
            with th.no_grad():
                observation, _ = policy.obs_to_tensor(obs)
                latent = policy.filter(observation, state, start, sample=False)
                th.manual_seed(seed + t)
                action, mean, _ = planner.plan(world_model, latent, return_distribution=True)
                plan, imagined, predicted = mean.clamp(-1.0, 1.0), latent, 0.0
                for step in range(planner.horizon):
                    imagined = world_model.rssm.imagine_step(imagined, plan[:, step], sample=False)
                    predicted += float(world_model.reward(imagined.features))
            env_plan = [policy.to_env_action(plan[:, step])[0] for step in range(planner.horizon)]
            rows.append(
                dict(
                    episode=episode,
                    t=t,
                    predicted=predicted,
                    true=true_return(env, np.array(env_plan)),
                    **{key: float(value[0]) for key, value in planner.statistics.items()},
                )
            )
            obs, _, terminated, truncated, _ = env.step(policy.to_env_action(action)[0])
            state, start, done, t = (latent.deterministic, latent.stochastic, action), None, terminated or truncated, t + 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved PlaNet (.zip)")
    parser.add_argument("--env", default="Pendulum-v1", help="gymnasium id whose unwrapped env deep-copies with its state")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to diagnose")
    parser.add_argument("--seed", type=int, default=5, help="seed of the first episode's reset (and of CEM's draws)")
    parser.add_argument("--sample-latents", choices=["yes", "no"], help="override the planner's cem_sample_latents")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    model = PlaNet.load(args.model, device="cpu")
    if args.sample_latents:
        model.policy.planner.sample_latents = args.sample_latents == "yes"
    rows = diagnose(model, args.env, args.episodes, args.seed)
    predicted, true = np.array([r["predicted"] for r in rows]), np.array([r["true"] for r in rows])
    summary = dict(
        steps=len(rows),
        correlation=float(np.corrcoef(predicted, true)[0, 1]),
        bias=float((predicted - true).mean()),
        mean_absolute_error=float(np.abs(predicted - true).mean()),
        **{key: float(np.mean([r[key] for r in rows])) for key in model.policy.planner.statistics},
    )
    print(json.dumps(summary))
    for row in rows[::20]:
        print(json.dumps({key: round(value, 2) if isinstance(value, float) else value for key, value in row.items()}))


if __name__ == "__main__":
    main()
