"""
Quickstart with vector observations: DreamerV1 on Pendulum-v1, evaluated, saved, loaded, and run by hand with
its belief state.

    python examples/quickstart_vector.py                      # 12,000 steps, about 7 minutes on 2 CPU cores
    python examples/quickstart_vector.py --timesteps 20000    # the learning benchmark's budget (docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rssm import DreamerV1
from sb3_rssm.zoo import load_hyperparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timesteps", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/quickstart_vector")
    args = parser.parse_args()

    # The small Pendulum-v1 settings of sb3_rssm/zoo/hyperparams/dreamer_v1.yml: a smaller model and more frequent
    # updates than the paper's, whose cadence (100 updates per 1000 steps after 5000 random ones) would not start
    # learning in this budget. DreamerV1("MlpPolicy", "Pendulum-v1") alone gives the paper's settings.
    hyperparams = load_hyperparams("dreamer_v1", "Pendulum-v1")
    print("hyperparameters:", hyperparams)
    model = DreamerV1(env="Pendulum-v1", **hyperparams, seed=args.seed, verbose=1)
    model.learn(args.timesteps, progress_bar=False)
    mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10)
    print(f"Eval return after {args.timesteps} steps: {mean:.1f} +/- {std:.1f} (a random policy gets about -1200)")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "dreamer_v1_pendulum")
    model.save(path)
    model = DreamerV1.load(path)

    # acting by hand: the agent filters observations into a belief, carried in `state` and reset at episode starts
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=args.seed)
    obs = env.reset()
    state, episode_start = None, np.ones(env.num_envs, dtype=bool)
    returns = np.zeros(env.num_envs)
    for _ in range(200):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        obs, rewards, dones, _ = env.step(action)
        returns += rewards
        episode_start = dones
    print(f"Returns of one episode in 2 envs: {np.round(returns, 1)}; saved model: {path}.zip")


if __name__ == "__main__":
    main()
