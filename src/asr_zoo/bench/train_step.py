"""Benchmark one full training step (forward, backward, optimizer) of every objective x attention.

Usage:
    OMP_WAIT_POLICY=PASSIVE asr-zoo bench train-step --out runs/bench --threads 2
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python -m asr_zoo.bench.train_step --out runs/bench --quick

The demo configuration (``encoder=conformer trainer=demo``) on one fixed batch of 40 s of audio,
synthesised with the shapes of the default corpus: utterances of 2-10 s (``--seed``), 80-dim
features at 100 frames/s, random token ids at the rate of ``--tokenizer``'s tokens on the default
corpus: ``char`` (``preset=demo``'s tokenizer: 31 symbols, 17.2 tokens/s) or ``bpe256`` (256
pieces, about 4 tokens/s). Imputer
objectives get random valid CTC alignments as their "expert" (tokens at sorted random frames,
blanks elsewhere). Every step is ``zero_grad; compute_loss; backward; AdamW.step``, in train mode
(dropout and SpecAugment-free features). ``median_ms`` is the median wall-clock of ``--repeats``
steps after a warm-up step; ``peak_mb`` the peak tensor bytes allocated during one more step
(:func:`asr_zoo.bench.memory.peak_memory_bytes`); ``time_vs_ctc`` / ``mem_vs_ctc`` divide by CTC
with the same attention in the same run.

Two further sections:

- ``joint``: the transducer's joint network + loss alone (forward and backward) at ``U = 40``:
  full lattice `(B, T, U+1, V)` + :func:`asr_zoo.losses.rnnt.rnnt_loss` against the simple loss +
  pruned joint `(B, T, S, V)` + pruned loss; peak memory and time.
- ``greedy``: RNN-T greedy decoding of a batch of 16 (random LSTM predictor + joiner of the demo
  sizes, blank bias set so that about 4 tokens/s are emitted): utterances/s of the label-looping
  decoder against the frame-by-frame reference (runs interleaved, median of at least 7), and
  whether their hypotheses are identical.

Writes ``OUT/train_step.jsonl``, ``OUT/train_step.md`` and ``OUT/train_step.png`` (bar chart).
Every record carries the CPU capability (:func:`asr_zoo.hardware.cpu_arithmetic`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from asr_zoo.bench.memory import peak_memory_bytes
from asr_zoo.timing import interleaved_seconds, time_calls
from . import write_records

__all__ = ["OBJECTIVES", "ATTENTIONS", "add_arguments", "run", "main", "synthetic_batch", "fake_alignments"]

OBJECTIVES = {  # label -> config overrides
    "ctc": ["objective=ctc"],
    "rnnt_full": ["objective=rnnt", "objective.loss=full"],
    "rnnt_pruned": ["objective=rnnt", "objective.loss=pruned"],
    "seq2seq": ["objective=seq2seq"],
    "imputer_dp": ["objective=imputer_dp"],
    "imputer_im": ["objective=imputer_im"],
}
ATTENTIONS = ("softmax", "linear", "clustered", "iclustered", "pooled")
VOCAB, FEATURES = 256, 80
TOKENIZERS = {"char": (31, 17.2), "bpe256": (256, 4.0)}  # vocabulary, tokens per second of the default corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench train-step`` options to ``parser``."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per case (median)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    parser.add_argument("--attention", action="append", choices=ATTENTIONS, default=None,
                        help=f"attention type (repeatable); default all: {', '.join(ATTENTIONS)}")
    parser.add_argument("--objective", action="append", choices=list(OBJECTIVES), default=None,
                        help="objective (repeatable); default all (ctc always runs: it is the ratios' base)")
    parser.add_argument("--tokenizer", choices=list(TOKENIZERS), default="char",
                        help="vocabulary and token rate of the batch (default: char, preset=demo's)")
    parser.add_argument("--quick", action="store_true", help="softmax only, 2 repeats")
    parser.add_argument("--skip-greedy", action="store_true", help="skip the greedy-decoding section")


def synthetic_batch(seed: int = 0, seconds: float = 40.0, vocab: int = VOCAB,
                    tokens_per_second: float = 4.0) -> dict:
    """A fixed batch shaped like the default corpus: utterances of 2-10 s adding up to at most
    ``seconds``; feats `(B, T, 80)` at 100 frames/s, tokens `(B, U)` at ``tokens_per_second``
    (ids ``2 .. vocab-1``, no two equal neighbours)."""
    g = torch.Generator().manual_seed(seed)
    durations = []
    while True:
        d = 2.0 + 8.0 * float(torch.rand(1, generator=g))
        if sum(durations) + d > seconds:
            break
        durations.append(d)
    feat_lens = torch.tensor([int(d * 100) for d in durations])
    token_lens = torch.tensor([max(1, round(d * tokens_per_second)) for d in durations])
    B = len(durations)
    feats = torch.randn(B, int(feat_lens.max()), FEATURES, generator=g)
    tokens = torch.zeros(B, int(token_lens.max()), dtype=torch.long)
    for b in range(B):
        ids = torch.randint(2, vocab, (int(token_lens[b]),), generator=g)
        for u in range(1, len(ids)):  # a CTC alignment of y then needs no extra blanks
            if ids[u] == ids[u - 1]:
                ids[u] = 2 + (ids[u] - 1) % (vocab - 2)
        tokens[b, : len(ids)] = ids
    return {"feats": feats, "feat_lens": feat_lens, "tokens": tokens, "token_lens": token_lens,
            "ids": [f"synthetic-{b}" for b in range(B)], "texts": [""] * B}


def fake_alignments(batch: dict, encoder_lengths: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random valid CTC alignments `(T'_b,)` per utterance id: token u at sorted random distinct
    frames, blank (0) elsewhere (the targets have no equal neighbours, so this collapses to y)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for b, utt in enumerate(batch["ids"]):
        T, U = int(encoder_lengths[b]), int(batch["token_lens"][b])
        frames = torch.randperm(T, generator=g)[:U].sort().values
        a = torch.zeros(T, dtype=torch.long)
        a[frames] = batch["tokens"][b, :U]
        out[utt] = a
    return out


def _build(label: str, attention: str, batch: dict, vocab: int = VOCAB):
    from omegaconf import OmegaConf

    from asr_zoo.config import compose
    from asr_zoo.objectives import OBJECTIVES as REGISTRY

    cfg = compose(["encoder=conformer", "trainer=demo", f"attention={attention}", *OBJECTIVES[label]])
    torch.manual_seed(0)
    module = REGISTRY.get(cfg.objective.name).obj(OmegaConf.to_container(cfg, resolve=True), vocab, FEATURES)
    if label.startswith("imputer"):
        module.alignments = fake_alignments(batch, module.encoder.output_lengths(batch["feat_lens"]))
    module.train()
    return module, cfg


def _time_steps(step, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each step, after one warm-up step."""
    wall, cpu = time_calls(step, repeats)
    return [1e3 * t for t in wall], [1e3 * t for t in cpu]


def _train_step_record(label: str, attention: str, batch: dict, repeats: int, vocab: int = VOCAB) -> dict:
    module, cfg = _build(label, attention, batch, vocab)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = module.compute_loss(batch)
        loss.backward()
        opt.step()
        return loss

    wall, cpu = _time_steps(step, repeats)
    peak = peak_memory_bytes(step)
    loss = float(step().detach())
    return {"section": "train_step", "objective": label, "attention": attention, "median_ms": statistics.median(wall),
            "min_ms": min(wall), "cpu_ms": statistics.median(cpu), "peak_mb": peak / 2 ** 20, "loss": loss,
            "params_m": sum(p.numel() for p in module.parameters()) / 1e6}


def _joint_records(repeats: int, B: int = 8, T: int = 250, U: int = 40, s_range: int = 5) -> list[dict]:
    """Joint + loss alone at the demo sizes (D 144, H 256, J 256, V 256), full vs pruned."""
    from asr_zoo.losses.rnnt import rnnt_loss
    from asr_zoo.losses.rnnt_pruned import gather_pruned, prune_ranges, pruned_rnnt_loss, simple_rnnt_loss
    from asr_zoo.nn.transducer import Joiner

    torch.manual_seed(0)
    D, H, J = 144, 256, 256
    joiner = Joiner(D, H, J, VOCAB)
    am_proj, lm_proj = torch.nn.Linear(D, VOCAB), torch.nn.Linear(H, VOCAB)
    enc = torch.randn(B, T, D, requires_grad=True)
    pred = torch.randn(B, U + 1, H, requires_grad=True)
    targets = torch.randint(2, VOCAB, (B, U))
    T_lens, U_lens = torch.full((B,), T), torch.full((B,), U)

    def full():
        rnnt_loss(joiner(enc, pred), targets, T_lens, U_lens).backward()

    def pruned():
        simple, occ = simple_rnnt_loss(am_proj(enc), lm_proj(pred), targets, T_lens, U_lens, return_occupancy=True)
        ranges = prune_ranges(occ, T_lens, U_lens, s_range)
        band = gather_pruned(joiner.predictor_proj(pred), ranges)  # (B, T, S, J)
        logits = joiner.join(joiner.encoder_proj(enc)[:, :, None], band)  # (B, T, S, V)
        del band  # not needed by backward: free it before the loss's allocations
        (0.5 * simple + pruned_rnnt_loss(logits, ranges, targets, T_lens, U_lens)).backward()

    records = []
    for name, fn in (("full", full), ("pruned", pruned)):
        wall, cpu = _time_steps(fn, repeats)
        records.append({"section": "joint", "loss": name, "B": B, "T": T, "U": U, "V": VOCAB, "J": J,
                        "s_range": s_range if name == "pruned" else U + 1, "median_ms": statistics.median(wall),
                        "cpu_ms": statistics.median(cpu), "peak_mb": peak_memory_bytes(fn) / 2 ** 20})
    base = records[0]
    for r in records:
        r["mem_vs_full"], r["time_vs_full"] = r["peak_mb"] / base["peak_mb"], r["median_ms"] / base["median_ms"]
    return records


def _greedy_records(repeats: int, B: int = 16, T: int = 250, blank_bias: float = 1.1) -> list[dict]:
    """Greedy decoding of B utterances (random demo-size transducer), reference vs label looping."""
    from asr_zoo.decoding.rnnt import rnnt_greedy_decode, rnnt_greedy_decode_reference
    from asr_zoo.nn.transducer import Joiner, LSTMPredictor

    torch.manual_seed(0)
    predictor, joiner = LSTMPredictor(VOCAB, 128, 256).eval(), Joiner(144, 256, 256, VOCAB).eval()
    with torch.no_grad():
        joiner.out.bias[0] += blank_bias  # about 4 tokens/s (one per ~6 encoder frames)
        enc = joiner.encoder_proj(torch.randn(B, T, 144))
    lengths = torch.randint(T // 5, T + 1, (B,), generator=torch.Generator().manual_seed(0))
    lengths[0] = T

    def predict(tokens, state):
        out, state = predictor.predict(tokens, state)
        return joiner.predictor_proj(out), state

    decoders = {"reference": rnnt_greedy_decode_reference, "label_looping": rnnt_greedy_decode}
    with torch.no_grad():
        hyps = {name: fn(enc, lengths, predict, joiner.join) for name, fn in decoders.items()}
        seconds = interleaved_seconds({name: (lambda fn=fn: fn(enc, lengths, predict, joiner.join))
                                       for name, fn in decoders.items()}, repeats, warmup=0)
    wall = {name: [1e3 * t for t in ts] for name, ts in seconds.items()}
    records = []
    for name in decoders:
        ms = statistics.median(wall[name])
        records.append({"section": "greedy", "decoder": name, "B": B, "T": T, "median_ms": ms,
                        "utt_per_s": B / ms * 1e3,
                        "tokens_per_utt": sum(map(len, hyps[name].tokens)) / B,
                        "frames_per_utt": float(lengths.float().mean())})
    same = hyps["reference"].tokens == hyps["label_looping"].tokens and \
        hyps["reference"].frames == hyps["label_looping"].frames
    for r in records:
        r["identical_hypotheses"] = same
        r["speedup_vs_reference"] = records[0]["median_ms"] / r["median_ms"]
    return records


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; write ``train_step.jsonl``, ``.md`` and ``.png`` under ``args.out``."""
    from asr_zoo.hardware import cpu_arithmetic

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    attentions = ["softmax"] if args.quick else (args.attention or list(ATTENTIONS))
    repeats = 2 if args.quick else args.repeats
    labels = args.objective or list(OBJECTIVES)
    labels = ["ctc"] + [label for label in labels if label != "ctc"]
    vocab, rate = TOKENIZERS[args.tokenizer]
    batch = synthetic_batch(args.seed, vocab=vocab, tokens_per_second=rate)
    common = {"threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
              "torch": torch.__version__, **cpu_arithmetic(),
              "tokenizer": args.tokenizer, "vocab": vocab,
              "batch": {"utterances": len(batch["ids"]), "seconds": float(batch["feat_lens"].sum()) / 100,
                        "max_frames": int(batch["feat_lens"].max()), "max_tokens": int(batch["token_lens"].max())}}
    print(json.dumps(common))
    records = []

    def emit(record):
        record.update(common, load_avg_1min=os.getloadavg()[0])
        records.append(record)
        print(json.dumps({k: v for k, v in record.items() if k not in common}), flush=True)

    for attention in attentions:
        base = None
        for label in labels:
            r = _train_step_record(label, attention, batch, repeats, vocab)
            base = base or r
            r["time_vs_ctc"], r["mem_vs_ctc"] = r["median_ms"] / base["median_ms"], r["peak_mb"] / base["peak_mb"]
            emit(r)
    for r in _joint_records(max(3, repeats)):
        emit(r)
    if not args.skip_greedy:
        for r in _greedy_records(max(7, repeats)):
            emit(r)
    table = markdown(records)
    write_records(args.out, "train_step", records, table)
    print(table)
    plot(records, args.out / "train_step.png")
    return 0


def markdown(records: list[dict]) -> str:
    """Markdown tables of the three sections."""
    lines = ["| objective | attention | median ms | CPU ms | peak MB | time / CTC | CPU time / CTC | memory / CTC |",
             "|---|---|---|---|---|---|---|---|"]
    ctc_cpu = {r["attention"]: r["cpu_ms"] for r in records if r["section"] == "train_step" and r["objective"] == "ctc"}
    for r in records:
        if r["section"] == "train_step":
            cpu_ratio = r["cpu_ms"] / ctc_cpu[r["attention"]] if r["attention"] in ctc_cpu else float("nan")
            lines.append(f"| {r['objective']} | {r['attention']} | {r['median_ms']:.0f} | {r['cpu_ms']:.0f} | "
                         f"{r['peak_mb']:.0f} | {r['time_vs_ctc']:.2f} | {cpu_ratio:.2f} | {r['mem_vs_ctc']:.2f} |")
    lines += ["", "| joint + loss | B | T | U | S | median ms | peak MB | memory / full | time / full |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["section"] == "joint":
            lines.append(f"| {r['loss']} | {r['B']} | {r['T']} | {r['U']} | {r['s_range']} | {r['median_ms']:.0f} | "
                         f"{r['peak_mb']:.1f} | {r['mem_vs_full']:.3f} | {r['time_vs_full']:.2f} |")
    greedy = [r for r in records if r["section"] == "greedy"]
    if greedy:
        lines += ["", "| greedy decoder | B | tokens / utt | frames / utt | median ms | utt / s | speed-up | identical |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in greedy:
            lines.append(f"| {r['decoder']} | {r['B']} | {r['tokens_per_utt']:.1f} | {r['frames_per_utt']:.0f} | "
                         f"{r['median_ms']:.0f} | {r['utt_per_s']:.0f} | {r['speedup_vs_reference']:.2f} | "
                         f"{r['identical_hypotheses']} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """Bar chart: step time and peak memory relative to CTC, per objective, one bar per attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["section"] == "train_step"]
    objectives = list(dict.fromkeys(r["objective"] for r in steps))
    attentions = list(dict.fromkeys(r["attention"] for r in steps))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(attentions)
    for ax, key, title in ((axes[0], "time_vs_ctc", "training-step time / CTC"),
                           (axes[1], "mem_vs_ctc", "peak memory / CTC")):
        for i, attention in enumerate(attentions):
            values = {r["objective"]: r[key] for r in steps if r["attention"] == attention}
            ax.bar([k + i * width for k in range(len(objectives))], [values.get(o, 0) for o in objectives],
                   width, label=attention)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(objectives))], objectives, rotation=20)
        ax.set_title(title)
    axes[0].axhline(1.3, color="r", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    cap = steps[0]["cpu_capability"] if steps else ""
    fig.suptitle(f"one training step, demo config, 40 s batch, {steps[0]['threads'] if steps else ''} threads, {cap}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
