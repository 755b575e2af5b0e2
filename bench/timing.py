"""Timing shared by the benchmarks."""
from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """Median wall time of fn() in ms over `repeats` calls, after one warm-up call; GPU work is waited for."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
