"""
The prepared GPU check (run through ``benchmarks/gpu_check.sh``): every figure issue 17 asks of a GPU, in one
command that ends within 8 minutes on one H100 or H200. Each section runs in its own process under a time budget,
so that one that hangs or fails costs only itself; its figures are printed as they come and gathered into
``<out>/gpu_check.json`` and ``<out>/gpu_check.md``.

Sections:

* ``pytest``: ``tests/test_cuda.py`` (float32, bf16, fp16, pixels, resizing, save / load / resume and the captured
  update on CUDA);
* ``update``: the DreamerV1 paper-config pixel update (batch 50 x 50, horizon 15) eager, with bf16, captured as a
  CUDA graph (float32, TF32, bf16) and with ``torch.compile(mode="reduce-overhead")``, in updates per second and as
  a share of the GPU's measured dense matmul rate; TorchRL's eager update in the same process tree
  (``benchmarks/peer_torchrl_dreamer.py``, when torchrl is importable);
* ``update_v3``: the DreamerV3 paper-config pixel update (model size ``size200m``, batch 16 x 64, horizon 15), eager
  in float32 and with bf16;
* ``cem``: PlaNet's CEM at the paper config (1000 candidates, 10 iterations, horizon 12), 1 and 16 envs;
* ``smoke``: DreamerV1 learning the point-mass task from 64x64 pixels on CUDA for about 90 s (losses must fall).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Callable

import torch as th

ROOT = pathlib.Path(__file__).resolve().parent.parent
PEER = ROOT / "benchmarks" / "peer_torchrl_dreamer.py"
# seconds per section; together 7.5 minutes, inside the 8 the check may take
BUDGETS = {"pytest": 120, "update": 170, "update_v3": 50, "cem": 40, "smoke": 70}
PREFIX = "RESULT "


def emit(**row: Any) -> None:
    """Print one figure as soon as it exists: a section killed by its budget keeps what it printed."""
    print(PREFIX + json.dumps(row), flush=True)


def section_pytest() -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = (result.stdout + result.stderr).strip().splitlines()
    emit(returncode=result.returncode, summary=lines[-1] if lines else "", failures=[ln for ln in lines if "FAILED" in ln])


def section_update() -> None:
    from benchmarks import update_time
    from benchmarks.machine import matmul_flops_per_s

    peaks = {
        "fp32": matmul_flops_per_s(8192, device="cuda"),
        "bf16": matmul_flops_per_s(8192, device="cuda", dtype=th.bfloat16),
    }
    emit(kind="peak", **{f"{k}_tflop_s": v / 1e12 for k, v in peaks.items()})
    gflop = None
    configs = [
        ("eager, float32", None, None, False),
        ("eager, bf16", "bf16", None, False),
        ("cuda_graph, float32", None, "cuda_graph", False),
        ("cuda_graph, TF32", None, "cuda_graph", True),
        ("cuda_graph, bf16", "bf16", "cuda_graph", False),
        ("reduce-overhead, float32", None, "reduce-overhead", False),
    ]
    for name, precision, compile_update, tf32 in configs:
        th.backends.cuda.matmul.allow_tf32 = th.backends.cudnn.allow_tf32 = tf32
        start = time.perf_counter()
        model, batch = update_time.build(
            "pixels", 50, 50, 15, "cuda", mixed_precision=precision, compile_update=compile_update
        )
        if gflop is None:
            gflop = sum(update_time.count_update_flops(model, batch).values()) / 1e9
        seconds = update_time.time_whole_update(model, batch, updates=20)
        peak = peaks["bf16" if precision == "bf16" else "fp32"]
        emit(
            kind="update",
            config=name,
            update_s=seconds,
            updates_per_s=1.0 / seconds,
            gflop=gflop,
            share_of_matmul_peak=gflop * 1e9 / seconds / peak,
            total_s=time.perf_counter() - start,
        )
        del model, batch
        th.cuda.empty_cache()
    th.backends.cuda.matmul.allow_tf32 = th.backends.cudnn.allow_tf32 = False
    if PEER.exists() and importlib.util.find_spec("torchrl") is not None:
        from benchmarks.run import peer_update

        for precision in (None, "bf16"):
            seconds, phases = peer_update(sys.executable, "pixels", "cuda", 10, precision, script=PEER)
            emit(kind="torchrl", config=f"TorchRL eager, {precision or 'float32'}", update_s=seconds, phases=phases)
    else:
        emit(kind="torchrl", skipped="no torchrl importable: run benchmarks/gpu_wheels.sh first")


def section_update_v3() -> None:
    from benchmarks import update_time
    from benchmarks.machine import matmul_flops_per_s

    for precision in (None, "bf16"):
        peak = matmul_flops_per_s(8192, device="cuda", dtype=th.bfloat16 if precision else th.float32)
        model, batch = update_time.build_v3("pixels", "size200m", device="cuda", mixed_precision=precision)
        timing = update_time.time_v3_update(model, batch, updates=5)
        emit(
            kind="update_v3",
            config=f"size200m, eager, {precision or 'float32'}",
            update_s=timing["update_s"],
            updates_per_s=1.0 / timing["update_s"],
            gflop=timing["gflop"],
            share_of_matmul_peak=timing["gflop"] * 1e9 / timing["update_s"] / peak,
        )
        del model, batch
        th.cuda.empty_cache()


def section_cem() -> None:
    from benchmarks import cem_time

    world_model, planner = cem_time.build(1000, "cuda")
    for n_envs in (1, 16):
        emit(kind="cem", n_envs=n_envs, plan_s=cem_time.time_cem(world_model, planner, n_envs, repeats=10))


def section_smoke() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.logger import configure

    from sb3_rssm import DreamerV1
    from sb3_rssm.common.envs import PointMassEnv

    model = DreamerV1(
        "CnnPolicy",
        PointMassEnv(pixels=True),
        learning_starts=300,
        batch_size=16,
        sequence_length=15,
        train_freq=30,
        gradient_steps=20,
        imagination_horizon=10,
        learning_rate=1e-3,
        actor_learning_rate=3e-4,
        value_learning_rate=3e-4,
        policy_kwargs=dict(cnn_depth=8, deterministic_size=64, hidden_size=64, actor_init_std=1.0, free_bits=1.0),
        device="cuda",
        seed=0,
    )
    model.set_logger(configure(None, []))
    start = time.perf_counter()
    model.learn(600)
    batch = model.replay_buffer.sample(16)  # a fixed batch: the world model's loss on it must fall

    def model_loss() -> float:
        with th.no_grad():
            return float(model.policy.world_model.loss(batch)[0])

    first = model_loss()
    while time.perf_counter() - start < 50:
        model.learn(300, reset_num_timesteps=False)
    last = model_loss()
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=3)
    emit(
        kind="smoke",
        steps=model.num_timesteps,
        updates=model._n_updates,
        model_loss_first=first,
        model_loss_last=last,
        losses_fell=last < first,
        eval_return=mean,
        seconds=time.perf_counter() - start,
    )


SECTIONS: dict[str, Callable[[], None]] = {
    "pytest": section_pytest,
    "update": section_update,
    "update_v3": section_update_v3,
    "cem": section_cem,
    "smoke": section_smoke,
}


def run_section(name: str) -> dict[str, Any]:
    """One section in its own process, under its budget: its figures, its status, and the end of its output."""
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--section", name]
    start = time.perf_counter()
    log = pathlib.Path(f"/tmp/gpu_check_{name}.log")
    with open(log, "w") as f:
        process = subprocess.Popen(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        try:
            status = "ok" if process.wait(timeout=BUDGETS[name]) == 0 else f"exit {process.returncode}"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            status = f"timed out after {BUDGETS[name]} s"
    output = log.read_text().splitlines()
    rows = [json.loads(line[len(PREFIX) :]) for line in output if line.startswith(PREFIX)]
    print(f"[{name}] {status} in {time.perf_counter() - start:.0f} s", flush=True)
    for row in rows:
        print(f"[{name}] {json.dumps(row)}", flush=True)
    tail = [line for line in output if not line.startswith(PREFIX)][-15:]
    if status != "ok":
        print("\n".join(f"[{name}] {line}" for line in tail), flush=True)
    return dict(status=status, seconds=time.perf_counter() - start, rows=rows, tail=tail)


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"GPU check on {machine['gpu']}, torch {machine['torch']} (CUDA {machine['cuda']}), {machine['date']}.",
        "Command: `bash benchmarks/gpu_check.sh` (after `bash benchmarks/gpu_wheels.sh` where a registry is reachable).",
        "",
        "| section | status | seconds |",
        "|---|---|---|",
        *(f"| {name} | {r['status']} | {r['seconds']:.0f} |" for name, r in results["sections"].items()),
        "",
        "| DreamerV1 paper-config pixel update | seconds | updates per second | share of the matmul peak |",
        "|---|---|---|---|",
    ]
    notes = []
    for row in results["sections"].get("update", {}).get("rows", []):
        if row.get("kind") == "update":
            lines.append(
                f"| {row['config']} | {row['update_s']:.4f} | {row['updates_per_s']:.1f} | {row['share_of_matmul_peak']:.0%} |"
            )
        elif row.get("kind") == "torchrl" and "update_s" in row:
            lines.append(f"| {row['config']} | {row['update_s']:.4f} | {1 / row['update_s']:.1f} | |")
        elif row.get("kind") == "torchrl":
            notes.append(f"TorchRL: {row['skipped']}")
        elif row.get("kind") == "peak":
            fp32, bf16 = row["fp32_tflop_s"], row["bf16_tflop_s"]
            notes.append(f"Dense matmul rate measured: fp32 {fp32:.0f}, bf16 {bf16:.0f} TFLOP/s.")
    lines += ["", *notes, ""]
    v3_rows = results["sections"].get("update_v3", {}).get("rows", [])
    if v3_rows:
        lines += [
            "| DreamerV3 paper-config pixel update (16 x 64) | seconds | updates per second | share of the matmul peak |",
            "|---|---|---|---|",
            *(
                f"| {row['config']} | {row['update_s']:.4f} | {row['updates_per_s']:.1f} | {row['share_of_matmul_peak']:.0%} |"
                for row in v3_rows
            ),
            "",
        ]
    for row in results["sections"].get("cem", {}).get("rows", []):
        milliseconds = row["plan_s"] * 1000
        lines.append(f"PlaNet CEM (1000 / 100 / 10, horizon 12), {row['n_envs']} env(s): {milliseconds:.1f} ms per action.")
    for row in results["sections"].get("smoke", {}).get("rows", []):
        lines.append(
            f"Pixel smoke run: {row['steps']} steps, {row['updates']} updates in {row['seconds']:.0f} s; model loss "
            f"{row['model_loss_first']} -> {row['model_loss_last']}; eval return {row['eval_return']:.1f} (random -27.6)."
        )
    for row in results["sections"].get("pytest", {}).get("rows", []):
        lines.append(f"tests/test_cuda.py: {row['summary']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="folder of gpu_check.json and .md")
    parser.add_argument("--section", choices=sorted(SECTIONS), help="run one section in this process (used internally)")
    args = parser.parse_args()
    if args.section:
        if not th.cuda.is_available():
            raise SystemExit("the GPU check needs a CUDA GPU")
        SECTIONS[args.section]()
        return
    if not th.cuda.is_available():
        raise SystemExit("the GPU check needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    results: dict[str, Any] = dict(
        machine=dict(
            gpu=th.cuda.get_device_name(),
            torch=th.__version__,
            cuda=th.version.cuda,
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        ),
        sections={},
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SECTIONS:
        results["sections"][name] = run_section(name)
        # written after every section: a check cut short still leaves what it measured
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
        (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
