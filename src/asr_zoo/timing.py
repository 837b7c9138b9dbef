"""Timing loops for benchmarks and speed probes (one implementation): wall-clock and CPU time of
repeated calls, with CUDA synchronised around each call."""

from __future__ import annotations

import time
from typing import Callable

import torch

__all__ = ["time_calls", "median_seconds", "interleaved_seconds"]


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], repeats: int, device=None, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Seconds of wall-clock and of process CPU time of each of ``repeats`` calls of ``fn``,
    after ``warmup`` untimed calls (allocations, kernel selection)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return wall, cpu


def median_seconds(fn: Callable[[], object], repeats: int = 5, device=None, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``repeats`` calls (see :func:`time_calls`)."""
    wall = sorted(time_calls(fn, repeats, device, warmup)[0])
    return wall[len(wall) // 2]


def interleaved_seconds(fns: dict[str, Callable[[], object]], repeats: int, device=None,
                        warmup: int = 1) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, timed in interleaved rounds (one call of each per
    round) so that load from other processes hits every function alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].extend(time_calls(fn, 1, device, warmup=0)[0])
    return times
