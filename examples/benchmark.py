"""
Learning benchmark: algorithms x envs x seeds. Each run trains with the preset hyperparameters of its
(algorithm, env), evaluates the deterministic policy every ``--eval-freq`` steps and at the end, and
records the wall time. Writes ``results.json``, ``table.md`` (final eval return mean +/- std and median
over seeds, env steps, wall time) and one learning-curve PNG per env into ``--out``.

    python examples/benchmark.py --algos dreamer_v1 planet --envs Pendulum-v1 --seeds 0 1 2 --timesteps 20000

Run it alone on the machine: wall times are only comparable without other work beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_rssm import DreamerV1, PlaNet

ALGOS = {"dreamer_v1": DreamerV1, "planet": PlaNet}

# Pendulum-v1: a smaller model than the papers' and one update every 4 steps (the papers' 1 per 10 leaves
# too few updates in 20k steps), sequences of 32 steps (episodes are 200 steps long).
_PENDULUM_MODEL = dict(
    stochastic_size=16, deterministic_size=128, hidden_size=128, mlp_units=128, reward_units=128, free_bits=1.0
)
_PENDULUM_CADENCE = dict(learning_starts=1000, batch_size=16, sequence_length=32, train_freq=20, gradient_steps=5)
# (algorithm, env) -> constructor keyword arguments
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("dreamer_v1", "Pendulum-v1"): dict(
        **_PENDULUM_CADENCE,
        actor_learning_rate=3e-4,
        value_learning_rate=3e-4,
        policy_kwargs=dict(
            **_PENDULUM_MODEL, actor_units=128, actor_layers=3, value_units=128, value_layers=2, actor_init_std=1.0
        ),
    ),
    ("planet", "Pendulum-v1"): dict(
        **_PENDULUM_CADENCE,
        # the paper's CEM (1000 candidates, 10 iterations) costs 0.7 s per action on 2 CPU cores at the paper's
        # model size; a smaller search keeps 20k steps (plus evaluations) near 10 minutes
        policy_kwargs=dict(**_PENDULUM_MODEL, planning_horizon=12, num_candidates=150, num_elites=15, cem_iterations=4),
    ),
}


def run(algo: str, env_id: str, seed: int, timesteps: int, eval_freq: int, eval_episodes: int, out: str) -> dict:
    preset = PRESETS.get((algo, env_id))
    if preset is None:
        raise ValueError(f"No preset for {algo} on {env_id}: add one to PRESETS in {__file__}.")
    log_path = os.path.join(out, f"{algo}_{env_id}_{seed}")
    env, eval_env = Monitor(gym.make(env_id)), Monitor(gym.make(env_id))
    model = ALGOS[algo]("MlpPolicy", env, seed=seed, **preset)
    callback = EvalCallback(eval_env, eval_freq=eval_freq, n_eval_episodes=eval_episodes, log_path=log_path, warn=False)
    start = time.time()
    model.learn(timesteps, callback=callback)
    wall = time.time() - start
    final, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes)
    curve = np.load(os.path.join(log_path, "evaluations.npz"))
    return dict(
        algo=algo,
        env=env_id,
        seed=seed,
        timesteps=model.num_timesteps,
        final_return=float(final),
        wall_s=wall,
        curve_steps=curve["timesteps"].tolist(),
        curve_returns=curve["results"].mean(axis=1).tolist(),
    )


def write_report(results: list[dict], out: str, command: str) -> None:
    lines = [
        f"Command: `{command}`",
        "",
        "| algorithm | env | seeds | env steps | final eval return (mean ± std) | median | wall time per run (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["algo"], r["env"]), []).append(r)
    for (algo, env_id), runs in groups.items():
        returns = np.array([r["final_return"] for r in runs])
        walls = np.array([r["wall_s"] for r in runs])
        lines.append(
            f"| {algo} | {env_id} | {len(runs)} | {runs[0]['timesteps']} | {returns.mean():.1f} ± {returns.std():.1f} "
            f"| {np.median(returns):.1f} | {np.median(walls):.0f} s |"
        )
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    for env_id in sorted({r["env"] for r in results}):
        plt.figure(figsize=(5, 3.5))
        for algo in sorted({r["algo"] for r in results if r["env"] == env_id}):
            runs = [r for r in results if r["env"] == env_id and r["algo"] == algo]
            steps = runs[0]["curve_steps"]
            curves = np.array([r["curve_returns"][: len(steps)] for r in runs])
            mean, std = curves.mean(axis=0), curves.std(axis=0)
            plt.plot(steps, mean, label=f"{algo} ({len(runs)} seeds)")
            plt.fill_between(steps, mean - std, mean + std, alpha=0.2)
        plt.xlabel("env steps")
        plt.ylabel("eval return")
        plt.title(env_id)
        plt.legend()
        plt.tight_layout()
        plt.savefig(os.path.join(out, f"curve_{env_id}.png"), dpi=100)
        plt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["dreamer_v1"], choices=sorted(ALGOS))
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--eval-freq", type=int, default=2000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/benchmark")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    command = "python examples/benchmark.py " + " ".join(
        [
            f"--algos {' '.join(args.algos)}",
            f"--envs {' '.join(args.envs)}",
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--timesteps {args.timesteps}",
            f"--eval-freq {args.eval_freq}",
            f"--eval-episodes {args.eval_episodes}",
            f"--threads {args.threads}",
            f"--out {args.out}",
        ]
    )
    results = []
    for env_id in args.envs:
        for algo in args.algos:
            for seed in args.seeds:
                result = run(algo, env_id, seed, args.timesteps, args.eval_freq, args.eval_episodes, args.out)
                print(json.dumps({k: v for k, v in result.items() if not k.startswith("curve")}), flush=True)
                results.append(result)
                with open(os.path.join(args.out, "results.json"), "w") as f:
                    json.dump(results, f, indent=1)
    write_report(results, args.out, command)


if __name__ == "__main__":
    main()
