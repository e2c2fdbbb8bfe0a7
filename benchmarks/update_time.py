"""
Seconds per DreamerV1 / PlaNet training update at the paper configuration (batch 50 x 50, horizon 15,
64x64x3 pixels or a 24-dim vector, 6-dim actions), split into the world-model phase and the actor
and value phase (imagination included), on
random but correctly shaped batches (replay sampling is not timed, as in the TorchRL peer script).

    python -m benchmarks.update_time --obs pixels --updates 3

Prints one JSON line per configuration: medians over ``--updates`` timed updates after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import Logger

from sb3_rssm import DreamerV1
from sb3_rssm.common.type_aliases import SequenceSamples


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs", choices=["pixels", "state"], default="pixels")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seq", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads > 0:
        th.set_num_threads(args.threads)
    pixels = args.obs == "pixels"
    observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8) if pixels else spaces.Box(-np.inf, np.inf, (24,), np.float32)
    env = ShapeEnv(observation_space, spaces.Box(-1, 1, (6,), np.float32))
    model = DreamerV1(
        "CnnPolicy" if pixels else "MlpPolicy",
        env,
        batch_size=args.batch,
        sequence_length=args.seq,
        imagination_horizon=args.horizon,
        device=args.device,
        seed=0,
    )
    model.set_logger(Logger(None, []))
    device = model.device
    batch = make_batch(model.observation_space, args.batch, args.seq, 6, device)

    def sync() -> None:
        if device.type == "cuda":
            th.cuda.synchronize()

    totals, world_model_phase, behavior_phase = [], [], []
    for i in range(args.updates + 1):
        sync()
        start = time.perf_counter()
        posterior, _ = model._train_world_model(batch)
        sync()
        middle = time.perf_counter()
        model._train_behavior(posterior)
        sync()
        end = time.perf_counter()
        if i > 0:  # the first round is the warm-up
            world_model_phase.append(middle - start)
            behavior_phase.append(end - middle)
            totals.append(end - start)
    total = statistics.median(totals)
    world_model = statistics.median(world_model_phase)
    behavior = statistics.median(behavior_phase)
    print(
        json.dumps(
            dict(
                benchmark="dreamer_v1_update",
                obs=args.obs,
                batch=args.batch,
                seq=args.seq,
                horizon=args.horizon,
                device=str(device),
                threads=th.get_num_threads(),
                torch=th.__version__,
                machine=platform.processor() or platform.machine(),
                update_s=round(total, 4),
                world_model_s=round(world_model, 4),
                actor_value_s=round(behavior, 4),
                updates=args.updates,
            )
        )
    )


if __name__ == "__main__":
    main()
