"""
The machine's reference throughput for every benchmark here: dense fp32 matmul FLOP/s, measured
in the same process as the figures it is compared with.
"""

from __future__ import annotations

import statistics
import time

import torch as th


def matmul_flops_per_s(
    size: int = 2048, warmup_s: float = 1.0, repeats: int = 20, device: str = "cpu", dtype: th.dtype = th.float32
) -> float:
    """
    Dense ``size x size`` matmul throughput (fp32 unless ``dtype`` says otherwise) with the current torch thread count.

    The CPU clock ramps up under load for a fraction of a second: without the warm-up the first
    products run about 10% slower, which would flatter every ratio to this figure.

    :param size: side of the square matrices
    :param warmup_s: seconds of untimed products first
    :param repeats: timed products; the median is returned
    :param device: torch device to measure
    :param dtype: element type of the matrices
    """
    a = th.randn(size, size, device=device, dtype=dtype)
    b = th.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if a.is_cuda:
            th.cuda.synchronize()

    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        th.mm(a, b)
        sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        th.mm(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)
