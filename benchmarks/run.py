"""
The benchmark harness: every performance figure of ``docs/benchmarks.md`` in one run, on one machine,
with nothing else running.

    python -m benchmarks.run                                # all sections, CPU, 2 threads
    python -m benchmarks.run --peer-python ~/.venvs/torchrl-peer/bin/python   # with TorchRL's update beside ours
    python -m benchmarks.run --sections update cem --device cuda

Writes ``docs/benchmarks/harness/<device>.json`` and ``docs/benchmarks/harness/scaling_<device>.png``, and prints
the markdown tables; with ``--write-docs`` it also puts them between the ``harness`` markers of ``docs/benchmarks.md``.
Every timing is a median over several runs after a warm-up; the torch thread count is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from benchmarks import cem_time, update_time
from benchmarks.machine import matmul_flops_per_s
from sb3_rssm import DreamerV1
from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.memory import HUGE_PAGES_VARIABLE, transparent_huge_pages_mode

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
OUT = ROOT / "docs" / "benchmarks" / "harness"
PEER = ROOT / "benchmarks" / "peer_torchrl_dreamer.py"
PEER_V3 = ROOT / "benchmarks" / "peer_torchrl_dreamer_v3.py"
BEGIN, END = "<!-- harness:begin -->", "<!-- harness:end -->"
SECTIONS = ("update", "update_v3", "update_v3_peer", "cem", "acting", "memory", "scaling")


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = dict(
        cpu=cpu_name(),
        cpu_count=os.cpu_count(),
        threads=th.get_num_threads(),
        torch=th.__version__,
        device=device,
        matmul_gflop_per_s=matmul_flops_per_s(device=device) / 1e9,
        # importing sb3_rssm sets it (unless set); the peer's interpreter inherits this environment
        huge_pages=os.environ.get(HUGE_PAGES_VARIABLE),
        kernel_thp_mode=transparent_huge_pages_mode(),
    )
    if device.startswith("cuda"):
        info["gpu"] = th.cuda.get_device_name()
    return info


def update_section(device: str, updates: int, peer_python: str | None) -> list[dict[str, Any]]:
    rows = []
    for obs, precision in (("pixels", None), ("state", None), ("pixels", "bf16"), ("state", "bf16")):
        model, batch = update_time.build(obs, 50, 50, 15, device, mixed_precision=precision)
        row: dict[str, Any] = dict(obs=obs, mixed_precision=precision, **update_time.time_update(model, batch, updates))
        row["gflop"] = {k: v / 1e9 for k, v in update_time.count_update_flops(model, batch).items()}
        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        del model, batch
        if peer_python:
            row["torchrl_update_s"], row["torchrl_phases_s"] = peer_update(peer_python, obs, device, updates, precision)
        if obs == "pixels" and precision is None and device == "cpu":
            # what huge pages buy each side: both again in fresh interpreters with the variable at 0
            row["without_huge_pages"] = dict(update_s=own_update_without_huge_pages(updates))
            if peer_python:
                row["without_huge_pages"]["torchrl_update_s"] = peer_update(
                    peer_python, obs, device, updates, precision, huge_pages="0"
                )[0]
        rows.append(row)
        print(json.dumps(dict(section="update", **row)), flush=True)
    return rows


def update_v3_section(device: str, updates: int, sizes: list[str]) -> list[dict[str, Any]]:
    """DreamerV3's whole update at its paper configuration (batch 16 x 64, horizon 15) for each model size."""
    rows = []
    for obs in ("pixels", "state"):
        for size in sizes:
            model, batch = update_time.build_v3(obs, size, device=device)
            row: dict[str, Any] = dict(obs=obs, size=size, **update_time.time_v3_update(model, batch, updates))
            del model, batch
            rows.append(row)
            print(json.dumps(dict(section="update_v3", **row)), flush=True)
    return rows


def environment(huge_pages: str | None) -> dict[str, str]:
    """This process's environment, with the huge-pages variable at ``huge_pages`` when given."""
    return {**os.environ, **({HUGE_PAGES_VARIABLE: huge_pages} if huge_pages is not None else {})}


def update_v3_peer_section(
    device: str, updates: int, sizes: list[str], shapes: list[tuple[int, int]], peer_python: str | None
) -> list[dict[str, Any]]:
    """
    DreamerV3's whole update beside TorchRL's (``benchmarks/peer_torchrl_dreamer_v3.py``) on the same work, float32,
    eager: for each observation kind, model size and batch shape (sequences x steps), horizon 15. Ours runs with the
    stride-2 convolutions (``cnn_strided``) on pixels, the only image layers TorchRL builds (and ours' CPU preset's).
    """
    rows = []
    for obs in ("pixels", "state"):
        for size in sizes:
            for batch, seq in shapes:
                model, samples = update_time.build_v3(obs, size, batch, seq, device=device, cnn_strided=obs == "pixels")
                row: dict[str, Any] = dict(obs=obs, size=size, batch=batch, seq=seq)
                row.update(update_time.time_v3_update(model, samples, updates))
                del model, samples
                if peer_python:
                    row["torchrl_update_s"] = peer_update_v3(peer_python, obs, size, batch, seq, device, updates)
                rows.append(row)
                print(json.dumps(dict(section="update_v3_peer", **row)), flush=True)
    return rows


def peer_update_v3(python: str, obs: str, size: str, batch: int, seq: int, device: str, updates: int) -> float:
    """TorchRL's DreamerV3 update on the same work, float32, eager, in its own interpreter; median seconds."""
    command = [python, str(PEER_V3), "--obs", obs, "--size", size, "--batch", str(batch), "--seq", str(seq)]
    command += ["--horizon", "15", "--autocast", "off", "--updates", str(updates)]
    command += ["--threads", str(th.get_num_threads()), "--device", device.split(":")[0]]
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment(None))
    fields = dict(item.split("=", 1) for item in result.stdout.strip().splitlines()[-1].split())
    return float(fields["torchrl_dreamer_v3_update_s"])


def peer_update(
    python: str,
    obs: str,
    device: str,
    updates: int,
    precision: str | None = None,
    huge_pages: str | None = None,
    script: pathlib.Path | None = None,
) -> tuple[float, dict[str, float]]:
    """
    TorchRL's update on the same work (and the same autocast), in its own interpreter, run alone after ours.
    It inherits this process's environment, huge pages included, unless ``huge_pages`` says otherwise.

    :param script: the peer script (default: benchmarks/peer_torchrl_dreamer.py)
    :return: median seconds of the whole update, and of its world-model, actor and value phases
    """
    command = [python, str(script or PEER), "--obs", obs, "--batch", "50", "--seq", "50", "--horizon", "15"]
    command += ["--autocast", precision or "off"]
    command += ["--updates", str(updates), "--threads", str(th.get_num_threads()), "--device", device.split(":")[0]]
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment(huge_pages))
    lines = result.stdout.strip().splitlines()
    fields = dict(item.split("=", 1) for item in lines[-1].split())
    # "update 0: total=9.274s (to_float=0.019 model=6.622 actor=2.025 value=0.608) ..."
    phases: dict[str, list[float]] = {"world_model": [], "actor": [], "value": []}
    for line in lines:
        if line.startswith("update "):
            values = dict(item.strip("()s").split("=", 1) for item in line.split() if "=" in item)
            # the peer scales pixels in a phase of its own (to_float); ours does it inside the world model's
            phases["world_model"].append(float(values["model"]) + float(values.get("to_float", 0.0)))
            for name in ("actor", "value"):
                phases[name].append(float(values[name]))
    medians = {name: statistics.median(v) for name, v in phases.items() if v}
    return float(fields["torchrl_dreamer_update_s"]), medians


def own_update_without_huge_pages(updates: int) -> float:
    """Our float32 pixel update in a fresh interpreter with ``THP_MEM_ALLOC_ENABLE=0`` (read once per process)."""
    command = [sys.executable, "-m", "benchmarks.update_time", "--obs", "pixels", "--updates", str(updates)]
    command += ["--threads", str(th.get_num_threads())]
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment("0"), cwd=ROOT)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["update_s"])


def cem_section(device: str, repeats: int, flops_per_s: float) -> list[dict[str, Any]]:
    rows = []
    world_model, planner = cem_time.build(1000, device)
    for n_envs in (1, 4):
        seconds = cem_time.time_cem(world_model, planner, n_envs, repeats)
        gflop = cem_time.plan_flops(world_model, planner, n_envs) / 1e9
        rows.append(dict(n_envs=n_envs, plan_s=seconds, gflop=gflop, bound_s=gflop * 1e9 / flops_per_s))
        print(json.dumps(dict(section="cem", **rows[-1])), flush=True)
    return rows


def steps_per_second(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def acting_section(steps: int) -> dict[str, Any]:
    """``learn()`` with training off against the raw vec env, on Pendulum-v1, default MlpPolicy."""

    def make_env() -> DummyVecEnv:
        return DummyVecEnv([lambda: Monitor(gym.make("Pendulum-v1"))])

    raw = make_env()
    raw.seed(0)
    raw.reset()
    raw.action_space.seed(0)
    actions = [np.array([raw.action_space.sample()]) for _ in range(steps)]
    iterator = iter(actions * 2)
    steps_per_second(lambda: raw.step(next(iterator)), 200)
    raw_sps = steps_per_second(lambda: raw.step(next(iterator)), steps)
    result: dict[str, Any] = dict(env="Pendulum-v1", steps=steps, raw_vec_env_steps_per_s=raw_sps)
    # warm-up (random actions, still filtered into the belief) and acting with the actor: no update either way.
    # SB3's own SAC in the same two modes shows what SB3's collection loop costs by itself.
    for algorithm, prefix in ((DreamerV1, "learn"), (SAC, "sac_learn")):
        for name, learning_starts in (("warm_up", 10**9), ("actor", 0)):
            model = algorithm("MlpPolicy", make_env(), learning_starts=learning_starts, train_freq=1, gradient_steps=0, seed=0)
            model.learn(200)
            start = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            result[f"{prefix}_{name}_steps_per_s"] = steps / (time.perf_counter() - start)
    print(json.dumps(dict(section="acting", **result)), flush=True)
    return result


def memory_section() -> dict[str, Any]:
    capacity = 1000
    buffer = SequenceReplayBuffer(
        capacity, spaces.Box(0, 255, (3, 64, 64), np.uint8), spaces.Box(-1, 1, (6,), np.float32), sequence_length=50
    )
    result = dict(replay_bytes_per_64x64x3_transition=buffer.nbytes / capacity)
    print(json.dumps(dict(section="memory", **result)), flush=True)
    return result


def scaling_section(device: str, updates: int, repeats: int) -> dict[str, Any]:
    update_rows = []
    for batch in (16, 32, 50):
        for seq in (25, 50):
            model, samples = update_time.build("pixels", batch, seq, 15, device)
            update_rows.append(
                dict(batch=batch, seq=seq, update_s=update_time.time_update(model, samples, updates)["update_s"])
            )
            print(json.dumps(dict(section="scaling_update", **update_rows[-1])), flush=True)
    cem_rows = []
    for candidates, n_envs in ((250, 1), (500, 1), (1000, 1), (1000, 4), (1000, 16)):
        world_model, planner = cem_time.build(candidates, device)
        cem_rows.append(
            dict(candidates=candidates, n_envs=n_envs, plan_s=cem_time.time_cem(world_model, planner, n_envs, repeats))
        )
        print(json.dumps(dict(section="scaling_cem", **cem_rows[-1])), flush=True)
    return dict(update=update_rows, cem=cem_rows)


def plot_scaling(scaling: dict[str, Any], path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for seq in (25, 50):
        rows = [r for r in scaling["update"] if r["seq"] == seq]
        left.plot([r["batch"] for r in rows], [r["update_s"] for r in rows], marker="o", label=f"sequence length {seq}")
    left.set(xlabel="batch size (sequences)", ylabel="seconds per update", title="DreamerV1 update, 64x64 pixels")
    left.legend()
    single = [r for r in scaling["cem"] if r["n_envs"] == 1]
    many = [r for r in scaling["cem"] if r["candidates"] == 1000]
    right.plot([r["candidates"] for r in single], [r["plan_s"] for r in single], marker="o", label="1 env, by candidates")
    right.plot(
        [r["n_envs"] * 1000 for r in many], [r["plan_s"] for r in many], marker="s", label="1000 candidates, by envs (x1000)"
    )
    right.set(
        xlabel="candidate sequences per plan", ylabel="seconds per action", title="PlaNet CEM", xscale="log", yscale="log"
    )
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def fraction(gflop: float, seconds: float, peak: float) -> str:
    return f"{gflop / seconds / peak:.0%}"


def markdown(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    peak = m["matmul_gflop_per_s"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_count']} cores"
    lines = [
        f"Command: `{command}` on {where}, torch {m['torch']}, {m['threads']} torch threads, device `{m['device']}`.",
        f"Reference: dense fp32 matmul at {peak:.0f} GFLOP/s (2048x2048, median of 20 after 1 s of warm-up).",
        "",
    ]
    if "update" in results:
        lines += [
            "| DreamerV1 update (batch 50 x 50, horizon 15) | world model | actor | value | whole update | GFLOP | "
            "share of matmul peak | TorchRL, same run |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in results["update"]:
            gflop = sum(row["gflop"].values())
            peer = f"{row['torchrl_update_s']:.2f} s" if "torchrl_update_s" in row else "not run"
            if row.get("torchrl_phases_s"):
                peer += " (" + " / ".join(f"{row['torchrl_phases_s'][name]:.2f}" for name in update_time.PHASES) + ")"
            label = "64x64x3 pixels" if row["obs"] == "pixels" else "24-dim vector"
            if row.get("mixed_precision"):
                label += f", {row['mixed_precision']} autocast (option)"
            phases = " | ".join(
                f"{row[f'{name}_s']:.2f} s ({fraction(row['gflop'][name], row[f'{name}_s'], peak)})"
                for name in update_time.PHASES
            )
            lines.append(
                f"| {label} | {phases} | **{row['update_s']:.2f} s** | {gflop:.0f} "
                f"| {fraction(gflop, row['update_s'], peak)} | {peer} |"
            )
        lines += [
            "",
            "In brackets: that phase's FLOPs per second as a share of the matmul reference; for TorchRL, its "
            "world-model / actor / value phases in seconds.",
        ]
        for row in results["update"]:
            if "without_huge_pages" in row:
                off = row["without_huge_pages"]
                peer = f", TorchRL {off['torchrl_update_s']:.2f} s" if "torchrl_update_s" in off else ""
                lines.append(
                    f"Huge pages ({HUGE_PAGES_VARIABLE}={m.get('huge_pages')}, kernel THP mode {m.get('kernel_thp_mode')}; "
                    "the TorchRL run inherits the setting): with the variable at 0, the float32 pixel update takes "
                    f"{off['update_s']:.2f} s{peer}."
                )
        lines.append("")
    if "update_v3" in results:
        lines += [
            "| DreamerV3 update (batch 16 x 64, horizon 15) | model size | whole update | GFLOP | share of matmul peak |",
            "|---|---|---|---|---|",
        ]
        for row in results["update_v3"]:
            label = "64x64x3 pixels" if row["obs"] == "pixels" else "24-dim vector"
            lines.append(
                f"| {label} | `{row['size']}` | **{row['update_s']:.2f} s** | {row['gflop']:.0f} "
                f"| {fraction(row['gflop'], row['update_s'], peak)} |"
            )
        lines += [
            "",
            "DreamerV3's losses share one backward pass, so its update is timed whole; its FLOPs are every matmul and "
            "convolution that runs, forward and backward (`benchmarks/flops.py`, `OpFlopCounter`).",
            "",
        ]
    if "update_v3_peer" in results:
        lines += [
            "| DreamerV3 update beside TorchRL 0.14.1 (float32, eager, horizon 15) | model size | batch x sequence "
            "| ours | GFLOP | share of matmul peak | TorchRL, same run | TorchRL / ours |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in results["update_v3_peer"]:
            label = "64x64x3 pixels (stride-2 convolutions)" if row["obs"] == "pixels" else "24-dim vector"
            peer = row.get("torchrl_update_s")
            ratio = "" if peer is None else f"{peer / row['update_s']:.2f}x"
            lines.append(
                f"| {label} | `{row['size']}` | {row['batch']} x {row['seq']} | **{row['update_s']:.2f} s** "
                f"| {row['gflop']:.1f} | {fraction(row['gflop'], row['update_s'], peak)} "
                f"| {'not run' if peer is None else f'{peer:.2f} s'} "
                f"| {ratio} |"
            )
        lines += [
            "",
            "Ours: the mean of the timed updates; TorchRL's: their median (`benchmarks/peer_torchrl_dreamer_v3.py`, "
            "whose docstring lists what each computes that the other does not). GFLOP: ours' matmuls and convolutions.",
            "",
        ]
    if "cem" in results:
        lines += [
            "| PlaNet CEM (12 / 1000 / 100 / 10) | seconds per action | GFLOP | lower bound | ratio |",
            "|---|---|---|---|---|",
        ]
        for row in results["cem"]:
            lines.append(
                f"| {row['n_envs']} env{'s' if row['n_envs'] > 1 else ''} | {row['plan_s']:.3f} s | {row['gflop']:.0f} "
                f"| {row['bound_s']:.3f} s | {row['plan_s'] / row['bound_s']:.2f} |"
            )
        lines.append("")
    if "acting" in results:
        a = results["acting"]
        raw = a["raw_vec_env_steps_per_s"]
        lines += [
            "| acting on Pendulum-v1 (default MlpPolicy, no updates) | steps per second | share of raw vec env |",
            "|---|---|---|",
            f"| raw `DummyVecEnv` + `Monitor`, random actions | {raw:,.0f} | 100% |",
        ]
        for key, label in (
            ("learn_warm_up", "DreamerV1 `learn()` during warm-up (random actions, belief filtered)"),
            ("learn_actor", "DreamerV1 `learn()` acting with the actor"),
            ("sac_learn_warm_up", "for scale: SB3's SAC `learn()` during warm-up (random actions)"),
            ("sac_learn_actor", "for scale: SB3's SAC `learn()` acting with its actor"),
        ):
            if f"{key}_steps_per_s" in a:
                sps = a[f"{key}_steps_per_s"]
                lines.append(f"| {label} | {sps:,.0f} | {sps / raw:.0%} |")
        lines.append("")
    if "memory" in results or "update" in results:
        if "memory" in results:
            lines.append(
                f"Replay memory: {results['memory']['replay_bytes_per_64x64x3_transition']:,.0f} bytes per 64x64x3 transition."
            )
        if "update" in results:
            rss = results["update"][0]["peak_rss_gib"]
            lines.append(f"Peak RSS of the harness after the float32 pixel update: {rss:.2f} GiB.")
        lines.append("")
    if "scaling" in results:
        lines += ["| update (pixels) | sequence length 25 | sequence length 50 |", "|---|---|---|"]
        for batch in (16, 32, 50):
            cells = [
                f"{r['update_s']:.2f} s"
                for seq in (25, 50)
                for r in results["scaling"]["update"]
                if r["batch"] == batch and r["seq"] == seq
            ]
            lines.append(f"| batch {batch} | " + " | ".join(cells) + " |")
        lines += ["", "| CEM | seconds per action |", "|---|---|"]
        for row in results["scaling"]["cem"]:
            lines.append(f"| {row['candidates']} candidates, {row['n_envs']} env(s) | {row['plan_s']:.3f} s |")
        lines.append("")
    return "\n".join(lines)


def write_docs(text: str, device: str) -> None:
    begin, end = BEGIN.replace("harness", f"harness:{device}"), END.replace("harness", f"harness:{device}")
    doc = DOCS.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + f"\n\n## Harness figures ({device})\n\n{block}\n"
    DOCS.write_text(doc)


def build_parser() -> argparse.ArgumentParser:
    """The harness's command line (every option documented in ``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="which parts to measure")
    parser.add_argument(
        "--device", default="cpu", help="torch device of the update, CEM and scaling sections (cpu, cuda, cuda:1, ...)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (torch.set_num_threads)")
    parser.add_argument("--updates", type=int, default=3, help="timed updates per configuration (after one warm-up)")
    parser.add_argument(
        "--v3-sizes",
        nargs="+",
        default=["size1m", "size12m"],
        help="DreamerV3 model sizes of the update_v3 section (the paper's default, size200m, takes minutes per update "
        "on a CPU: add it on a GPU)",
    )
    parser.add_argument(
        "--v3-shapes",
        nargs="+",
        default=["16x16", "16x64"],
        help="batch shapes (sequences x steps) of the update_v3_peer section: our presets' 16x16, the paper's 16x64",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed plans per CEM configuration (after one warm-up)")
    parser.add_argument(
        "--acting-steps",
        type=int,
        default=3000,
        help="env steps timed per configuration of the acting section (learn() without updates, ours and SAC's)",
    )
    parser.add_argument(
        "--peer-python",
        help="interpreter of a venv with torchrl installed (docs/benchmarks.md, Performance, says how to make one): "
        "run TorchRL's Dreamer updates (benchmarks/peer_torchrl_dreamer.py and, in the update_v3_peer section, "
        "peer_torchrl_dreamer_v3.py) beside ours",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also put the new tables into this device's harness block of docs/benchmarks.md (without it they are "
        "only printed)",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=OUT, help="folder of the results JSON (<device>.json) and the scaling plot"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """
    Measure the chosen sections, write the JSON and the plot under ``--out``, print the tables, and with
    ``--write-docs`` put them into docs/benchmarks.md.

    :param argv: the command-line arguments (``sys.argv[1:]`` when None)
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    th.set_num_threads(args.threads)
    # the command as anyone can rerun it: the peer interpreter's path is this machine's, and whether the docs
    # were rewritten changes no figure
    argv = [a for a in argv if a != "--write-docs"]
    if args.peer_python:
        argv = [("<torchrl venv>/bin/python" if a == args.peer_python else a) for a in argv]
        argv = [a.replace(args.peer_python, "<torchrl venv>/bin/python") for a in argv]
    command = " ".join(["python -m benchmarks.run", *argv])
    results: dict[str, Any] = dict(machine=machine(args.device))
    print(json.dumps(results["machine"]), flush=True)
    peak = results["machine"]["matmul_gflop_per_s"] * 1e9
    if "update" in args.sections:
        results["update"] = update_section(args.device, args.updates, args.peer_python)
    if "update_v3" in args.sections:
        results["update_v3"] = update_v3_section(args.device, args.updates, args.v3_sizes)
    if "update_v3_peer" in args.sections:
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.v3_shapes]
        results["update_v3_peer"] = update_v3_peer_section(
            args.device, args.updates, args.v3_sizes, shapes, args.peer_python  # type: ignore[arg-type]
        )
    if "cem" in args.sections:
        results["cem"] = cem_section(args.device, args.repeats, peak)
    if "acting" in args.sections:
        results["acting"] = acting_section(args.acting_steps)
    if "memory" in args.sections:
        results["memory"] = memory_section()
    if "scaling" in args.sections:
        results["scaling"] = scaling_section(args.device, max(1, args.updates - 1), max(1, args.repeats - 2))
    device = args.device.split(":")[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{device}.json").write_text(json.dumps(results, indent=1))
    if "scaling" in results:
        plot_scaling(results["scaling"], args.out / f"scaling_{device}.png", f"{results['machine']['cpu']} / {device}")
    text = markdown(results, command.strip())
    print(text)
    if args.write_docs:
        write_docs(text, device)


if __name__ == "__main__":
    main()
