"""
Checks that the CI learning tests (``tests/test_learning.py``) can fail: runs each with its agent broken on purpose,
one break per run, and prints whether the test noticed.

    python -m benchmarks.break_tests                                  # every (test, break) pair, minutes each
    python -m benchmarks.break_tests --tests planet_point_mass --breaks blind
    python -m benchmarks.break_tests --tests dreamer_learns_point_mass --breaks none --seed 1   # the working agent

Breaks (each applies to the tests listed in :data:`CASES`):

- ``blind``: the point-mass env's observations are all zeros (training and evaluation): the target, drawn per
  episode, cannot be seen, so no policy beats -15 (the tests ask for -8);
- ``no_reward_head``: the reward head is replaced by zeros (in training and in imagination; DreamerV3: in
  imagination, where its actor and critic learn);
- ``actor_gradient_cut``: the actor's outputs carry no gradient to its parameters (Dreamer agents);
- ``random_planner_scores``: PlaNet's CEM scores its candidates with random numbers instead of imagined returns;
- ``predict_upside_down`` (pixel test): ``predict`` turns every frame upside down after SB3's conversion;
- ``train_channels_swapped`` (pixel test): training batches come with the red and green channels swapped;
- ``none`` (only when asked for): nothing is broken, to see the working agent pass, e.g. at another ``--seed`` (the
  point-mass tests' seed, 0 in CI); the tests print what they measure beside their thresholds.

Each run is its own process, so that a patch never leaks into the next. The script exits non-zero if a break goes
unnoticed. ``tests/test_break_tests.py`` runs the cheapest pair in CI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

#: test (a function of tests/test_learning.py, without its ``test_`` prefix) -> the breaks it must notice
CASES: dict[str, tuple[str, ...]] = {
    "dreamer_learns_point_mass": ("blind", "no_reward_head", "actor_gradient_cut"),
    "dreamer_learns_discrete_point_mass": ("blind", "actor_gradient_cut"),
    "planet_learns_point_mass": ("blind", "no_reward_head", "random_planner_scores"),
    "dreamer_v3_learns_point_mass": ("blind", "no_reward_head", "actor_gradient_cut"),
    "dreamer_learns_from_pixels": ("predict_upside_down", "train_channels_swapped", "no_reward_head"),
}
BREAKS = tuple(dict.fromkeys(name for breaks in CASES.values() for name in breaks))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def apply_break(name: str) -> None:
    """Patches this process's sb3_rssm classes with the break ``name`` (``none``: nothing)."""
    import numpy as np
    import torch as th

    from sb3_rssm.common.buffers import SequenceReplayBuffer
    from sb3_rssm.common.envs import PointMassEnv
    from sb3_rssm.common.policies import BeliefPolicy
    from sb3_rssm.common.world_model import WorldModel
    from sb3_rssm.dreamer_v1.policies import Actor
    from sb3_rssm.dreamer_v3.policies import ActorV3
    from sb3_rssm.dreamer_v3.world_model import DreamerV3WorldModel
    from sb3_rssm.planet.planning import CEMPlanner

    if name == "none":
        pass
    elif name == "blind":
        observe = PointMassEnv._obs

        def zeros_obs(self: PointMassEnv) -> np.ndarray:
            return np.zeros_like(observe(self))

        PointMassEnv._obs = zeros_obs  # type: ignore[method-assign]
    elif name == "no_reward_head":

        def zeros(self: WorldModel, features: th.Tensor) -> th.Tensor:
            return features.new_zeros(features.shape[:-1])

        WorldModel.reward = zeros  # type: ignore[method-assign]
        DreamerV3WorldModel.reward = zeros  # type: ignore[method-assign,assignment]
    elif name == "actor_gradient_cut":
        for actor in (Actor, ActorV3):
            distribution = actor.distribution

            def cut(self, features, _distribution=distribution):  # type: ignore[no-untyped-def]
                with th.no_grad():
                    return _distribution(self, features)

            actor.distribution = cut  # type: ignore[method-assign]
    elif name == "random_planner_scores":

        def random_returns(self, model, start, candidates):  # type: ignore[no-untyped-def]
            return th.randn(candidates.shape[0], dtype=candidates.dtype, device=candidates.device)

        CEMPlanner._evaluate = random_returns  # type: ignore[method-assign]
    elif name == "predict_upside_down":
        convert = BeliefPolicy.obs_to_tensor

        def upside_down(self, observation):  # type: ignore[no-untyped-def]
            tensor, vectorized = convert(self, observation)
            return tensor.flip(-2), vectorized

        BeliefPolicy.obs_to_tensor = upside_down  # type: ignore[method-assign]
    elif name == "train_channels_swapped":
        samples = SequenceReplayBuffer._get_samples

        def swapped(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            batch = samples(self, *args, **kwargs)
            return batch._replace(observations=batch.observations[:, :, [1, 0, 2]])  # (batch, time, channel, H, W)

        SequenceReplayBuffer._get_samples = swapped  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown break {name!r}: choose from {BREAKS}")


def run_one(test: str, name: str, seed: int | None = None) -> bool:
    """
    Runs ``test`` with the break ``name`` in this process; prints one line.

    :param seed: the seed of the tests' shared settings (``COMMON``), or None for the tests' own
    :return: whether the test behaved as it should: failed under a break, passed under ``none``
    """
    apply_break(name)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import test_learning
    import torch as th

    if seed is not None:
        test_learning.COMMON["seed"] = seed

    th.set_num_threads(1)  # as the test suite runs it
    start = time.perf_counter()
    try:
        getattr(test_learning, f"test_{test}")()
    except AssertionError as error:
        why = str(error).splitlines()[0]
        verdict = "as it should" if name != "none" else "but nothing was broken"
        print(f"{test} / {name}: the test FAILED, {verdict} ({why}), {time.perf_counter() - start:.0f} s")
        return name != "none"
    verdict = "this break goes unnoticed" if name != "none" else "as it should"
    print(f"{test} / {name}: the test PASSED: {verdict}, {time.perf_counter() - start:.0f} s")
    return name == "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--breaks", nargs="+", default=list(BREAKS), choices=(*BREAKS, "none"))
    parser.add_argument("--seed", type=int, default=None, help="the point-mass tests' seed (default: the tests' own, 0)")
    parser.add_argument("--one", nargs=2, metavar=("TEST", "BREAK"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        sys.exit(0 if run_one(*args.one, seed=args.seed) else 1)
    pairs = [(test, name) for test in args.tests for name in (*CASES[test], "none") if name in args.breaks]
    command = [sys.executable, "-m", "benchmarks.break_tests", "--one"]
    seed = [] if args.seed is None else ["--seed", str(args.seed)]
    wrong = [pair for pair in pairs if subprocess.run([*command, *pair, *seed], cwd=ROOT).returncode]
    if wrong:
        raise SystemExit(f"tests that did not behave as they should (unnoticed breaks, or failures with none): {wrong}")


if __name__ == "__main__":
    main()
