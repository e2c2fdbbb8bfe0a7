"""
Seconds per PlaNet CEM action at the paper configuration (horizon 12, 1000 candidates, 100 elites,
10 iterations, RSSM 30/200/200, reward head 3x300: PlaNet's defaults), for 1 and 4 envs, beside the arithmetic lower
bound: the FLOPs of one plan's dense layers divided by the machine's dense fp32 matmul FLOP/s,
measured in the same run.

    python -m benchmarks.cem_time --envs 1 4 --repeats 5

Prints one JSON line per env count (medians over ``--repeats`` plans after one warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch as th
from gymnasium import spaces

from benchmarks.machine import matmul_flops_per_s
from sb3_rssm.common.world_model import WorldModel
from sb3_rssm.planet.planning import CEMPlanner
from sb3_rssm.planet.policies import MlpPolicy


def linear_macs(module: th.nn.Module) -> int:
    """Multiply-accumulates of one row through every Linear / GRUCell in ``module``."""
    macs = 0
    for m in module.modules():
        if isinstance(m, th.nn.Linear):
            macs += m.in_features * m.out_features
        elif isinstance(m, th.nn.GRUCell):
            macs += 3 * (m.input_size + m.hidden_size) * m.hidden_size
    return macs


def plan_flops(world_model: WorldModel, planner: CEMPlanner, n_envs: int) -> int:
    """FLOPs of one plan: every candidate of every env goes through one prior step and the reward head per step."""
    rssm = world_model.rssm
    step = linear_macs(rssm.prior_input) + linear_macs(rssm.gru) + linear_macs(rssm.prior_head)
    step += linear_macs(world_model.reward_head)
    rows = n_envs * planner.num_candidates * planner.horizon * planner.iterations
    return 2 * step * rows


def build(candidates: int = 1000, device: str = "cpu") -> tuple[WorldModel, CEMPlanner]:
    """PlaNet's world model and CEM planner with the defaults of its policy (the paper's), for 24-dim vectors."""
    th.manual_seed(0)
    policy = MlpPolicy(
        spaces.Box(-np.inf, np.inf, (24,), np.float32),
        spaces.Box(-1, 1, (6,), np.float32),
        lambda _: 1e-3,
        num_candidates=candidates,
        num_elites=min(100, candidates),
    )
    return policy.world_model.to(device), policy.planner


def time_cem(world_model: WorldModel, planner: CEMPlanner, n_envs: int, repeats: int = 5) -> float:
    """Median seconds of one plan for ``n_envs`` envs over ``repeats`` plans after one warm-up."""
    belief = world_model.rssm.initial(n_envs)
    cuda = belief.deterministic.is_cuda
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        planner.plan(world_model, belief)
        if cuda:
            th.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    world_model, planner = build(args.candidates)
    flops_per_s = matmul_flops_per_s()
    for n_envs in args.envs:
        seconds = time_cem(world_model, planner, n_envs, args.repeats)
        flops = plan_flops(world_model, planner, n_envs)
        bound = flops / flops_per_s
        print(
            json.dumps(
                dict(
                    benchmark="planet_cem_action",
                    n_envs=n_envs,
                    candidates=args.candidates,
                    threads=th.get_num_threads(),
                    torch=th.__version__,
                    plan_s=round(seconds, 5),
                    plan_gflop=round(flops / 1e9, 3),
                    matmul_gflop_per_s=round(flops_per_s / 1e9, 1),
                    lower_bound_s=round(bound, 5),
                    ratio_to_bound=round(seconds / bound, 2),
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
