"""
Seconds per DreamerV1 training update at the paper configuration (batch 50 x 50, horizon 15,
64x64x3 pixels or a 24-dim vector, 6-dim actions), split into the world-model, actor and value
phases (imagination is part of the actor phase), on random but correctly shaped batches (replay
sampling is not timed, as in the TorchRL peer script), with each phase's FLOPs counted analytically;
and seconds per DreamerV3 update at its paper configuration (batch 16 x 64, horizon 15, one of its
model sizes), whole (its losses share one backward pass, so it has no phases to split).

    python -m benchmarks.update_time --obs pixels --updates 3
    python -m benchmarks.update_time --algo dreamer_v3 --size size12m --obs pixels
    python -m benchmarks.update_time --algo dreamer_v3 --size size1m --obs state --batch 16 --seq 16 \
        --compile-update losses --updates 30

Prints one JSON line: medians (DreamerV1's phases) or the mean (DreamerV3's whole update) over ``--updates``
timed updates after one warm-up; for DreamerV3 also the first update's seconds, which include compiling (the on-disk
compile caches of earlier runs, in the system's temporary folder, shorten it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Optional, Union

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import Logger

from benchmarks.flops import FlopCounter, OpFlopCounter
from sb3_rssm import DreamerV1, DreamerV3
from sb3_rssm.common.type_aliases import SequenceSamples

PHASES = ("world_model", "actor", "value")


class ShapeEnv(gym.Env):
    """An env that only carries spaces (the update is timed on synthetic batches)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def make_batch(observation_space: spaces.Box, batch: int, length: int, action_size: int, device: th.device) -> SequenceSamples:
    if observation_space.dtype == np.uint8:
        observations = th.randint(0, 256, (batch, length, *observation_space.shape), dtype=th.uint8, device=device)
    else:
        observations = th.randn(batch, length, *observation_space.shape, device=device)
    is_first = th.zeros(batch, length, device=device)
    is_first[:, 0] = 1
    zeros = th.zeros(batch, length, device=device)
    actions = th.rand(batch, length, action_size, device=device) * 2 - 1
    return SequenceSamples(observations, actions, th.randn(batch, length, device=device), is_first, zeros, zeros)


def build(
    obs: str, batch: int, seq: int, horizon: int, device: str = "cpu", algorithm: type = DreamerV1, **kwargs: Any
) -> tuple[Union[DreamerV1, DreamerV3], SequenceSamples]:
    """
    A model of ``algorithm`` (DreamerV1 at the paper's sizes unless ``kwargs`` say otherwise) and a synthetic batch
    for it: 64x64x3 pixels or a 24-dim vector, 6-dim actions.
    """
    pixels = obs == "pixels"
    observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8) if pixels else spaces.Box(-np.inf, np.inf, (24,), np.float32)
    env = ShapeEnv(observation_space, spaces.Box(-1, 1, (6,), np.float32))
    model = algorithm(
        "CnnPolicy" if pixels else "MlpPolicy",
        env,
        batch_size=batch,
        sequence_length=seq,
        imagination_horizon=horizon,
        device=device,
        seed=0,
        **kwargs,
    )
    model.set_logger(Logger(None, []))
    return model, make_batch(model.observation_space, batch, seq, 6, model.device)


def build_v3(
    obs: str,
    size: str,
    batch: int = 16,
    seq: int = 64,
    horizon: int = 15,
    device: str = "cpu",
    cnn_depth: Optional[int] = None,
    cnn_strided: bool = False,
    **kwargs: Any,
) -> tuple[DreamerV3, SequenceSamples]:
    """
    A DreamerV3 of model size ``size`` (a key of ``sb3_rssm.dreamer_v3.policies.MODEL_SIZES``), by default at the
    paper's batch and horizon, and a synthetic batch for it; ``cnn_depth`` overrides the size's conv depth and
    ``cnn_strided`` picks the stride-2 convolutions.
    """
    policy_kwargs = dict(size=size, cnn_strided=cnn_strided, **({} if cnn_depth is None else dict(cnn_depth=cnn_depth)))
    return build(obs, batch, seq, horizon, device, DreamerV3, policy_kwargs=policy_kwargs, **kwargs)


def run_phases(model: DreamerV1, batch: SequenceSamples) -> list[float]:
    """One full update; returns the end time of each phase (after a device sync)."""

    def now() -> float:
        if model.device.type == "cuda":
            th.cuda.synchronize()
        return time.perf_counter()

    times = [now()]
    posterior, _ = model._train_world_model(batch)
    times.append(now())
    features, returns, weights, _ = model._train_actor(posterior)
    times.append(now())
    model._train_value(features, returns, weights)
    # the three optimizers step together after the last backward pass: counted in the value phase
    model.update.step()
    times.append(now())
    return times


def time_update(model: DreamerV1, batch: SequenceSamples, updates: int = 3) -> dict[str, float]:
    """Median seconds of each phase and of the whole update over ``updates`` updates after one warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in (*PHASES, "update")}
    for i in range(updates + 1):
        times = run_phases(model, batch)
        if i == 0:
            continue
        for name, start, end in zip(PHASES, times, times[1:]):
            samples[name].append(end - start)
        samples["update"].append(times[-1] - times[0])
    return {f"{name}_s": statistics.median(values) for name, values in samples.items()}


def time_whole_update(model: Union[DreamerV1, DreamerV3], batch: SequenceSamples, updates: int = 20, warmup: int = 5) -> float:
    """
    Median-free mean seconds of whole updates as training runs them (``model._update_runner``: eager, a captured CUDA
    graph or torch.compile), after ``warmup`` untimed ones (enough for a capture's warm-up and the capture itself).
    """
    model.policy.set_training_mode(True)

    def sync() -> None:
        if model.device.type == "cuda":
            th.cuda.synchronize()

    for _ in range(warmup):
        model._update_runner(batch)
    sync()
    start = time.perf_counter()
    for _ in range(updates):
        model._update_runner(batch)
    sync()
    return (time.perf_counter() - start) / updates


def time_v3_update(model: DreamerV3, batch: SequenceSamples, updates: int = 3) -> dict[str, float]:
    """
    Mean seconds of whole DreamerV3 updates (losses, one backward pass, the gated optimizer steps and the slow
    critic) over ``updates`` updates after one warm-up (:func:`time_whole_update`), the seconds of the first update
    (which compiles, under ``compile_update``), and the update's FLOPs: every matmul and convolution that runs,
    forward and backward (:class:`~benchmarks.flops.OpFlopCounter`: the block-diagonal GRU is a batched matmul, which
    the layer hooks of :class:`~benchmarks.flops.FlopCounter` do not see).
    """
    model.policy.set_training_mode(True)
    start = time.perf_counter()
    model._update_runner(batch)
    if model.device.type == "cuda":
        th.cuda.synchronize()
    first = time.perf_counter() - start
    seconds = time_whole_update(model, batch, updates=updates, warmup=1)
    with OpFlopCounter() as counter:
        model._update_runner(batch)
    return dict(update_s=seconds, first_update_s=first, gflop=counter.total / 1e9)


def count_update_flops(model: DreamerV1, batch: SequenceSamples) -> dict[str, int]:
    """FLOPs of each phase of one update (forward and backward matmuls and convolutions)."""
    flops = {}
    with FlopCounter(model.policy) as counter:
        posterior, _ = model._train_world_model(batch)
    flops["world_model"] = counter.total
    with FlopCounter(model.policy) as counter:
        features, returns, weights, _ = model._train_actor(posterior)
    flops["actor"] = counter.total
    with FlopCounter(model.policy) as counter:
        model._train_value(features, returns, weights)
    model.update.step()
    flops["value"] = counter.total
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=["dreamer_v1", "dreamer_v3"], default="dreamer_v1")
    parser.add_argument("--size", default="size12m", help="DreamerV3's model size (--algo dreamer_v3)")
    parser.add_argument("--cnn-depth", type=int, help="DreamerV3's conv depth (default: the size's)")
    parser.add_argument("--cnn-strided", action="store_true", help="DreamerV3's stride-2 convolutions")
    parser.add_argument("--obs", choices=["pixels", "state"], default="pixels")
    parser.add_argument("--batch", type=int, help="sequences per batch (default: the paper's, 50 for v1, 16 for v3)")
    parser.add_argument("--seq", type=int, help="sequence length (default: the paper's, 50 for v1, 64 for v3)")
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed-precision", choices=["bf16"], default=None)
    parser.add_argument(
        "--compile-update",
        choices=["imagination", "losses", "reduce-overhead"],
        default=None,
        help="DreamerV3's compile_update",
    )
    args = parser.parse_args()
    if args.threads > 0:
        th.set_num_threads(args.threads)
    v3 = args.algo == "dreamer_v3"
    batch_size = args.batch or (16 if v3 else 50)
    seq = args.seq or (64 if v3 else 50)
    common = dict(
        benchmark=f"{args.algo}_update",
        obs=args.obs,
        batch=batch_size,
        seq=seq,
        horizon=args.horizon,
        mixed_precision=args.mixed_precision,
        compile_update=args.compile_update,
        threads=th.get_num_threads(),
        torch=th.__version__,
    )
    if v3:
        model, batch = build_v3(
            args.obs,
            args.size,
            batch_size,
            seq,
            args.horizon,
            args.device,
            cnn_depth=args.cnn_depth,
            cnn_strided=args.cnn_strided,
            mixed_precision=args.mixed_precision,
            compile_update=args.compile_update,
        )
        timing = time_v3_update(model, batch, args.updates)
        result = dict(
            common,
            size=args.size,
            cnn_depth=args.cnn_depth,
            cnn_strided=args.cnn_strided,
            device=str(model.device),
            update_s=round(timing["update_s"], 4),
        )
        result["first_update_s"] = round(timing["first_update_s"], 1)
        result["gflop"] = round(timing["gflop"], 1)
    else:
        if args.compile_update:
            parser.error("--compile-update times DreamerV3's whole update (--algo dreamer_v3)")
        model, batch = build(args.obs, batch_size, seq, args.horizon, args.device, mixed_precision=args.mixed_precision)
        result = dict(
            common,
            device=str(model.device),
            **{k: round(v, 4) for k, v in time_update(model, batch, args.updates).items()},
            gflop={k: round(v / 1e9, 1) for k, v in count_update_flops(model, batch).items()},
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
