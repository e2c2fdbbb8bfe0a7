"""
The disk-backed sequence replay against the in-memory one (issue 37): 64x64x3 transitions written, then sampled in
batches of 16 x 64 (DreamerV3's) and 50 x 50 (DreamerV1's), with a warm page cache and a cold one (the files'
pages dropped with ``posix_fadvise(DONTNEED)``), the process's resident memory after each phase, the files' size,
and ``save_replay_buffer`` + ``load_replay_buffer`` of the disk buffer through a model (copied into the model's folder,
and ``in_place=True``). Prints one JSON line per measurement and writes them all to ``--out``.

    python -m benchmarks.disk_replay --transitions 1000000 --compare 100000 --path /tmp/replay_bench

Needs about 3.1x the buffer's size free on disk: the live files, a checkpoint's copy, and the load's copy of it,
which lands beside the live files before it replaces them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import time
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_rssm.common.buffers import SequenceReplayBuffer

IMAGE = spaces.Box(0, 255, (3, 64, 64), np.uint8)
ACTION = spaces.Box(-1, 1, (6,), np.float32)


def rss() -> dict[str, float]:
    """Resident memory now and at its peak (GiB), from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, kib = line.split()[:2]
                values[key.rstrip(":")] = int(kib) / 2**20
    return {"rss_gib": round(values["VmRSS"], 3), "peak_rss_gib": round(values["VmHWM"], 3)}


def reset_peak() -> None:
    """Start VmHWM (the peak resident memory) afresh from the current resident memory (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def fill(buffer: SequenceReplayBuffer, steps: int, episode: int = 500) -> float:
    """Write ``steps`` transitions (frames cycled from 64 random ones, episodes of ``episode`` steps); steps per second."""
    frames = np.random.default_rng(0).integers(0, 255, (64, 1, *IMAGE.shape), dtype=np.uint8)
    action, reward = np.zeros((1, *buffer.action_space.shape), np.float32), np.zeros(1, np.float32)
    start = time.perf_counter()
    for t in range(steps):
        done = np.array([(t + 1) % episode == 0])
        buffer.add(frames[t % 64], frames[(t + 1) % 64], action, reward, done, [{}])
    return steps / (time.perf_counter() - start)


def sample_rate(buffer: SequenceReplayBuffer, batch: int, length: int, batches: int) -> float:
    """Batches per second of ``buffer.sample`` (to CPU tensors)."""
    buffer.sample(batch, sequence_length=length)
    start = time.perf_counter()
    for _ in range(batches):
        buffer.sample(batch, sequence_length=length)
    return batches / (time.perf_counter() - start)


def drop_cache(buffer: SequenceReplayBuffer) -> None:
    """Evict the disk buffer's files from the page cache (clean pages: no root needed)."""
    for array in buffer.disk_arrays():
        os.fsync(array.fd)
        os.posix_fadvise(array.fd, 0, 0, os.POSIX_FADV_DONTNEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=1_000_000, help="size of the disk buffer")
    parser.add_argument("--compare", type=int, default=100_000, help="size of both buffers in the speed comparison")
    parser.add_argument("--path", default="/tmp/replay_bench", help="folder for the files (emptied first)")
    parser.add_argument("--batches", type=int, default=100, help="batches per sampling measurement")
    parser.add_argument("--out", default=None, help="JSON file of all measurements")
    args = parser.parse_args()
    th.set_num_threads(1)
    shutil.rmtree(args.path, ignore_errors=True)
    results: list[dict[str, Any]] = []

    def record(**values: Any) -> None:
        values.update(rss())
        results.append(values)
        print(json.dumps(values), flush=True)

    shapes = [(16, 64), (50, 50)]
    # speed at a size both fit: the in-memory buffer first, then the disk one (warm and cold cache)
    memory = SequenceReplayBuffer(args.compare, IMAGE, ACTION, sequence_length=64, max_memory_share=None)
    record(phase="write", storage="memory", transitions=args.compare, steps_per_s=round(fill(memory, args.compare)))
    for batch, length in shapes:
        rate = sample_rate(memory, batch, length, args.batches)
        record(phase="sample", storage="memory", transitions=args.compare, batch=f"{batch}x{length}", batches_per_s=rate)
    del memory
    small = SequenceReplayBuffer(args.compare, IMAGE, ACTION, sequence_length=64, storage="disk", path=args.path + "/small")
    record(phase="write", storage="disk", transitions=args.compare, steps_per_s=round(fill(small, args.compare)))
    # every warm measurement before the first cold one: a cold measurement leaves the cache mostly empty
    warm = {shape: sample_rate(small, *shape, args.batches) for shape in shapes}
    for batch, length in shapes:
        drop_cache(small)
        cold = sample_rate(small, batch, length, max(args.batches // 10, 3))
        record(
            phase="sample",
            storage="disk",
            transitions=args.compare,
            batch=f"{batch}x{length}",
            batches_per_s=warm[batch, length],
            cold_batches_per_s=cold,
        )
    small.release_storage()
    shutil.rmtree(args.path + "/small")

    # the large disk buffer: resident memory, file size, checkpoint
    from sb3_rssm import DreamerV1
    from sb3_rssm.common.envs import PointMassEnv

    gc.collect()
    reset_peak()  # the in-memory phase's peak is not the disk buffer's
    record(phase="empty", storage="disk", transitions=0)
    kwargs = dict(storage="disk", path=args.path + "/live")
    model = DreamerV1("CnnPolicy", PointMassEnv(pixels=True), buffer_size=args.transitions, replay_buffer_kwargs=kwargs)
    buffer = model.replay_buffer
    record(phase="write", storage="disk", transitions=args.transitions, steps_per_s=round(fill(buffer, args.transitions)))
    for batch, length in shapes:
        rate = sample_rate(buffer, batch, length, args.batches)
        record(phase="sample", storage="disk", transitions=args.transitions, batch=f"{batch}x{length}", batches_per_s=rate)
    size = sum(os.path.getsize(a.path) for a in buffer.disk_arrays())
    start = time.perf_counter()
    model.save_replay_buffer(args.path + "/checkpoint")
    saved = time.perf_counter() - start
    start = time.perf_counter()
    model.load_replay_buffer(args.path + "/checkpoint")
    loaded = time.perf_counter() - start
    # resuming without the copy: the checkpoint's files become the run's
    start = time.perf_counter()
    model.load_replay_buffer(args.path + "/checkpoint", in_place=True)
    in_place = time.perf_counter() - start
    assert model.replay_buffer.path == os.path.abspath(args.path + "/checkpoint.pkl.data")
    model.replay_buffer.sample(16, sequence_length=64)
    record(
        phase="checkpoint",
        storage="disk",
        transitions=args.transitions,
        file_gib=round(size / 2**30, 2),
        save_s=round(saved, 1),
        load_s=round(loaded, 1),
        load_in_place_s=round(in_place, 2),
    )
    model.replay_buffer.release_storage()
    shutil.rmtree(args.path, ignore_errors=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
