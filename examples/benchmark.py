"""
Learning benchmark: algorithms x envs x seeds. Each run trains with the hyperparameters of its
(algorithm, env), evaluates the deterministic policy every ``--eval-freq`` steps and at the end, and
records the wall time. Writes ``results.json``, ``table.md`` (final eval return mean +/- std and median
over seeds, env steps, wall time) and one learning-curve PNG per env into ``--out``; for image envs also
an open-loop prediction picture per world-model run.

    python examples/benchmark.py --algos dreamer_v1 planet --envs Pendulum-v1 --seeds 0 1 2 --timesteps 20000
    python examples/benchmark.py --algos dreamer_v1 sac random --envs sb3_rssm/dmc-cartpole-swingup-pixels-v0 \\
        --preset cpu --seeds 0 --timesteps 12500 --eval-freq 1250

Runs accumulate: ``results.json`` keeps every (algorithm, env, seed) run ever written into ``--out`` (a rerun
replaces its own entry), so seeds can run in separate invocations, at different times, and the table and
curves are drawn from all of them. ``--combine`` draws one table and one figure per env from the runs of several
such folders (for example every agent on Pendulum-v1), running nothing:

    python examples/benchmark.py --combine docs/benchmarks/pendulum docs/benchmarks/pendulum_planet \
        docs/benchmarks/dreamer_v3 --out docs/benchmarks/pendulum_all

Algorithms: ``dreamer_v1``, ``dreamer_v3`` and ``planet`` (this package), SB3's ``sac`` (Box actions), ``dqn`` and
``ppo`` (CartPole-v1) for scale, and ``random`` (uniformly random actions, evaluated only). Hyperparameters: the zoo
files ``sb3_rssm/zoo/hyperparams/<algo>.yml`` (``--preset cpu``: ``cpu/<algo>.yml``, settings sized for a 2-core
CPU), the one place they are kept; those of SB3's algorithms are below (rl-zoo3's where it has them). On the
dm_control pixel ids ``--timesteps`` counts agent steps, each ``action_repeat`` frames; SAC sees the last 3
frames stacked there, the usual input of model-free agents on pixels, while the world models see one frame and
remember. ``--tiny`` swaps in tiny networks and a fast update cadence to check the script end to end in seconds;
its numbers mean nothing.

Run it alone on the machine: wall times are only comparable without other work beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecTransposeImage

from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.spaces import actions_to_model
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm
from sb3_rssm.zoo import load_hyperparams

WORLD_MODELS = {"dreamer_v1": DreamerV1, "dreamer_v3": DreamerV3, "planet": PlaNet}
BASELINES = {"sac": SAC, "dqn": DQN, "ppo": PPO}
ALGOS = [*WORLD_MODELS, *BASELINES, "random"]

# SB3's SAC, for scale. Pendulum-v1: rl-zoo3's settings. Pixels: SB3's CnnPolicy (NatureCNN) on 3 stacked
# frames, SAC's defaults but a batch of 128 (a 2-core CPU gets through 12,500 updates in about half an hour), the
# world models' 5000 random prefill frames, and a replay buffer of 20,000 steps (SB3 keeps every observation
# twice: 1.5 GB of stacked 64x64x9 frames; it holds the whole 100k-frame run at action repeat 8).
SAC_PIXELS = dict(policy="CnnPolicy", frame_stack=3, buffer_size=20_000, batch_size=128, learning_starts=625)


def zoo_linear(initial: float) -> Callable[[float], float]:
    """rl-zoo3's ``lin_<initial>`` schedule: ``initial`` times the fraction of the run still to go."""
    return lambda progress_remaining: progress_remaining * initial


# DQN and PPO on CartPole-v1: rl-zoo3 2.9's settings (hyperparams/dqn.yml, ppo.yml); its ``lin_`` schedules anneal to
# zero over the run's own budget, as the zoo's do. PPO steps 8 envs at once, so its env steps are the 8 envs' sum.
BASELINE_HYPERPARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "sac": {"Pendulum-v1": dict(policy="MlpPolicy", learning_rate=1e-3)},
    "dqn": {
        "CartPole-v1": dict(
            policy="MlpPolicy",
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1000,
            gamma=0.99,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
            policy_kwargs=dict(net_arch=[256, 256]),
        )
    },
    "ppo": {
        "CartPole-v1": dict(
            policy="MlpPolicy",
            n_envs=8,
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=zoo_linear(1e-3),
            clip_range=zoo_linear(0.2),
        )
    },
}

# Published anchors printed under the table: paper-size models on GPUs, read from the authors' score files.
PUBLISHED = {
    "sb3_rssm/dmc-cartpole-swingup-pixels-v0": [
        "DreamerV1 (danijar/dreamer `scores/dreamer.json`, 5 seeds): 139 at about 100k frames, 678 at 500k",
        "DreamerV3 (danijar/dreamerv3 `scores/`, DMC vision): 597 at 100k frames",
    ],
}

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
    "dreamer_v3": dict(
        imagination_horizon=3,
        policy_kwargs={
            **_TINY_MODEL,
            **dict(stochastic_size=2, classes=2, blocks=2, actor_units=8, actor_layers=1, critic_units=8, critic_layers=1),
        },
    ),
    "planet": dict(policy_kwargs=dict(**_TINY_MODEL, planning_horizon=3, num_candidates=16, num_elites=4, cem_iterations=2)),
    "sac": dict(buffer_size=1000, learning_starts=10, batch_size=4, policy_kwargs=dict(net_arch=[8])),
    "dqn": dict(learning_starts=10, train_freq=10, gradient_steps=1, policy_kwargs=dict(net_arch=[8])),
    "ppo": dict(n_envs=2, n_steps=8, batch_size=8, n_epochs=1, policy_kwargs=dict(net_arch=[8])),
}
_TINY_CADENCE = dict(buffer_size=10_000, learning_starts=20, batch_size=2, sequence_length=4, train_freq=10, gradient_steps=1)


def hyperparameters(algo: str, env_id: str, tiny: bool = False, preset: str = "default") -> dict[str, Any]:
    """
    Constructor keyword arguments for one run: the zoo YAML entry (SB3's algorithms: :data:`BASELINE_HYPERPARAMS`);
    ``tiny`` shrinks them. ``frame_stack`` and ``n_envs`` entries shape the env, they are not constructor arguments.
    """
    if algo == "random":
        return {}
    if algo in BASELINES:
        kwargs = BASELINE_HYPERPARAMS[algo].get(env_id)
        if kwargs is None and algo == "sac" and env_id.startswith("sb3_rssm/dmc-"):
            kwargs = SAC_PIXELS
        if kwargs is None:
            raise ValueError(
                f"examples/benchmark.py has no {algo} settings for {env_id!r} (it has them for "
                f"{sorted(BASELINE_HYPERPARAMS[algo])}): add an entry to BASELINE_HYPERPARAMS"
            )
        kwargs = dict(kwargs)
        if tiny:
            kwargs.update(TINY[algo])
        return kwargs
    kwargs = load_hyperparams(algo, env_id, preset=preset)
    if tiny:
        kwargs.update(_TINY_CADENCE, **{k: v for k, v in TINY[algo].items() if k != "policy_kwargs"})
        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **TINY[algo]["policy_kwargs"]}
    return kwargs


def make_env(env_id: str, seed: int, frame_stack: int = 1, n_envs: int = 1) -> VecEnv:
    """``n_envs`` Monitor-wrapped envs, seeded, with ``frame_stack`` frames stacked and channel-last images transposed."""
    env: VecEnv = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if frame_stack > 1:
        env = VecFrameStack(env, frame_stack)
    space = env.observation_space
    if is_image_space(space) and not is_image_space_channels_first(space):  # type: ignore[arg-type]
        env = VecTransposeImage(env)
    return env


def action_repeat(env: VecEnv) -> int:
    """Frames per agent step: the dm_control ids' action repeat, 1 elsewhere."""
    try:
        return int(env.get_attr("repeat")[0])
    except AttributeError:
        return 1


def record_sequence(model: WorldModelAlgorithm, env: VecEnv, length: int) -> SequenceSamples:
    """
    ``length`` steps of the deterministic policy in ``env`` (one episode), in the world model's alignment: step
    t holds o_t and the action a_{t-1} that led to it (zeros at the first).
    """
    obs = env.reset()
    state, start = None, np.ones(1, dtype=bool)
    frames, actions, rewards = [obs], [np.zeros((1, model.policy.model_action_size), np.float32)], [np.zeros(1)]
    for _ in range(length - 1):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        obs, reward, done, _ = env.step(action)
        if done[0]:
            break
        scaled = model.policy.scale_action(action) if isinstance(model.action_space, spaces.Box) else action
        frames.append(obs)
        actions.append(actions_to_model(scaled, model.action_space))
        rewards.append(reward)
        start = done

    def tensor(arrays: list[np.ndarray], dtype: Optional[th.dtype] = th.float32) -> th.Tensor:
        return th.as_tensor(np.stack(arrays, axis=1), dtype=dtype, device=model.device)

    steps = len(frames)
    is_first = th.zeros(1, steps, device=model.device)
    is_first[:, 0] = 1.0
    zeros = th.zeros(1, steps, device=model.device)
    return SequenceSamples(tensor(frames, None), tensor(actions), tensor(rewards), is_first, zeros, zeros)


def save_open_loop_picture(model: WorldModelAlgorithm, env: VecEnv, path: str, length: int = 30) -> None:
    """The world model's open-loop prediction of a fresh episode of the trained policy, as a PNG (image envs)."""
    if not model.policy.world_model.decoder.image_keys:
        return
    model.policy.set_training_mode(False)
    strips = model.policy.world_model.open_loop_strips(record_sequence(model, env, length), n_sequences=1)
    plt.imsave(path, next(iter(strips.values())).cpu().numpy())


def run(
    algo: str,
    env_id: str,
    seed: int,
    timesteps: int,
    eval_freq: int,
    eval_episodes: int,
    out: str,
    tiny: bool = False,
    preset: str = "default",
) -> dict:
    kwargs = hyperparameters(algo, env_id, tiny, preset)
    frame_stack, n_envs = kwargs.pop("frame_stack", 1), kwargs.pop("n_envs", 1)
    name = f"{algo}_{env_id.replace('/', '-')}_{seed}"
    log_path = os.path.join(out, name)
    env, eval_env = make_env(env_id, seed, frame_stack, n_envs), make_env(env_id, 1000 + seed, frame_stack)
    start = time.time()
    if algo == "random":
        model = None
        final, _ = evaluate_policy(RandomAgent(env.action_space), eval_env, n_eval_episodes=eval_episodes)
        steps, curve = [0, timesteps], [float(final)] * 2
    else:
        policy = kwargs.pop("policy", None) or ("CnnPolicy" if is_image_space(env.observation_space) else "MlpPolicy")
        model = {**WORLD_MODELS, **BASELINES}[algo](policy, env, seed=seed, **kwargs)
        # EvalCallback counts vec-env steps, each n_envs env steps
        callback = EvalCallback(
            eval_env, eval_freq=max(eval_freq // n_envs, 1), n_eval_episodes=eval_episodes, log_path=log_path, warn=False
        )
        model.learn(timesteps, callback=callback)
        final, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes)
        evaluations = np.load(os.path.join(log_path, "evaluations.npz"))
        steps, curve = evaluations["timesteps"].tolist(), evaluations["results"].mean(axis=1).tolist()
    wall = time.time() - start
    if isinstance(model, WorldModelAlgorithm):
        # the policy alone (no replay, no optimizers): what examples/quickstart_pixels.py loads
        model.policy.save(os.path.join(log_path, "policy.zip"))
        save_open_loop_picture(model, eval_env, os.path.join(out, f"open_loop_{name}.png"))
    return dict(
        algo=algo,
        env=env_id,
        seed=seed,
        timesteps=timesteps if model is None else model.num_timesteps,
        action_repeat=action_repeat(env),
        final_return=float(final),
        eval_episodes=eval_episodes,
        wall_s=wall,
        curve_steps=steps,
        curve_returns=curve,
    )


class RandomAgent:
    """Uniformly random actions through SB3's ``predict`` signature (for ``evaluate_policy``)."""

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False) -> tuple:
        n_envs = len(episode_start) if episode_start is not None else 1
        return np.stack([self.action_space.sample() for _ in range(n_envs)]), None


def merge_results(path: str, new: dict) -> list[dict]:
    """``results.json`` with ``new`` added, replacing an earlier run of the same algorithm, env and seed."""
    results = json.load(open(path)) if os.path.exists(path) else []
    key = (new["algo"], new["env"], new["seed"])
    results = [r for r in results if (r["algo"], r["env"], r["seed"]) != key] + [new]
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return results


def write_report(results: list[dict], out: str) -> None:
    commands = list(dict.fromkeys(r["command"] for r in results if "command" in r))
    lines = [f"Command: `{command}`" for command in commands] + [
        "",
        "| algorithm | env | seeds | env steps | final eval return per seed | mean ± std | median "
        "| wall time per run (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(results, key=lambda r: (r["env"], ALGOS.index(r["algo"]) if r["algo"] in ALGOS else 99, r["seed"])):
        groups.setdefault((r["algo"], r["env"]), []).append(r)
    for (algo, env_id), runs in groups.items():
        returns = np.array([r["final_return"] for r in runs])
        walls = np.array([r["wall_s"] for r in runs])
        per_seed = ", ".join(f"{r['final_return']:.1f} (seed {r['seed']})" for r in runs)
        lines.append(
            f"| {algo} | {env_id} | {len(runs)} | {runs[0]['timesteps']} | {per_seed} | {returns.mean():.1f} ± "
            f"{returns.std():.1f} | {np.median(returns):.1f} | {np.median(walls):.0f} s |"
        )
    repeats = {r["env"]: r.get("action_repeat", 1) for r in results if r.get("action_repeat", 1) > 1}
    if repeats:
        lines += [
            "",
            "Env steps are agent steps; frames = steps x action repeat ("
            + ", ".join(f"{env_id}: {repeat}" for env_id, repeat in repeats.items())
            + ").",
        ]
    anchors = [anchor for env_id in dict.fromkeys(r["env"] for r in results) for anchor in PUBLISHED.get(env_id, [])]
    if anchors:
        lines += ["", "Published, for reference (paper-size models on GPUs):", *(f"- {anchor}" for anchor in anchors)]
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    for env_id in sorted({r["env"] for r in results}):
        plot_curves([r for r in results if r["env"] == env_id], env_id, out)


def plot_curves(results: list[dict], env_id: str, out: str) -> None:
    """Mean ± std over seeds of each algorithm's evaluations; the random policy as a dashed line."""
    repeat = results[0].get("action_repeat", 1)
    plt.figure(figsize=(5.5, 3.8))
    for algo in [a for a in ALGOS if any(r["algo"] == a for r in results)]:
        runs = [r for r in results if r["algo"] == algo]
        if algo == "random":
            plt.axhline(np.mean([r["final_return"] for r in runs]), color="grey", linestyle="--", label="random")
            continue
        length = min(len(r["curve_steps"]) for r in runs)
        steps = np.array(runs[0]["curve_steps"][:length]) * repeat
        curves = np.array([r["curve_returns"][:length] for r in runs])
        mean, std = curves.mean(axis=0), curves.std(axis=0)
        plt.plot(steps, mean, label=f"{algo} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        plt.fill_between(steps, mean - std, mean + std, alpha=0.2)
    plt.xlabel("env frames" if repeat > 1 else "env steps")
    plt.ylabel("eval return")
    plt.title(env_id)
    plt.legend()
    plt.tight_layout()
    plt.savefig(os.path.join(out, f"curve_{env_id.replace('/', '-')}.png"), dpi=100)
    plt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["dreamer_v1"], choices=ALGOS, help="algorithms to run")
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1"], help="gymnasium ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds, one run each")
    parser.add_argument("--timesteps", type=int, default=20_000, help="agent steps per run")
    parser.add_argument("--eval-freq", type=int, default=2000, help="agent steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", default="runs/benchmark", help="folder of results.json, table.md and the figures")
    parser.add_argument(
        "--preset", choices=["default", "cpu"], default="default", help="cpu: the zoo's cpu/<algo>.yml settings"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny networks and cadence: checks the script, measures nothing")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="FOLDER",
        help="run nothing: merge the results.json of these folders into --out and draw its table and curves from them",
    )
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    if args.combine:
        results = []
        for folder in args.combine:
            for result in json.load(open(os.path.join(folder, "results.json"))):
                results = merge_results(os.path.join(args.out, "results.json"), result)
        write_report(results, args.out)
        return
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
        + ([f"--preset {args.preset}"] if args.preset != "default" else [])
        + (["--tiny"] if args.tiny else [])
    )
    results: list[dict] = []
    for env_id in args.envs:
        for algo in args.algos:
            for seed in args.seeds:
                result = run(
                    algo, env_id, seed, args.timesteps, args.eval_freq, args.eval_episodes, args.out, args.tiny, args.preset
                )
                result["command"] = command
                print(json.dumps({k: v for k, v in result.items() if not k.startswith("curve")}), flush=True)
                results = merge_results(os.path.join(args.out, "results.json"), result)
    write_report(results, args.out)


if __name__ == "__main__":
    main()
