"""
`make demo`: train a small DreamerV1 on Pendulum-v1 for about 7 minutes (12,000 steps on 2 CPU cores; at
8,000 this seed is still mid-rise), evaluate it against a random policy, and show where the TensorBoard
logs, the evaluation file and the learning-curve plot went.
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_rssm import DreamerV1
from sb3_rssm.zoo import load_hyperparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="runs/demo")
    args = parser.parse_args()
    th.set_num_threads(min(2, os.cpu_count() or 1))
    os.makedirs(args.log_dir, exist_ok=True)

    env = Monitor(gym.make("Pendulum-v1"))
    # seeded: the same seed trains and evaluates the same way, so the printed return is reproducible
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=1000 + args.seed)
    # the small Pendulum-v1 settings of the learning benchmark and the zoo (sb3_rssm/zoo/hyperparams/dreamer_v1.yml)
    hyperparams = load_hyperparams("dreamer_v1", "Pendulum-v1")
    model = DreamerV1(
        hyperparams.pop("policy"),
        env,
        **hyperparams,
        tensorboard_log=os.path.join(args.log_dir, "tensorboard"),
        seed=args.seed,
        verbose=1,
    )
    # at least one evaluation, also on budgets under 2000 steps: the curve and the summary read it
    eval_freq = min(2000, args.timesteps)
    eval_callback = EvalCallback(eval_env, eval_freq=eval_freq, n_eval_episodes=3, log_path=args.log_dir, warn=False)
    start = time.time()
    model.learn(args.timesteps, callback=eval_callback, progress_bar=True)
    wall = time.time() - start

    # 20 episodes: Pendulum's random start angles spread single-episode returns from about -0 to -400 for a good
    # policy, so 5 episodes moved the printed mean by hundreds between runs
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=20)
    random_env = gym.make("Pendulum-v1")
    random_env.action_space.seed(args.seed)
    random_returns = []
    for episode in range(20):
        random_env.reset(seed=args.seed + episode)
        done, total = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = random_env.step(random_env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        random_returns.append(total)

    data = np.load(os.path.join(args.log_dir, "evaluations.npz"))
    plt.figure(figsize=(5, 3.5))
    plt.plot(data["timesteps"], data["results"].mean(axis=1), marker="o", label="DreamerV1")
    plt.axhline(np.mean(random_returns), color="gray", linestyle="--", label="random policy")
    plt.xlabel("env steps")
    plt.ylabel("eval return")
    plt.title("DreamerV1 on Pendulum-v1")
    plt.legend()
    plt.tight_layout()
    plot = os.path.join(args.log_dir, "learning_curve.png")
    plt.savefig(plot, dpi=100)

    model.save(os.path.join(args.log_dir, "dreamer_v1_pendulum"))
    print()
    print(f"Trained {args.timesteps} steps in {wall:.0f} s")
    print(f"Eval return: {mean:.1f} +/- {std:.1f}   (random policy: {np.mean(random_returns):.1f})")
    print(f"TensorBoard logs: tensorboard --logdir {os.path.join(args.log_dir, 'tensorboard')}")
    print(f"Evaluations:      {os.path.join(args.log_dir, 'evaluations.npz')}")
    print(f"Learning curve:   {plot}")
    print(f"Saved model:      {os.path.join(args.log_dir, 'dreamer_v1_pendulum.zip')}")


if __name__ == "__main__":
    main()
