"""
Quickstart with pixel observations: DreamerV1 on the dm_control cartpole swing-up from 64x64 frames (the papers'
action repeat of 8), with a small model so it runs on a CPU. Needs the dmc extra (pip install 'sb3_rssm[dmc]')
and an OpenGL backend (headless Linux: EGL, chosen automatically; see docs/dmc.md).

    python examples/quickstart_pixels.py                      # 1000 agent steps (8000 frames), a minute or two
    python examples/quickstart_pixels.py --timesteps 20000    # longer; the paper-sized run is the zoo's YAML

The papers' settings for all six tasks: python -m sb3_rssm.zoo.train --algo dreamer_v1 --env <id> (docs/zoo.md).
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import sb3_rssm  # noqa: F401  (registers the sb3_rssm/dmc-* ids)
from sb3_rssm import DreamerV1

ENV_ID = "sb3_rssm/dmc-cartpole-swingup-pixels-v0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timesteps", type=int, default=1000, help="agent steps (each is 8 env frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/quickstart_pixels")
    args = parser.parse_args()

    env = Monitor(gym.make(ENV_ID))
    print(f"{ENV_ID}: observations {env.observation_space}, actions {env.action_space}")
    model = DreamerV1(
        "CnnPolicy",
        env,  # channel-last uint8 frames: SB3 wraps the env in VecTransposeImage
        # one episode is 125 agent steps: 2 random episodes first, then 10 updates after each episode; a smaller
        # model and batch than the paper's (depth 32, 30/200/200, 50 x 50), so that a CPU gets through it
        learning_starts=250,
        train_freq=125,
        gradient_steps=10,
        batch_size=16,
        sequence_length=32,
        buffer_size=max(args.timesteps, 1000),
        policy_kwargs=dict(cnn_depth=16, stochastic_size=16, deterministic_size=100, hidden_size=100),
        seed=args.seed,
        verbose=1,
    )
    model.learn(args.timesteps)
    mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=2)
    print(f"Eval return after {args.timesteps} agent steps: {mean:.1f} +/- {std:.1f} (out of 1000)")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "dreamer_v1_cartpole_swingup")
    model.save(path)
    print(f"Saved model: {path}.zip")


if __name__ == "__main__":
    main()
