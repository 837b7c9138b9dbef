"""Benchmark seq2seq decoding: latency, throughput and per-step cost, with and without the KV cache.

Usage:
    asr-zoo bench seq2seq-decode --out runs/bench --device cpu
    PYTHONPATH=src python -m asr_zoo.bench.seq2seq_decode --out docs/figures --threads 1 --repeats 3

A randomly initialised :class:`TransformerDecoder` reads random encoder frames ``(B, T, D)``. Its
``<eos>`` logit is pushed down by 1e4 so that every search runs exactly ``--tokens`` + 1 steps
(the forced ``<eos>``): the cost of a search depends on how many steps it takes, not on what the
weights say, so untrained weights measure it fairly.

Measured, for each self-attention type (softmax, linear) and ``use_cache`` in (True, False):

- ``latency``: one utterance at a time (batch 1), greedy and beam K for each ``--beams``;
  median milliseconds per utterance.
- ``throughput``: ``--batch`` utterances in one batched search; utterances per second.
- ``step``: one decoder step for ``--step-rows`` hypotheses after a prefix of L tokens, for each
  ``--prefix-lengths`` L: with the cache (one position through :meth:`TransformerDecoder.step`)
  and without (the whole prefix through the decoder again).

Writes ``OUT/seq2seq_decode.jsonl`` (one record per measurement), ``OUT/seq2seq_decode.md`` (tables)
and ``OUT/seq2seq_decode_step_cost.png`` (per-step cost vs prefix length).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from asr_zoo.decoding.seq2seq import beam_search, greedy_search
from asr_zoo.nn.decoder import TransformerDecoder
from asr_zoo.timing import median_seconds
from . import write_records

__all__ = ["add_arguments", "run", "main"]

EOS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench seq2seq-decode`` options to ``parser``."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--attention", default="softmax,linear", help="decoder self-attention types")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn-dim", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--frames", type=int, default=100, help="encoder frames T per utterance")
    parser.add_argument("--tokens", type=int, default=40, help="tokens decoded per utterance")
    parser.add_argument("--beams", default="1,4,8", help="search widths; 1 = greedy search")
    parser.add_argument("--batch", type=int, default=16, help="utterances per batched search")
    parser.add_argument("--step-rows", type=int, default=4, help="hypotheses in the per-step timing")
    parser.add_argument("--prefix-lengths", default="1,8,16,32,64,128,256", help="L values of the step timing")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; write the jsonl, the markdown tables and the plot under ``args.out``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    common = {"device": str(device), "threads": torch.get_num_threads(), "d_model": args.d_model,
              "layers": args.layers, "frames": args.frames, "tokens": args.tokens, "torch": torch.__version__}
    records = []
    for attention in args.attention.split(","):
        decoder = _decoder(args, attention, device)
        for use_cache in (True, False):
            for beam in map(int, args.beams.split(",")):
                for mode, batch in (("latency", 1), ("throughput", args.batch)):
                    secs = _time_search(decoder, args, batch, beam, use_cache, device)
                    value = 1e3 * secs if mode == "latency" else batch / secs
                    records.append({**common, "kind": mode, "attention": attention, "cache": use_cache,
                                    "search": "greedy" if beam == 1 else f"beam{beam}", "batch": batch,
                                    "value": round(value, 2), "unit": "ms/utt" if mode == "latency" else "utt/s",
                                    "load_avg_1min": round(os.getloadavg()[0], 2)})
                    print(json.dumps(records[-1]))
            for length in map(int, args.prefix_lengths.split(",")):
                ms = 1e3 * _time_step(decoder, args, length, use_cache, device)
                records.append({**common, "kind": "step", "attention": attention, "cache": use_cache,
                                "rows": args.step_rows, "prefix_len": length, "value": round(ms, 3),
                                "unit": "ms/step", "load_avg_1min": round(os.getloadavg()[0], 2)})
                print(json.dumps(records[-1]))
    table = _markdown(records)
    write_records(args.out, "seq2seq_decode", records, table)
    _plot(records, args.out / "seq2seq_decode_step_cost.png")
    print(table)
    return 0


def _decoder(args, attention: str, device) -> TransformerDecoder:
    torch.manual_seed(0)
    decoder = TransformerDecoder(args.vocab, args.d_model, args.layers, args.heads, args.ffn_dim, 0.0, attention)
    with torch.no_grad():
        decoder.output.bias[EOS] -= 1e4  # never ends by itself: every search takes tokens + 1 steps
    return decoder.to(device).eval()


def _time_search(decoder, args, batch: int, beam: int, use_cache: bool, device) -> float:
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(batch, args.frames, args.d_model, generator=g).to(device)
    lens = torch.full((batch,), args.frames, device=device)
    ratio = args.tokens / args.frames

    def search():
        if beam == 1:
            hyps, _, _ = greedy_search(decoder, memory, lens, ratio, use_cache=use_cache)
        else:
            hyps, _, _ = beam_search(decoder, memory, lens, beam, 1.0, ratio, use_cache=use_cache)
        assert all(len(h) == args.tokens for h in hyps)

    return median_seconds(search, args.repeats, device) / (batch if batch == 1 else 1)


@torch.no_grad()
def _time_step(decoder, args, length: int, use_cache: bool, device) -> float:
    rows = args.step_rows
    g = torch.Generator().manual_seed(2)
    memory = torch.randn(rows, args.frames, args.d_model, generator=g).to(device)
    lens = torch.full((rows,), args.frames, device=device)
    prefix = torch.randint(2, args.vocab, (rows, length + 1), generator=g).to(device)
    if use_cache:
        state = decoder.init_state(memory, lens)
        for u in range(length):
            _, state = decoder.step(prefix[:, u], state)
        return median_seconds(lambda: decoder.step(prefix[:, length], state), args.repeats * 5, device)
    full_lens = torch.full((rows,), length + 1, device=device)
    return median_seconds(lambda: decoder(prefix, full_lens, memory, lens)[:, -1], args.repeats * 5, device)


def _markdown(records) -> str:
    out = ["| attention | cache | search | latency ms/utt (batch 1) | throughput utt/s (batched) |",
           "|---|---|---|---|---|"]
    searches = {}
    for r in records:
        if r["kind"] in ("latency", "throughput"):
            searches.setdefault((r["attention"], r["cache"], r["search"]), {})[r["kind"]] = r["value"]
    for (attention, cache, search), v in searches.items():
        out.append(f"| {attention} | {'yes' if cache else 'no'} | {search} | {v.get('latency')} | "
                   f"{v.get('throughput')} |")
    steps = [r for r in records if r["kind"] == "step"]
    lengths = sorted({r["prefix_len"] for r in steps})
    out += ["", "Per-step cost (ms) vs prefix length L:", "",
            "| attention | cache | " + " | ".join(f"L={n}" for n in lengths) + " |",
            "|---|---|" + "---|" * len(lengths)]
    for attention, cache in dict.fromkeys((r["attention"], r["cache"]) for r in steps):
        row = {r["prefix_len"]: r["value"] for r in steps if (r["attention"], r["cache"]) == (attention, cache)}
        out.append(f"| {attention} | {'yes' if cache else 'no'} | " + " | ".join(str(row[n]) for n in lengths) + " |")
    return "\n".join(out) + "\n"


def _plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["kind"] == "step"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for attention, cache in dict.fromkeys((r["attention"], r["cache"]) for r in steps):
        pts = sorted((r["prefix_len"], r["value"]) for r in steps if (r["attention"], r["cache"]) == (attention, cache))
        ax.plot(*zip(*pts), marker="o", linestyle="-" if cache else "--",
                label=f"{attention}, {'KV cache / recurrent state' if cache else 'full recomputation'}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prefix length L (tokens)")
    ax.set_ylabel("ms per decoder step")
    r = steps[0]
    ax.set_title(f"seq2seq decoder step, {r['rows']} hyps, d={r['d_model']}, {r['layers']} layers, "
                 f"{r['device']} x{r['threads']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
