"""Peak memory of a callable, on CUDA (allocator statistics) or CPU (profiler allocation events)."""

from __future__ import annotations

import torch

__all__ = ["peak_memory_bytes"]


def peak_memory_bytes(fn, device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated while ``fn()`` runs, above what was allocated when it started.

    Args:
        fn: a callable without arguments.
        device: CUDA uses the caching allocator's statistics; CPU replays the allocation and
            free events ``torch.profiler`` records with ``profile_memory=True`` (tensors only,
            not the Python heap).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on cpu or cuda, not {device}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    current = peak = 0
    for _, size in changes:
        current += size
        peak = max(peak, current)
    return peak
