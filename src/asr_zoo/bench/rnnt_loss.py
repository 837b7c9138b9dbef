"""Benchmark the RNN-T loss: forward+backward time and peak memory, ours vs the autograd reference.

Usage:
    asr-zoo bench rnnt-loss --out runs/bench --device cpu --repeats 5
    PYTHONPATH=src python -m asr_zoo.bench.rnnt_loss --out runs/bench --threads 2

For each shape (B, T, U, V) and implementation, random float32 logits ``(B, T, U+1, V)`` with
``requires_grad`` are made once; the timed call is ``loss(logits, ...).backward()`` (mean
reduction, full lengths). ``median_ms`` and ``min_ms`` are wall-clock over ``--repeats`` runs
after a warm-up; ``cpu_ms`` is the median process CPU time (all threads; steadier than wall-clock
on a shared CPU). Writes ``OUT/rnnt_loss.jsonl`` (one record per shape and implementation) and
``OUT/rnnt_loss.md`` (a markdown table), and prints the table.

Memory: ``peak_mb`` is the peak of bytes allocated during one forward+backward above what was
allocated before it (the logits themselves are not counted, their gradient is).
``extra_mem_ratio = (peak - gradient size) / logits size``: the memory the loss needs beyond
the logits and their gradient. On CUDA it comes from ``torch.cuda.max_memory_allocated``; on CPU
from the allocation/free events that ``torch.profiler`` records with ``profile_memory=True``,
replayed in time order (a count of tensor bytes, independent of the malloc implementation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from asr_zoo.bench.memory import peak_memory_bytes
from asr_zoo.timing import time_calls
from asr_zoo.losses.rnnt import rnnt_loss, rnnt_loss_reference
from . import write_records

__all__ = ["SHAPES", "add_arguments", "run", "main"]

SHAPES = ((16, 100, 40, 256), (8, 400, 100, 500))  # (B, T, U, V)
IMPLEMENTATIONS = {"ours": rnnt_loss, "reference": rnnt_loss_reference}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench rnnt-loss`` options to ``parser``."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--shape", type=_shape, action="append", default=None, metavar="B,T,U,V",
                        help=f"shape to run (repeatable); default {SHAPES}")
    parser.add_argument("--skip-reference-above", type=float, default=None, metavar="GB",
                        help="skip the reference where the logits exceed this many GB")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; write ``rnnt_loss.jsonl`` and ``rnnt_loss.md`` under ``args.out``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for shape in args.shape or SHAPES:
        logits_gb = 4 * shape[0] * shape[1] * (shape[2] + 1) * shape[3] / 1e9
        for impl, loss_fn in IMPLEMENTATIONS.items():
            if impl == "reference" and args.skip_reference_above is not None \
                    and logits_gb > args.skip_reference_above:
                print(f"skip reference at {shape}: logits {logits_gb:.2f} GB")
                continue
            records.append(_measure(impl, loss_fn, shape, device, args.repeats))
            print(json.dumps(records[-1]))
    table = _markdown(records)
    write_records(args.out, "rnnt_loss", records, table)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _shape(text: str) -> tuple[int, int, int, int]:
    B, T, U, V = (int(v) for v in text.split(","))
    return B, T, U, V


def _inputs(shape, device, seed=0):
    B, T, U, V = shape
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, U + 1, V, generator=gen).to(device).requires_grad_()
    targets = torch.randint(1, V, (B, U), generator=gen).to(device)
    logit_lengths = torch.full((B,), T, device=device)
    target_lengths = torch.full((B,), U, device=device)
    return logits, targets, logit_lengths, target_lengths


def _measure(impl, loss_fn, shape, device, repeats) -> dict:
    logits, targets, logit_lengths, target_lengths = _inputs(shape, device)
    loss_value = []

    def step():
        logits.grad = None
        loss = loss_fn(logits, targets, logit_lengths, target_lengths)
        loss.backward()
        loss_value.append(loss.item())

    times, cpu_times = time_calls(step, repeats, device)
    logits.grad = None
    peak = peak_memory_bytes(step, device)
    logits_bytes = logits.numel() * logits.element_size()
    B, T, U, V = shape
    return {
        "impl": impl, "B": B, "T": T, "U": U, "V": V,
        "device": str(device), "threads": torch.get_num_threads(), "repeats": repeats,
        "median_ms": round(1e3 * statistics.median(times), 1),
        "min_ms": round(1e3 * min(times), 1),
        "cpu_ms": round(1e3 * statistics.median(cpu_times), 1),
        "peak_mb": round(peak / 2**20, 1),
        "logits_mb": round(logits_bytes / 2**20, 1),
        "extra_mem_ratio": round((peak - logits_bytes) / logits_bytes, 3),
        "loss": loss_value[-1],
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch": torch.__version__,
    }


def _markdown(records) -> str:
    columns = ["impl", "B", "T", "U", "V", "threads", "median_ms", "min_ms", "cpu_ms", "peak_mb",
               "logits_mb", "extra_mem_ratio", "load_avg_1min"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in records]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
