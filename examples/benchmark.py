"""
Learning benchmark: algorithms x envs x seeds. Each run trains with the hyperparameters of its
(algorithm, env), evaluates the deterministic policy every ``--eval-freq`` steps and at the end, and
records the wall time. Writes ``results.json``, ``table.md`` (final eval return mean +/- std and median
over seeds, env steps, wall time) and one learning-curve PNG per env into ``--out``.

    python examples/benchmark.py --algos dreamer_v1 planet --envs Pendulum-v1 --seeds 0 1 2 --timesteps 20000

Hyperparameters: the zoo files ``sb3_rssm/zoo/hyperparams/<algo>.yml``, the one place they are kept (small
settings for ``Pendulum-v1``; the papers' for the dm_control pixel ids, e.g.
``sb3_rssm/dmc-cartpole-swingup-pixels-v0``, where ``--timesteps`` counts agent steps, each ``action_repeat``
frames). ``--tiny`` swaps in tiny networks and a fast update cadence
to check the script end to end in seconds; its numbers mean nothing.

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
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecTransposeImage, is_vecenv_wrapped

from sb3_rssm import DreamerV1, PlaNet
from sb3_rssm.zoo import load_hyperparams

ALGOS = {"dreamer_v1": DreamerV1, "planet": PlaNet}

# --tiny: a smoke test of the script, not a benchmark
_TINY_MODEL = dict(
    stochastic_size=4,
    deterministic_size=8,
    hidden_size=8,
    cnn_depth=2,
    mlp_units=8,
    mlp_layers=1,
    reward_units=8,
    reward_layers=1,
)
TINY: dict[str, dict[str, Any]] = {
    "dreamer_v1": dict(
        imagination_horizon=3, policy_kwargs=dict(**_TINY_MODEL, actor_units=8, actor_layers=1, value_units=8, value_layers=1)
    ),
    "planet": dict(policy_kwargs=dict(**_TINY_MODEL, planning_horizon=3, num_candidates=16, num_elites=4, cem_iterations=2)),
}
_TINY_CADENCE = dict(buffer_size=10_000, learning_starts=20, batch_size=2, sequence_length=4, train_freq=10, gradient_steps=1)


def hyperparameters(algo: str, env_id: str, tiny: bool = False) -> dict[str, Any]:
    """Constructor keyword arguments for one run: the zoo YAML entry; ``tiny`` shrinks them."""
    kwargs = load_hyperparams(algo, env_id)
    if tiny:
        kwargs.update(_TINY_CADENCE, **{k: v for k, v in TINY[algo].items() if k != "policy_kwargs"})
        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **TINY[algo]["policy_kwargs"]}
    return kwargs


def action_repeat(env: gym.Env) -> int:
    """Frames per agent step: the dm_control ids' action repeat, 1 elsewhere."""
    try:
        return int(env.get_wrapper_attr("repeat"))
    except AttributeError:
        return 1


def run(
    algo: str, env_id: str, seed: int, timesteps: int, eval_freq: int, eval_episodes: int, out: str, tiny: bool = False
) -> dict:
    preset = hyperparameters(algo, env_id, tiny)
    log_path = os.path.join(out, f"{algo}_{env_id.replace('/', '-')}_{seed}")
    env = Monitor(gym.make(env_id))
    policy = preset.pop("policy", None) or ("CnnPolicy" if is_image_space(env.observation_space) else "MlpPolicy")
    model = ALGOS[algo](policy, env, seed=seed, **preset)
    eval_env: VecEnv = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
    # channel-last images: evaluate through the same transpose as training
    if is_vecenv_wrapped(model.get_env(), VecTransposeImage):
        eval_env = VecTransposeImage(eval_env)
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
        action_repeat=action_repeat(env),
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
    repeats = {r["env"]: r.get("action_repeat", 1) for r in results if r.get("action_repeat", 1) > 1}
    if repeats:
        lines += [
            "",
            "Env steps are agent steps; frames = steps x action repeat ("
            + ", ".join(f"{env_id}: {repeat}" for env_id, repeat in repeats.items())
            + ").",
        ]
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
        plt.savefig(os.path.join(out, f"curve_{env_id.replace('/', '-')}.png"), dpi=100)
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
    parser.add_argument("--tiny", action="store_true", help="tiny networks and cadence: checks the script, measures nothing")
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
        + (["--tiny"] if args.tiny else [])
    )
    results = []
    for env_id in args.envs:
        for algo in args.algos:
            for seed in args.seeds:
                result = run(algo, env_id, seed, args.timesteps, args.eval_freq, args.eval_episodes, args.out, args.tiny)
                print(json.dumps({k: v for k, v in result.items() if not k.startswith("curve")}), flush=True)
                results.append(result)
                with open(os.path.join(args.out, "results.json"), "w") as f:
                    json.dump(results, f, indent=1)
    write_report(results, args.out, command)


if __name__ == "__main__":
    main()
