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

Run it alone on the machine: wall times are only comparable without other work beside them. Each run records its
command, the machine (CPU model, CPU count, GPU, torch version) and the date in ``results.json``.

The result and preset tables of README.md and docs/*.md are generated, not typed: each sits between markers,

    <!-- results:docs/benchmarks/pendulum_all -->        a table of that folder's results.json (options: per-seed,
    ...                                                  curves, env=ID,..., algos=NAME,...)
    <!-- /results -->
    <!-- presets -->                                      the zoo YAML entries (presets:dreamer_v3 for one algorithm;
    ...                                                  options: preset=default,cpu, env=PATTERN,...)
    <!-- /presets -->

and ``--write-docs`` rewrites every such block from its source, running nothing; ``--check-docs`` exits with status 1,
listing each block that differs from what its source gives (tests/test_docs_drift.py runs the same check):

    python examples/benchmark.py --write-docs
    python examples/benchmark.py --check-docs
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import glob
import inspect
import json
import os
import platform
import re
import sys
import time
from typing import Any, Callable, NamedTuple, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecTransposeImage

from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.dmc import DMC_TASKS, ENV_ID_PREFIX
from sb3_rssm.common.spaces import actions_to_model
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm
from sb3_rssm.zoo import HYPERPARAMS_DIR, PRESETS, hyperparams_path, load_hyperparams

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
    sampled_eval: bool = False,
) -> dict:
    """
    One training run and its evaluations: the deterministic policy every ``eval_freq`` agent steps and at the end,
    and with ``sampled_eval`` the policy's sampled actions (``predict(deterministic=False)``) beside it, each time.
    """
    kwargs = hyperparameters(algo, env_id, tiny, preset)
    frame_stack, n_envs = kwargs.pop("frame_stack", 1), kwargs.pop("n_envs", 1)
    name = f"{algo}_{env_id.replace('/', '-')}_{seed}"
    log_path = os.path.join(out, name)
    env, eval_env = make_env(env_id, seed, frame_stack, n_envs), make_env(env_id, 1000 + seed, frame_stack)
    start = time.time()
    sampled: dict[str, Any] = {}
    if algo == "random":
        model = None
        final, _ = evaluate_policy(RandomAgent(env.action_space), eval_env, n_eval_episodes=eval_episodes)
        steps, curve = [0, timesteps], [float(final)] * 2
    else:
        policy = kwargs.pop("policy", None) or ("CnnPolicy" if is_image_space(env.observation_space) else "MlpPolicy")
        model = {**WORLD_MODELS, **BASELINES}[algo](policy, env, seed=seed, **kwargs)
        # EvalCallback counts vec-env steps, each n_envs env steps
        callbacks = [
            EvalCallback(
                eval_env, eval_freq=max(eval_freq // n_envs, 1), n_eval_episodes=eval_episodes, log_path=log_path, warn=False
            )
        ]
        if sampled_eval:
            # its own env (seeded as the deterministic one's), so that both evaluations see the same episodes
            sampled_env = make_env(env_id, 1000 + seed, frame_stack)
            callbacks.append(
                EvalCallback(
                    sampled_env,
                    eval_freq=max(eval_freq // n_envs, 1),
                    n_eval_episodes=eval_episodes,
                    log_path=os.path.join(log_path, "sampled"),
                    deterministic=False,
                    warn=False,
                )
            )
        model.learn(timesteps, callback=CallbackList(callbacks))
        final, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes)
        evaluations = np.load(os.path.join(log_path, "evaluations.npz"))
        steps, curve = evaluations["timesteps"].tolist(), evaluations["results"].mean(axis=1).tolist()
        if sampled_eval:
            final_sampled, _ = evaluate_policy(model, sampled_env, n_eval_episodes=eval_episodes, deterministic=False)
            evaluations = np.load(os.path.join(log_path, "sampled", "evaluations.npz"))
            sampled = dict(
                final_return_sampled=float(final_sampled), curve_returns_sampled=evaluations["results"].mean(axis=1).tolist()
            )
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
        **sampled,
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
    """``table.md`` (:func:`results_table`, and the published figures for the envs that have them) and the curves."""
    lines = results_table(results, os.path.join(out, "results.json"))
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


# ---------------------------------------------------------------------------------------------------------------------
# Generated tables: results (from results.json) and presets (from the zoo YAML), for table.md and the docs' marked blocks

#: the repository this script belongs to: README.md and docs/*.md there are the files --write-docs rewrites
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the markdown files with marked blocks, relative to the repository root (glob patterns)
DOC_FILES = ("README.md", "docs/*.md")
#: names in the tables; the keys are what --algos takes
DISPLAY_NAMES = {
    "dreamer_v1": "DreamerV1",
    "dreamer_v3": "DreamerV3",
    "planet": "PlaNet",
    "sac": "SB3 SAC",
    "dqn": "SB3 DQN",
    "ppo": "SB3 PPO",
    "random": "random actions",
}
_BLOCK_OPTIONS = {"results": ("per-seed", "curves", "env", "algos"), "presets": ("preset", "env")}
_BLOCK = re.compile(
    r"^<!-- (?P<kind>results|presets)(?::(?P<arg>[^\s>]+))?(?P<options>(?: +[^\s>]+)*) *-->\n"
    r"(?P<body>.*?)^<!-- /(?P=kind) -->$",
    re.MULTILINE | re.DOTALL,
)
_BLOCK_START = re.compile(r"^<!-- (?:results|presets)\b.*-->$", re.MULTILINE)


class DocBlock(NamedTuple):
    """A marked block of a markdown file: ``<!-- kind:arg options -->`` (its first line), body, ``<!-- /kind -->``."""

    kind: str
    arg: Optional[str]
    options: dict[str, str]
    marker: str
    line: int
    body_start: int
    body_end: int


def machine_description() -> str:
    """What ran this process: CPU model (``/proc/cpuinfo``, else :mod:`platform`), usable CPUs, GPU, torch version."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.lower().startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {th.cuda.get_device_name(0)}" if th.cuda.is_available() else ""
    return f"{model}, {cpus} CPUs{gpu}, torch {th.__version__}"


def _display(algo: str) -> str:
    return DISPLAY_NAMES.get(algo, algo)


def _ordered_groups(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The runs grouped by (algorithm, env): envs in order of appearance, algorithms in :data:`ALGOS` order, seeds sorted."""
    envs = list(dict.fromkeys(r["env"] for r in results))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(
        results, key=lambda r: (envs.index(r["env"]), ALGOS.index(r["algo"]) if r["algo"] in ALGOS else 99, r["seed"])
    ):
        groups.setdefault((r["algo"], r["env"]), []).append(r)
    return groups


def _steps(runs: list[dict]) -> str:
    """Env steps of the runs (a range where they differ); with an action repeat, the frames too."""
    steps = sorted({int(r["timesteps"]) for r in runs})
    text = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,} to {steps[-1]:,}"
    repeat = runs[0].get("action_repeat", 1)
    if repeat > 1:
        text += f" ({_count(steps[0] * repeat)} frames)"
    return text


def _count(n: float) -> str:
    """1000000 -> ``1M``, 100008 -> ``100k``: a frame budget as the papers write it."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else f"{n:.0f}"


def _wall(seconds: float) -> str:
    return f"{seconds:,.0f} s"


def _curve(run: dict) -> str:
    """A run's evaluations (mean return per evaluation): 1 decimal where every one is under 1000 in size, else 0."""
    if run["algo"] == "random":
        return ""
    values = run["curve_returns"]
    digits = 1 if all(abs(v) < 1000 for v in values) else 0
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _sampled(runs: list[dict], per_seed: bool = True) -> str:
    """
    The runs' final returns with sampled actions (``--sampled-eval``): per seed and, for several, their median; with
    ``per_seed=False`` the median alone. A run without that evaluation shows as n/a.
    """
    values = [r.get("final_return_sampled") for r in runs]
    known = [v for v in values if v is not None]
    median = f"**{np.median(known):.1f}**" if known else ""
    if not per_seed:
        return f"median {median}" if median else ""
    text = ", ".join("n/a" if v is None else f"{v:.1f}" for v in values)
    return f"{text} ({median})" if len(runs) > 1 and median else text


def results_table(results: list[dict], source: str, per_seed: bool = False, curves: bool = False) -> list[str]:
    """
    The table of some benchmark runs (``results.json`` records), as markdown lines: final evaluation return per seed,
    mean ± std (over seeds) and median, wall time, and for every row the command that made it (a numbered list under
    the table; "not recorded" for runs written before the script recorded commands), with machine and date where
    the runs recorded them. ``table.md`` and the docs' ``<!-- results:... -->`` blocks are this.

    :param results: the runs
    :param source: where they were read, named under the table (e.g. ``docs/benchmarks/pendulum/results.json``)
    :param per_seed: one row per run, and a row of mean, std and median per algorithm and env with several seeds;
        otherwise one row per algorithm and env
    :param curves: (with ``per_seed``) a column with each run's evaluations during training
    :return: the lines, without trailing newlines
    """
    groups = _ordered_groups(results)
    # numbered in the order the rows first use them
    commands = list(dict.fromkeys(r.get("command") for runs in groups.values() for r in runs))

    def ref(runs: list[dict]) -> str:
        refs = [f"[{commands.index(r.get('command')) + 1}]" for r in runs]
        return refs[0] if len(set(refs)) == 1 else ", ".join(refs)

    # the sampled-action evaluation (--sampled-eval) gets columns only where a run has it: older tables stay as they were
    sampled = any("final_return_sampled" in r for r in results)
    if per_seed:
        evaluations = " | evaluations during training" if curves else ""
        sampled_column = " | sampled actions" if sampled else ""
        lines = [
            f"| algorithm | env | seed | env steps | final eval return{sampled_column}{evaluations} | wall time | command |",
            "|---|---|---|---|---|" + ("---|" if sampled else "") + ("---|" if curves else "") + "---|---|",
        ]
    else:
        sampled_column = "| sampled actions per seed (median) " if sampled else ""
        lines = [
            "| algorithm | env | env steps | seeds | final eval return per seed | mean ± std | median "
            f"{sampled_column}| wall time per run (median) | command per seed |",
            "|---|---|---|---|---|---|---|" + ("---|" if sampled else "") + "---|---|",
        ]
    for (algo, env_id), runs in groups.items():
        returns = np.array([r["final_return"] for r in runs])
        walls = np.array([r["wall_s"] for r in runs])
        seeds = ", ".join(str(r["seed"]) for r in runs)
        if per_seed:
            for r in runs:
                cells = [_display(algo), env_id, str(r["seed"]), _steps([r]), f"{r['final_return']:.1f}"]
                cells += [_sampled([r])] if sampled else []
                cells += [_curve(r)] if curves else []
                lines.append("| " + " | ".join([*cells, _wall(r["wall_s"]), ref([r])]) + " |")
            if len(runs) > 1:
                summary = f"**median {np.median(returns):.1f}** (mean ± std {returns.mean():.1f} ± {returns.std():.1f})"
                cells = [f"{_display(algo)}, {len(runs)} seeds", env_id, seeds, "", summary]
                cells += [_sampled(runs, per_seed=False)] if sampled else []
                cells += [""] if curves else []
                lines.append("| " + " | ".join([*cells, f"median {_wall(np.median(walls))}", ""]) + " |")
        else:
            spread = f"{returns.mean():.1f} ± {returns.std():.1f}" if len(runs) > 1 else ""
            per_seed_returns = ", ".join(f"{r['final_return']:.1f}" for r in runs)
            cells = [_display(algo), env_id, _steps(runs), seeds, per_seed_returns, spread]
            cells += [f"**{np.median(returns):.1f}**"] + ([_sampled(runs)] if sampled else [])
            cells += [_wall(np.median(walls)), ref(runs)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Commands, as recorded in `{source}`:", ""]
    places = {(r.get("machine"), r.get("date")) for r in results}
    for number, command in enumerate(commands, 1):
        runs = [r for r in results if r.get("command") == command]
        text = f"`{command}`" if command is not None else "not recorded (runs written before the script recorded it)"
        recorded = sorted({f"{r['machine']}, {r['date']}" for r in runs if r.get("machine") and r.get("date")})
        if places != {(None, None)}:
            text += f" ({'; '.join(recorded)})" if recorded else " (machine/date: not recorded)"
        lines.append(f"{number}. {text}")
    lines.append("")
    notes = []
    if places == {(None, None)}:
        notes.append("Machine/date: not recorded in these runs.")
    outs = {match[1] for r in results for match in [re.search(r"--out (\S+)", r.get("command") or "")] if match}
    if outs - {os.path.dirname(source)}:
        notes.append("A command's `--out` is where its runs were written first; `--combine` merged them into this folder.")
    repeats = {r["env"]: r["action_repeat"] for r in results if r.get("action_repeat", 1) > 1}
    if repeats:
        notes.append(
            "Env steps are agent steps, each `action_repeat` frames ("
            + ", ".join(f"{env_id}: {repeat}" for env_id, repeat in repeats.items())
            + ")."
        )
    if curves:
        notes.append("Evaluations during training: the mean return of each evaluation, every `--eval-freq` agent steps.")
    notes.append(
        "Final eval return: the mean return of `--eval-episodes` deterministic episodes after training; ± is the std "
        "over seeds."
    )
    if sampled:
        notes.append(
            "Sampled actions: the same evaluation with `predict(deterministic=False)` (the published DreamerV3 curves "
            "are of sampled actions); n/a where a run did not make it."
        )
    lines.append(" ".join(notes))
    return lines


def _policy_default(algorithm: type, policy: str, name: str) -> Any:
    """The default of a ``policy_kwargs`` entry: the first constructor along the policy's MRO that takes ``name``."""
    for cls in algorithm.policy_aliases[policy].__mro__:
        parameters = inspect.signature(cls.__init__).parameters if "__init__" in vars(cls) else {}
        if name in parameters:
            return parameters[name].default
    raise KeyError(f"{algorithm.__name__}'s {policy} takes no {name!r}")


def _model(algo: str, policy: str, policy_kwargs: dict[str, Any]) -> str:
    """The model size of a zoo entry: DreamerV3's ``size`` preset; the RSSM, encoder and CEM sizes of the others."""
    algorithm = WORLD_MODELS[algo]

    def get(name: str) -> Any:
        return policy_kwargs.get(name, _policy_default(algorithm, policy, name))

    if algo == "dreamer_v3":
        given = [f"{name}={value}" for name, value in policy_kwargs.items() if name != "size"]
        return ", ".join([f"`{get('size')}`", *given])
    text = f"RSSM {get('stochastic_size')}/{get('deterministic_size')}/{get('hidden_size')}"
    text += f", conv depth {get('cnn_depth')}" if policy != "MlpPolicy" else f", MLP {get('mlp_units')}"
    if algo == "planet":
        plan = "planning_horizon", "num_candidates", "num_elites", "cem_iterations"
        text += ", CEM " + " / ".join(str(get(name)) for name in plan)
    return text


def preset_rows(hyperparams_dir: str = HYPERPARAMS_DIR) -> list[dict[str, Any]]:
    """
    Every entry of the zoo's YAML files (``<algo>.yml`` and ``<preset>/<algo>.yml`` under ``hyperparams_dir``) with its
    effective settings: the YAML's, else the constructor's defaults.

    :param hyperparams_dir: the folder of the YAML files
    :return: one dict per entry (algo, preset, file, env, policy, model, batch_size, sequence_length, learning_starts,
        train_freq, gradient_steps, replay_ratio, n_timesteps, other: the YAML's other settings)
    """
    import yaml

    shown = {"policy", "policy_kwargs", "batch_size", "sequence_length", "learning_starts", "train_freq", "gradient_steps"}
    rows = []
    for algo, algorithm in WORLD_MODELS.items():
        defaults = inspect.signature(algorithm.__init__).parameters
        for preset in PRESETS:
            path = os.path.join(hyperparams_dir, os.path.relpath(hyperparams_path(algo, preset), HYPERPARAMS_DIR))
            if not os.path.isfile(path):
                continue
            with open(path) as f:
                entries = yaml.safe_load(f) or {}
            for env_id, entry in entries.items():
                kwargs = load_hyperparams(algo, env_id, path=path)
                row: dict[str, Any] = {k: kwargs.get(k, defaults[k].default) for k in shown - {"policy", "policy_kwargs"}}
                policy = kwargs.get("policy", "MlpPolicy")
                train_freq = row["train_freq"]
                if isinstance(train_freq, tuple):
                    train_freq = train_freq[0] if train_freq[1] == "step" else None
                n_envs = entry.get("n_envs", 1)
                replayed = row["gradient_steps"] * row["batch_size"] * row["sequence_length"]
                row.update(
                    algo=algo,
                    preset=preset,
                    file=os.path.relpath(path, hyperparams_dir),
                    env=env_id,
                    policy=policy,
                    model=_model(algo, policy, kwargs.get("policy_kwargs", {})),
                    replay_ratio=replayed / (train_freq * n_envs) if train_freq else None,
                    n_timesteps=entry.get("n_timesteps"),
                    other={k: v for k, v in entry.items() if k not in shown and k != "n_timesteps"},
                )
                rows.append(row)
    return rows


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "per episode"
    return f"{value:,.0f}" if abs(value - round(value)) < 1e-9 else f"{value:.1f}"


def _frames(env_id: str, steps: Optional[int]) -> str:
    """``n_timesteps``, with the frames it is on the dm_control ids (the registered action repeat)."""
    if steps is None:
        return ""
    text = f"{int(steps):,}"
    name = env_id[len(ENV_ID_PREFIX) :].rsplit("-", 2)[0] if env_id.startswith(ENV_ID_PREFIX) else None
    if name in DMC_TASKS:
        text += f" ({_count(int(steps) * DMC_TASKS[name][2])} frames)"
    return text


def presets_table(rows: list[dict[str, Any]]) -> list[str]:
    """The zoo entries ``rows`` (from :func:`preset_rows`) as markdown lines: the docs' ``<!-- presets -->`` blocks."""
    lines = [
        "| algorithm | file | env id | policy | model | batch x sequence | `learning_starts` | `train_freq` "
        "| `gradient_steps` | replay ratio | `n_timesteps` | other settings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        train_freq = row["train_freq"]
        train_freq = train_freq[0] if isinstance(train_freq, tuple) and train_freq[1] == "step" else train_freq
        other = ", ".join(f"`{key}: {value}`" for key, value in row["other"].items())
        cells = [_display(row["algo"]), f"`{row['file']}`", f"`{row['env']}`", row["policy"], row["model"]]
        cells += [f"{row['batch_size']} x {row['sequence_length']}", f"{row['learning_starts']:,}", str(train_freq)]
        cells += [str(row["gradient_steps"]), _ratio(row["replay_ratio"]), _frames(row["env"], row["n_timesteps"]), other]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Generated from `sb3_rssm/zoo/hyperparams/` (`python examples/benchmark.py --write-docs`); what an entry does not "
        "set is the constructor's default. Replay ratio: replayed steps per agent step, `gradient_steps * batch_size * "
        "sequence_length / train_freq` (one env). Model: DreamerV3's `size` preset; for the others the RSSM's "
        "stochastic / deterministic / hidden sizes, the conv encoder's depth or the vector MLP's units, and PlaNet's CEM "
        "horizon / candidates / elites / iterations.",
    ]
    return lines


def _parse_options(kind: str, text: str, where: str) -> dict[str, str]:
    options = {}
    for token in text.split():
        key, _, value = token.partition("=")
        if key not in _BLOCK_OPTIONS[kind]:
            raise ValueError(f"{where}: unknown option {key!r} of a {kind} block (options: {_BLOCK_OPTIONS[kind]})")
        options[key] = value
    return options


def doc_blocks(text: str, where: str = "<text>") -> list[DocBlock]:
    """
    The marked blocks of a markdown text.

    :param text: the text
    :param where: its name in error messages
    :return: the blocks, in order
    :raises ValueError: a start marker without its end marker, or an unknown option
    """
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        options = _parse_options(match["kind"], match["options"], f"{where}:{line}")
        marker = text[match.start() : text.index("\n", match.start())]
        blocks.append(DocBlock(match["kind"], match["arg"], options, marker, line, match.start("body"), match.end("body")))
    starts = {text.count("\n", 0, m.start()) + 1 for m in _BLOCK_START.finditer(text)}
    unclosed = sorted(starts - {block.line for block in blocks})
    if unclosed:
        raise ValueError(
            f"{where}:{unclosed[0]}: a block marker without its end marker (<!-- /results --> or <!-- /presets -->)"
        )
    return blocks


def render_block(block: DocBlock, root: str = REPO_ROOT, hyperparams_dir: str = HYPERPARAMS_DIR) -> str:
    """
    What a marked block should hold: a results table of ``<root>/<folder>/results.json`` or a presets table.

    :param block: the block (its kind, argument and options)
    :param root: the repository root, which results folders are relative to
    :param hyperparams_dir: the zoo's YAML folder (presets blocks)
    :return: the block's body, ending with a newline
    """

    def selected(option: str, value: str) -> bool:
        patterns = block.options.get(option)
        return not patterns or any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns.split(","))

    if block.kind == "results":
        if not block.arg:
            raise ValueError(f"{block.marker}: a results block names its folder, e.g. <!-- results:docs/benchmarks/x -->")
        source = f"{block.arg.rstrip('/')}/results.json"
        if not os.path.isfile(os.path.join(root, source)):
            raise ValueError(f"{block.marker}: there is no {source}")
        with open(os.path.join(root, source)) as f:
            runs = [r for r in json.load(f) if selected("env", r["env"]) and selected("algos", r["algo"])]
        if not runs:
            raise ValueError(f"{block.marker}: no run of {source} passes its filters")
        lines = results_table(runs, source, per_seed="per-seed" in block.options, curves="curves" in block.options)
    else:
        algos = block.arg.split(",") if block.arg else list(WORLD_MODELS)
        rows = [
            row
            for row in preset_rows(hyperparams_dir)
            if row["algo"] in algos and selected("preset", row["preset"]) and selected("env", row["env"])
        ]
        if not rows:
            raise ValueError(f"{block.marker}: no zoo entry passes its filters")
        lines = presets_table(rows)
    return "\n".join(lines) + "\n"


def refresh_doc_text(
    text: str, where: str = "<text>", root: str = REPO_ROOT, hyperparams_dir: str = HYPERPARAMS_DIR
) -> tuple[str, list[str]]:
    """
    A markdown text with every marked block regenerated, and the blocks that differed.

    :param text: the text
    :param where: its name in the report and error messages
    :param root: the repository root (results folders are relative to it)
    :param hyperparams_dir: the zoo's YAML folder
    :return: the new text, and ``"<where>:<line> <marker>"`` for each block whose body changed
    """
    pieces, stale, position = [], [], 0
    for block in doc_blocks(text, where):
        try:
            body = render_block(block, root, hyperparams_dir)
        except ValueError as error:
            raise ValueError(f"{where}:{block.line} {error}") from error
        pieces += [text[position : block.body_start], body]
        position = block.body_end
        if text[block.body_start : block.body_end] != body:
            stale.append(f"{where}:{block.line} {block.marker}")
    return "".join([*pieces, text[position:]]), stale


def doc_paths(root: str = REPO_ROOT) -> list[str]:
    """The markdown files of :data:`DOC_FILES` under ``root``."""
    return [path for pattern in DOC_FILES for path in sorted(glob.glob(os.path.join(root, pattern)))]


def refresh_docs(root: str = REPO_ROOT, write: bool = False, hyperparams_dir: str = HYPERPARAMS_DIR) -> list[str]:
    """
    Regenerate every marked block of README.md and docs/*.md; with ``write``, save the files that changed.

    :param root: the repository root
    :param write: rewrite the files (``--write-docs``); otherwise only compare (``--check-docs``)
    :param hyperparams_dir: the zoo's YAML folder
    :return: the blocks that differed from their source, as ``"<file>:<line> <marker>"``
    """
    stale = []
    for path in doc_paths(root):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new_text, changed = refresh_doc_text(text, os.path.relpath(path, root), root, hyperparams_dir)
        stale += changed
        if write and changed:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new_text)
    return stale


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
        "--sampled-eval",
        action="store_true",
        help="also evaluate the policy's sampled actions (deterministic=False) at every evaluation and at the end",
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="FOLDER",
        help="run nothing: merge the results.json of these folders into --out and draw its table and curves from them",
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument(
        "--write-docs",
        action="store_true",
        help="run nothing: rewrite every <!-- results:FOLDER --> and <!-- presets --> block of README.md and docs/*.md",
    )
    docs.add_argument(
        "--check-docs",
        action="store_true",
        help="run nothing: exit 1, listing them, if any of those blocks differs from what its source gives",
    )
    parser.add_argument("--root", default=REPO_ROOT, help="repository whose docs --write-docs / --check-docs read")
    args = parser.parse_args()
    if args.write_docs or args.check_docs:
        try:
            stale = refresh_docs(args.root, write=args.write_docs)
        except ValueError as error:  # a block that cannot be generated: a missing folder, an unclosed marker, ...
            sys.exit(f"error: {error}")
        verb = "rewrote" if args.write_docs else "differs from its source"
        print("\n".join(f"{block}: {verb}" for block in stale) or "every marked block matches its source")
        if stale and args.check_docs:
            print("run: python examples/benchmark.py --write-docs", file=sys.stderr)
            sys.exit(1)
        return
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
        + (["--sampled-eval"] if args.sampled_eval else [])
    )
    results: list[dict] = []
    machine = machine_description()
    for env_id in args.envs:
        for algo in args.algos:
            for seed in args.seeds:
                date = datetime.date.today().isoformat()  # the day the run started
                result = run(
                    algo,
                    env_id,
                    seed,
                    args.timesteps,
                    args.eval_freq,
                    args.eval_episodes,
                    args.out,
                    args.tiny,
                    args.preset,
                    args.sampled_eval,
                )
                result.update(command=command, machine=machine, date=date)
                print(json.dumps({k: v for k, v in result.items() if not k.startswith("curve")}), flush=True)
                results = merge_results(os.path.join(args.out, "results.json"), result)
    write_report(results, args.out)


if __name__ == "__main__":
    main()
