"""Benchmark the attention kernels: time, peak memory and error against softmax, over sequence length.

Usage:
    asr-zoo bench attention --out runs/bench --device cpu --repeats 5
    PYTHONPATH=src python -m asr_zoo.bench.attention --out runs/bench --n 1024 4096 --threads 2

Every registered attention type is built from its default config (``conf/attention/<name>.yaml``)
in eval mode (seeded hyperplanes for the clustered types) and its kernel ``attend(q, k, v, None)``
is timed on given q, k, v of shape `(1, 4, N, 64)` (batch 1, 4 heads x 64 = d 256), float32, no
padding, as the fast-transformers anchors measure their kernels.

- ``fwd``: one call under ``torch.no_grad()``; ``fwdbwd``: the call with q, k, v requiring
  gradients plus ``backward`` of a fixed random output gradient.
- ``median_ms`` / ``min_ms``: wall-clock over ``--repeats`` runs after a warm-up; ``cpu_ms``: the
  median process CPU time of one run (all threads; steadier than wall-clock on a shared CPU).
  ``vs_softmax``: ``median_ms`` over softmax's ``median_ms`` at the same N and mode, same run;
  ``min_vs_softmax`` the same for ``min_ms`` (steadier on a loaded machine).
- ``peak_mb``: peak bytes allocated during one run above what was allocated before it (q, k, v
  are not counted, their gradients are). CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
  allocation and free events that ``torch.profiler`` records with ``profile_memory=True``,
  replayed in time order (tensor bytes, independent of the malloc implementation).
- ``rel_error``: ``‖Y - Y_softmax‖_F / ‖Y_softmax‖_F`` on clustered queries: per head 32 centres
  ~ N(0, I), every query a random centre plus N(0, 0.1²·I) noise; keys and values ~ N(0, I).
- Softmax ``fwdbwd`` is skipped above ``--softmax-max-n`` (quadratic time; default 4096).

Writes ``OUT/attention.jsonl`` (one record per type, N and mode), ``OUT/attention.md`` (a
markdown table) and ``OUT/attention.png`` (log-log time against N).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from asr_zoo.bench.memory import peak_memory_bytes
from asr_zoo.hardware import cpu_arithmetic
from asr_zoo.timing import time_calls
from asr_zoo.nn.attention import ATTENTION, build_attention
from asr_zoo.bench import write_records

__all__ = ["add_arguments", "clustered_queries", "kernel_arithmetic", "main", "run"]

LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
HEADS, HEAD_DIM = 4, 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench attention`` options to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="output directory")
    parser.add_argument("--n", type=int, nargs="+", default=list(LENGTHS), help="sequence lengths N")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--types", nargs="+", default=None, help="attention types (default: all)")
    parser.add_argument("--softmax-max-n", type=int, default=4096,
                        help="skip softmax fwd+bwd above this N (quadratic time and memory)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; write ``attention.jsonl``, ``attention.md`` and ``attention.png``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU capability {cpu_arithmetic()['cpu_capability']}; arithmetic per kernel: "
          + ", ".join(f"{t}: {kernel_arithmetic(t, args.device)}" for t in (args.types or ATTENTION.names())),
          file=sys.stderr)
    device = torch.device(args.device)
    types = args.types or ATTENTION.names()
    if "softmax" in types:  # first, so that every type can be compared with it
        types = ["softmax"] + [t for t in types if t != "softmax"]
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [(n, name) for n in args.n for name in types]
    records = []
    for i, (n, name) in enumerate(cases):
        _progress(i, len(cases), f"{name} N={n}")
        records += _measure_type(name, n, device, args.repeats, fwdbwd=not (
            name == "softmax" and n > args.softmax_max_n))
    _progress(len(cases), len(cases), "done")
    _add_ratios(records)
    table = _markdown(records, args.softmax_max_n)
    write_records(args.out, "attention", records, table)
    _plot(records, args.out / "attention.png")
    print(table)
    return 0


def clustered_queries(n: int, centres: int = 32, noise: float = 0.1, seed: int = 0,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """q, k, v of shape `(1, 4, n, 64)`: queries around ``centres`` points per head, keys and
    values standard normal (the data of ``rel_error``)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(1, HEADS, centres, HEAD_DIM, generator=g)
    member = torch.randint(centres, (1, HEADS, n), generator=g)
    q = c.gather(2, member[..., None].expand(-1, -1, -1, HEAD_DIM))
    q = q + noise * torch.randn(1, HEADS, n, HEAD_DIM, generator=g)
    k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=g) for _ in range(2))
    return q.to(device), k.to(device), v.to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _measure_type(name: str, n: int, device: torch.device, repeats: int, fwdbwd: bool) -> list[dict]:
    entry = ATTENTION.get(name)
    cfg = entry.config(name=name)
    module = build_attention(cfg, HEADS * HEAD_DIM, HEADS).to(device).eval()
    params = {k: v for k, v in asdict(cfg).items() if k not in ("name", "dropout")}

    q, k, v = clustered_queries(n, device=device)
    with torch.no_grad():
        ref = build_attention(ATTENTION.get("softmax").config(), HEADS * HEAD_DIM, HEADS) \
            .attend(q, k, v, None)
        out = module.attend(q, k, v, None)
    rel_error = ((out - ref).norm() / ref.norm()).item()

    g = torch.Generator().manual_seed(1)
    q, k, v, grad = (torch.randn(1, HEADS, n, HEAD_DIM, generator=g).to(device) for _ in range(4))

    def forward():
        with torch.no_grad():
            module.attend(q, k, v, None)

    def forward_backward():
        for t in (q, k, v):
            t.grad = None
        module.attend(q, k, v, None).backward(grad)

    records = []
    for mode, fn in (("fwd", forward), ("fwdbwd", forward_backward)):
        if mode == "fwdbwd":
            if not fwdbwd:
                break
            for t in (q, k, v):
                t.requires_grad_()
        times, cpu = _time(fn, repeats, device)
        peak = peak_memory_bytes(fn, device)
        records.append({
            "type": name, "n": n, "mode": mode, "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2), "cpu_ms": round(statistics.median(cpu), 2),
            "peak_mb": round(peak / 2**20, 2), "rel_error": round(rel_error, 4),
            "params": params, "batch": 1, "heads": HEADS, "head_dim": HEAD_DIM,
            "device": str(device), "threads": torch.get_num_threads(), "repeats": repeats,
            "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__, **cpu_arithmetic(),
            "arithmetic": kernel_arithmetic(name, device),
        })
    return records


def kernel_arithmetic(name: str, device: torch.device | str = "cpu") -> str:
    """The arithmetic a registered kernel uses here (after the :mod:`asr_zoo.hardware` probes)."""
    if name not in ("clustered", "iclustered"):
        return "float32"
    from asr_zoo.nn.attention.hashing import NearestCentroid

    integer = NearestCentroid(torch.ones(1, 2, 80, device=device), 63, 100).integer
    keys = "int8 _int_mm" if integer else "float32 bmm + flipped-bit updates"
    return f"float32, Hamming keys {keys}"


def _time(fn, repeats: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each call."""
    wall, cpu = time_calls(fn, repeats, device)
    return [1e3 * t for t in wall], [1e3 * t for t in cpu]


def _add_ratios(records: list[dict]) -> None:
    softmax = {(r["n"], r["mode"]): r for r in records if r["type"] == "softmax"}
    for r in records:
        base = softmax.get((r["n"], r["mode"]))
        r["vs_softmax"] = round(r["median_ms"] / base["median_ms"], 3) if base else None
        r["min_vs_softmax"] = round(r["min_ms"] / base["min_ms"], 3) if base else None


def _markdown(records: list[dict], softmax_max_n: int) -> str:
    lines = ["| type | N | fwd ms | fwd+bwd ms | fwd / softmax | fwd+bwd / softmax | fwd MB "
             "| fwd+bwd MB | rel. error | arithmetic |", "|---|---|---|---|---|---|---|---|---|---|"]
    by_case: dict = {}
    for r in records:
        by_case.setdefault((r["type"], r["n"]), {})[r["mode"]] = r
    measured = list(dict.fromkeys(r["type"] for r in records))  # softmax first, as run
    for (name, n), modes in sorted(by_case.items(), key=lambda kv: (kv[0][1], measured.index(kv[0][0]))):
        f, b = modes.get("fwd", {}), modes.get("fwdbwd", {})
        cells = [name, n, f.get("median_ms"), b.get("median_ms", "skipped"), f.get("vs_softmax"),
                 b.get("vs_softmax"), f.get("peak_mb"), b.get("peak_mb", "skipped"), f.get("rel_error"),
                 f.get("arithmetic")]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    r0 = records[0] if records else {}
    lines.append(f"\nbatch 1, {HEADS} heads x {HEAD_DIM}, float32, {r0.get('device')}, "
                 f"{r0.get('threads')} threads, {r0.get('repeats')} repeats (median wall-clock); "
                 f"softmax fwd+bwd skipped above N={softmax_max_n}; "
                 f"load average {min(r['load_avg_1min'] for r in records) if records else '-'}"
                 f"-{max(r['load_avg_1min'] for r in records) if records else '-'}; "
                 f"CPU capability {r0.get('cpu_capability')} (ATEN_CPU_CAPABILITY="
                 f"{os.environ.get('ATEN_CPU_CAPABILITY', 'unset')}, ONEDNN_MAX_CPU_ISA="
                 f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}, ASR_ZOO_CPU_ARITH="
                 f"{os.environ.get('ASR_ZOO_CPU_ARITH', 'probe')}); int8 matmul fast: "
                 f"{r0.get('int8_mm_fast')}, bf16 fast: {r0.get('bf16_fast')}.")
    return "\n".join(lines) + "\n"


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, mode in zip(axes, ("fwd", "fwdbwd")):
        for name in sorted({r["type"] for r in records}):
            pts = sorted((r["n"], r["median_ms"]) for r in records
                         if r["type"] == name and r["mode"] == mode)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="sequence length N", title=mode)
        lengths = sorted({r["n"] for r in records})
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median time (ms)")
    axes[1].legend()
    r0 = records[0]
    fig.suptitle(f"attention kernels: batch 1, {HEADS}x{HEAD_DIM}, {r0['device']}, "
                 f"{r0['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<24}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
