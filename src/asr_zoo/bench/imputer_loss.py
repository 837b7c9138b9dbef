"""Benchmark: Imputer-DP loss vs CTC loss (forward + backward), and CTC Viterbi throughput.

Usage::

    asr-zoo bench imputer-loss --out bench/imputer [--device cpu] [--repeats 20]
    PYTHONPATH=src python -m asr_zoo bench imputer-loss --out /tmp/b --batch 4 --frames 50

Both losses include the ``log_softmax`` of random logits (B, T, V) and its backward, at
the default shape B=16, T=400, V=256, U=80. DP's ``observed`` comes from a valid alignment
(``ctc_viterbi`` of random log-probs) with ~50% of frames masked (Bernoulli p=0.5).
Writes ``DIR/imputer_loss.jsonl`` (one record per implementation: ``impl``, shape,
``median_ms``, ...) and ``DIR/imputer_loss.md`` (a table), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from asr_zoo.align.rollin import bernoulli_mask, fill_masked
from asr_zoo.align.viterbi import ctc_viterbi
from asr_zoo.losses.imputer_dp import MASKED, imputer_dp_loss
from asr_zoo.timing import interleaved_seconds

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--batch", type=int, default=16, help="B")
    parser.add_argument("--frames", type=int, default=400, help="T")
    parser.add_argument("--vocab", type=int, default=256, help="V, blank included")
    parser.add_argument("--labels", type=int, default=80, help="U, target length")
    parser.add_argument("--seed", type=int, default=0)


def _median_ms(fns: dict, device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each function, timed in interleaved rounds."""
    times = interleaved_seconds(fns, repeats, device, warmup)
    return {name: 1000 * statistics.median(ts) for name, ts in times.items()}


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    batch, frames, vocab, labels = args.batch, args.frames, args.vocab, args.labels
    logits = torch.randn(batch, frames, vocab, generator=gen).to(device).requires_grad_(True)
    targets = torch.randint(1, vocab, (batch, labels), generator=gen).to(device)
    input_lengths = torch.full((batch,), frames, dtype=torch.long, device=device)
    target_lengths = torch.full((batch,), labels, dtype=torch.long, device=device)
    expert_lp = torch.randn(batch, frames, vocab, generator=gen).log_softmax(-1).to(device)
    align = ctc_viterbi(expert_lp, targets, input_lengths, target_lengths)
    mask = bernoulli_mask(input_lengths.cpu(), p=0.5, max_len=frames, generator=gen).to(device)
    observed = fill_masked(align, mask, MASKED)

    def ctc_step():
        logits.grad = None
        lp = logits.log_softmax(-1)
        F.ctc_loss(lp.transpose(0, 1), targets, input_lengths, target_lengths,
                   reduction="sum", zero_infinity=True).backward()

    def dp_step():
        logits.grad = None
        lp = logits.log_softmax(-1)
        imputer_dp_loss(lp, targets, input_lengths, target_lengths, observed,
                        reduction="sum").backward()

    def viterbi_step():
        ctc_viterbi(expert_lp, targets, input_lengths, target_lengths)

    shape = {"B": batch, "T": frames, "V": vocab, "U": labels}
    env = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    fns = {"ctc": ctc_step, "imputer_dp": dp_step, "ctc_viterbi": viterbi_step}
    records = []
    for impl, ms in _median_ms(fns, device, args.warmup, args.repeats).items():
        record = {"impl": impl, **shape, "median_ms": round(ms, 3), "repeats": args.repeats, **env}
        if impl == "ctc_viterbi":
            record["utts_per_s"] = round(batch / (ms / 1000), 1)
        records.append(record)
    ratio = records[1]["median_ms"] / records[0]["median_ms"]
    records[1]["ratio_to_ctc"] = round(ratio, 3)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "imputer_loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = [
        f"Shape B={batch} T={frames} V={vocab} U={labels}, {env['device']}, "
        f"{env['threads']} threads, torch {env['torch']}; "
        f"median of {args.repeats} interleaved rounds.",
        "",
        "| impl | what is timed | median ms | vs CTC | utt/s |",
        "|---|---|---:|---:|---:|",
        f"| ctc | log_softmax + F.ctc_loss, fwd+bwd | {records[0]['median_ms']:.2f} | 1.00 | |",
        f"| imputer_dp | log_softmax + imputer_dp_loss, fwd+bwd | {records[1]['median_ms']:.2f} "
        f"| {ratio:.2f} | |",
        f"| ctc_viterbi | best-path alignment (no grad) | {records[2]['median_ms']:.2f} | | "
        f"{records[2]['utts_per_s']:.0f} |",
    ]
    table = "\n".join(lines) + "\n"
    (out / "imputer_loss.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="imputer_loss")
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
