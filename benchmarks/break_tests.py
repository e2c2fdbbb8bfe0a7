"""
Checks that the CI pixel learning test (``tests/test_learning.py::test_dreamer_learns_from_pixels``) can fail: runs it
with the image path broken on purpose, one break per run, and prints whether the test noticed.

    python -m benchmarks.break_pixel_test                       # all breaks, about 200 s each on 1 thread
    python -m benchmarks.break_pixel_test --breaks no_reward_head

Breaks: ``predict_upside_down`` (``predict`` turns every frame upside down after SB3's conversion),
``train_channels_swapped`` (training batches come with the red and green channels swapped; acting sees the env's
frames), ``no_reward_head`` (the reward head is replaced by zeros, in training and in imagination).
Each break runs in its own process, so that a patch never leaks into the next.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BREAKS = ("predict_upside_down", "train_channels_swapped", "no_reward_head")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def apply_break(name: str) -> None:
    """Patches this process's sb3_rssm classes with the break ``name``."""
    import torch as th

    from sb3_rssm.common.buffers import SequenceReplayBuffer
    from sb3_rssm.common.policies import BeliefPolicy
    from sb3_rssm.common.world_model import WorldModel

    if name == "predict_upside_down":
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
    elif name == "no_reward_head":

        def zeros(self: WorldModel, features: th.Tensor) -> th.Tensor:
            return features.new_zeros(features.shape[:-1])

        WorldModel.reward = zeros  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown break {name!r}: choose from {BREAKS}")


def run_one(name: str) -> None:
    """Runs the test with the break ``name`` in this process and prints one line: noticed or not, and why."""
    apply_break(name)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import test_learning
    import torch as th

    th.set_num_threads(1)  # as the test suite runs it
    start = time.perf_counter()
    try:
        test_learning.test_dreamer_learns_from_pixels()
    except AssertionError as error:
        print(f"{name}: the test FAILED, as it should ({str(error).splitlines()[0]}), {time.perf_counter() - start:.0f} s")
        return
    print(f"{name}: the test PASSED: this break goes unnoticed, {time.perf_counter() - start:.0f} s")
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--breaks", nargs="+", default=list(BREAKS), choices=BREAKS)
    parser.add_argument("--one", choices=BREAKS, help=argparse.SUPPRESS)  # the child process of one break
    args = parser.parse_args()
    if args.one:
        run_one(args.one)
        return
    command = [sys.executable, "-m", "benchmarks.break_pixel_test", "--one"]
    unnoticed = [name for name in args.breaks if subprocess.run([*command, name], cwd=ROOT).returncode]
    if unnoticed:
        raise SystemExit(f"breaks the test did not notice: {unnoticed}")


if __name__ == "__main__":
    main()
