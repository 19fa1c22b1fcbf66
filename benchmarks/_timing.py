"""Shared by the benchmarks: the median wall time of a call, after one warm-up call."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)
