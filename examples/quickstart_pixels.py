"""
Quickstart with pixel observations: DreamerV1 on the dm_control cartpole swing-up from 64x64 frames (action
repeat 8). Needs the dmc extra (pip install 'sb3_rssm[dmc]') and an OpenGL backend (headless Linux: EGL, chosen
automatically; see docs/dmc.md).

    python examples/quickstart_pixels.py                    # evaluates the agent the pixel benchmark trained (1-2 min)
    python examples/quickstart_pixels.py --train 12500      # trains one with the CPU preset: 100k frames, under an hour

The shipped agent (examples/checkpoints/dreamer_v1_cartpole_swingup_cpu.zip, its policy only) is seed 1 of the pixel
benchmark in docs/benchmarks.md (250.3 there, the best of 3 seeds: 179.0, 250.3, 185.5), trained with `--preset cpu`
(sb3_rssm/zoo/hyperparams/cpu/dreamer_v1.yml). The papers' settings for all six tasks:
python -m sb3_rssm.zoo.train --algo dreamer_v1 --env <id> (docs/zoo.md).

Either agent is evaluated by sb3_rssm.evaluate, the command a user runs on any saved file (the script prints it):
python -m sb3_rssm.evaluate examples/checkpoints/dreamer_v1_cartpole_swingup_cpu.zip \
    --env sb3_rssm/dmc-cartpole-swingup-pixels-v0 --episodes 3 --seed 1000
"""

from __future__ import annotations

import argparse
import os
import shlex
import time

from sb3_rssm import DreamerV1
from sb3_rssm.evaluate import main as evaluate
from sb3_rssm.zoo import load_hyperparams

ENV_ID = "sb3_rssm/dmc-cartpole-swingup-pixels-v0"
CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "dreamer_v1_cartpole_swingup_cpu.zip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train", type=int, default=0, help="agent steps to train (each is 8 env frames); 0: evaluate the shipped agent"
    )
    parser.add_argument("--episodes", type=int, default=3, help="evaluation episodes (125 agent steps each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/quickstart_pixels")
    args = parser.parse_args()

    start = time.time()
    if args.train:
        hyperparams = load_hyperparams("dreamer_v1", ENV_ID, preset="cpu")
        print("hyperparameters (--preset cpu):", hyperparams)
        model = DreamerV1(env=ENV_ID, **hyperparams, seed=args.seed, verbose=1)
        model.learn(args.train)
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "dreamer_v1_cartpole_swingup")
        model.save(path)
        print(f"Trained {args.train} agent steps ({8 * args.train} frames) in {time.time() - start:.0f} s; saved {path}.zip")
        saved = f"{path}.zip"
    else:
        if not os.path.exists(CHECKPOINT):
            raise SystemExit(f"{CHECKPOINT} is missing: train an agent with --train 12500")
        saved = CHECKPOINT
    # the file's algorithm is read from it (a model here after --train, the shipped policy otherwise); the env is
    # wrapped as the agent needs, and SB3's evaluate_policy carries the belief state through predict at every step
    argv = [os.path.relpath(saved), "--env", ENV_ID, "--episodes", str(args.episodes), "--seed", str(1000 + args.seed)]
    print("python -m sb3_rssm.evaluate", shlex.join(argv))
    result = evaluate(argv)
    print(
        f"Eval return: {result['mean_reward']:.1f} +/- {result['std_reward']:.1f} over {args.episodes} episodes (out of 1000)"
    )
    print("Random actions get about 120, the published DreamerV1 139 at the same 100k frames (docs/benchmarks.md).")


if __name__ == "__main__":
    main()
