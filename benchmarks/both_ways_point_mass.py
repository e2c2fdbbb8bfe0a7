"""
DreamerV1 on the CI point-mass task both ways at once: one agent rewarded for reaching the shown target, one (same
seed, same observations) for reaching its mirror image, trained side by side in chunks of 90 steps and evaluated
after each (one deterministic episode per target). An agent blind to rewards acts the same way in both and cannot
pass both (see ``tests/test_learning.py``); a working one should, and hold it. Prints the evaluations as they come.

    python -m benchmarks.both_ways_point_mass                            # the CI test's settings
    python -m benchmarks.both_ways_point_mass --actor-lr 8e-5 --mean-scale 2
    python -m benchmarks.both_ways_point_mass --entropy 1e-3

It is the probe of DreamerV1's saturation at a bound (docs/benchmarks.md, "The CI learning tests"): a saturated
agent returns -26.5, a constant full action to one side whatever the target.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rssm import DreamerV1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actor-lr", type=float, default=3e-4, help="actor learning rate (the CI test's: 3e-4)")
    parser.add_argument("--mean-scale", type=float, default=5.0, help="actor_mean_scale (the paper's: 5)")
    parser.add_argument("--init-std", type=float, default=1.0, help="actor_init_std (the CI test's: 1)")
    parser.add_argument("--entropy", type=float, default=0.0, help="actor_entropy_coef (the paper's: 0)")
    parser.add_argument("--steps", type=int, default=2520)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import test_learning

    kwargs = dict(test_learning.COMMON, seed=args.seed)
    policy_kwargs = dict(
        **test_learning.WORLD_MODEL,
        actor_units=32,
        actor_layers=2,
        value_units=32,
        value_layers=2,
        actor_init_std=args.init_std,
        actor_mean_scale=args.mean_scale,
    )
    models, eval_envs = [], []
    for mirrored in (False, True):
        models.append(
            DreamerV1(
                "MlpPolicy",
                test_learning.point_mass(mirrored=mirrored),
                learning_rate=1e-3,
                actor_learning_rate=args.actor_lr,
                value_learning_rate=3e-4,
                imagination_horizon=10,
                actor_entropy_coef=args.entropy,
                policy_kwargs=policy_kwargs,
                **kwargs,
            )
        )
        eval_envs.append(test_learning.point_mass_eval_env(mirrored=mirrored))
    for phase in range(args.steps // 90):
        returns = []
        for model, eval_env in zip(models, eval_envs):
            model.learn(90, reset_num_timesteps=phase == 0)
            returns.append(evaluate_policy(model, eval_env, n_eval_episodes=len(test_learning.TARGETS))[0])
        print(f"{(phase + 1) * 90} steps: target {returns[0]:.1f} / mirror {returns[1]:.1f}", flush=True)


if __name__ == "__main__":
    main()
