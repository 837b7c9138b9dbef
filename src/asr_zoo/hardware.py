"""What arithmetic is fast on the running CPU: probed once per process, never assumed.

CPUs differ: an AVX-512 machine with BF16/VNNI runs bf16 matmuls and ``torch._int_mm`` faster
than float32, while an AVX2-only one runs them 18-31x slower (emulated), and its oneDNN has no
bf16 LSTM at all ("could not create a primitive descriptor"). Code that merely checks that an
operation *exists* picks the slow path there. So every choice here is made by a one-time
micro-probe of speed (a few milliseconds), with the CPU capability recorded for the figures:

- :func:`cpu_fast_bf16`: bf16 matmul no slower than float32 (else bf16 autocast falls back);
- :func:`cpu_bf16_lstm`: oneDNN runs a bf16 LSTM and bf16 is fast (else the recurrence runs in
  float32 under autocast);
- :func:`cpu_fast_int8_mm`: ``torch._int_mm`` (int8 -> int32) faster than the float32 matmul of
  the same shape (clustered attention's Hamming keys).

``ASR_ZOO_CPU_ARITH=fp32`` forces the float32 paths, ``=native`` the bf16/int8 ones where they
run at all (for benchmarks comparing both).
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import torch

from .timing import median_seconds

__all__ = ["cpu_capability", "cpu_fast_bf16", "cpu_bf16_lstm", "cpu_int8_mm_runs", "cpu_fast_int8_mm", "cpu_arithmetic",
           "faster_than", "cpu_autocast_ok"]


def cpu_capability() -> str:
    """ATen's CPU kernel level: ``AVX512``, ``AVX2``, ``DEFAULT`` (or another vendor's name)."""
    return torch.backends.cpu.get_cpu_capability()


def _forced() -> str | None:
    mode = os.environ.get("ASR_ZOO_CPU_ARITH", "probe")
    if mode not in ("probe", "fp32", "native"):
        raise ValueError(f"ASR_ZOO_CPU_ARITH={mode!r}; valid choices: probe, fp32, native")
    return None if mode == "probe" else mode


def faster_than(candidate_s: float, reference_s: float, tolerance: float = 1.0) -> bool:
    """The selection rule: the candidate is used when it takes at most ``tolerance`` x the
    reference's time. Emulated bf16/int8 is 10-30x slower, native 0.3-1x: the rule is far from
    both, so timer noise does not flip it."""
    return candidate_s <= tolerance * reference_s


def _runs(fn: Callable[[], object]) -> bool:
    try:
        fn()
        return True
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


@functools.cache
def cpu_fast_bf16() -> bool:
    """Whether a bf16 matmul runs at least as fast as float32 on this CPU."""
    forced = _forced()
    if forced:
        return forced == "native"
    a = torch.randn(256, 256)
    b = a.to(torch.bfloat16)
    return faster_than(median_seconds(lambda: b @ b), median_seconds(lambda: a @ a), tolerance=1.5)


@functools.cache
def cpu_bf16_lstm() -> bool:
    """Whether an LSTM should run in bf16 under CPU autocast: oneDNN has one and bf16 is fast."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 8))

    return _runs(run) and (cpu_fast_bf16() or _forced() == "native")


@functools.cache
def cpu_int8_mm_runs() -> bool:
    """Whether this torch has a CPU ``torch._int_mm`` (int8 x int8 -> int32) that computes."""
    a = torch.ones(2, 8, dtype=torch.int8)
    return _runs(lambda: torch._int_mm(a, a.T)) and bool((torch._int_mm(a, a.T) == 8).all())


@functools.cache
def cpu_fast_int8_mm() -> bool:
    """Whether ``torch._int_mm`` runs here and beats float32 at the clustering's shape
    (clusters x code width x frames)."""
    if not cpu_int8_mm_runs():
        return False
    forced = _forced()
    if forced:
        return forced == "native"
    a8, b8 = torch.ones(128, 128, dtype=torch.int8), torch.ones(128, 2048, dtype=torch.int8)
    af, bf = a8.float(), b8.float()
    return faster_than(median_seconds(lambda: torch._int_mm(a8, b8)), median_seconds(lambda: af @ bf))


def cpu_autocast_ok(dtype: torch.dtype) -> bool:
    """Whether CPU autocast to ``dtype`` is worth it here (bf16 only where it is fast)."""
    return dtype == torch.bfloat16 and cpu_fast_bf16()


def cpu_arithmetic() -> dict:
    """The capability and every probed choice, for benchmark records and results files."""
    return {"cpu_capability": cpu_capability(), "bf16_fast": cpu_fast_bf16(),
            "bf16_lstm": cpu_bf16_lstm(), "int8_mm_fast": cpu_fast_int8_mm()}
