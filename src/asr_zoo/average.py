"""``asr-zoo average``: checkpoint averaging of a run's per-epoch checkpoints.

    asr-zoo average RUN --last N     # the N latest checkpoints/epoch-EEE.ckpt
    asr-zoo average RUN --best N     # the N with the lowest dev WER (logs/metrics.csv)

Writes ``RUN/checkpoints/averaged.ckpt``: the newest chosen checkpoint with its ``state_dict``
replaced by the element-wise mean of the chosen ones (floating-point tensors; integer buffers,
e.g. BatchNorm's ``num_batches_tracked``, are the newest's), so ``asr-zoo eval RUN --checkpoint
averaged`` decodes it like any other. Per-epoch checkpoints are kept by training with
``trainer.keep_epoch_checkpoints=N``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import torch

from .utils import atomic_replace, safe_torch_load

__all__ = ["average_checkpoints", "average_run", "epoch_checkpoints"]

_EPOCH = re.compile(r"epoch-(\d+)\.ckpt")


def average_checkpoints(paths: list[Path]) -> dict:
    """The last checkpoint of ``paths`` with ``state_dict`` = mean of all their state dicts.

    The mean is accumulated in float64 and cast back to each tensor's dtype, so averaging N
    copies of one checkpoint returns it bit for bit.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    states = [safe_torch_load(p)["state_dict"] for p in paths]
    keys = list(states[-1])
    for p, s in zip(paths, states):
        if list(s) != keys:
            raise ValueError(f"{p}: its parameters differ from {paths[-1]}'s (another model?)")
    averaged = {}
    for k in keys:
        newest = states[-1][k]
        if newest.is_floating_point():
            total = sum(s[k].to(torch.float64) for s in states)
            averaged[k] = (total / len(states)).to(newest.dtype)
        else:
            averaged[k] = newest
    checkpoint = safe_torch_load(paths[-1])
    checkpoint["state_dict"] = averaged
    checkpoint["averaged_from"] = [Path(p).name for p in paths]
    for key in ("optimizer_states", "lr_schedulers"):  # they belong to the newest weights alone
        checkpoint.pop(key, None)
    return checkpoint


def epoch_checkpoints(run_dir: Path) -> dict[int, Path]:
    """``{epoch: path}`` of the run's kept per-epoch checkpoints."""
    found = {}
    for p in (Path(run_dir) / "checkpoints").glob("epoch-*.ckpt"):
        m = _EPOCH.fullmatch(p.name)
        if m:
            found[int(m.group(1))] = p
    return found


def _dev_wer_by_epoch(run_dir: Path) -> dict[int, float]:
    """The dev WER logged at the end of each epoch (``logs/metrics.csv``)."""
    path = Path(run_dir) / "logs" / "metrics.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {int(r["epoch"]): float(r["val/wer"]) for r in csv.DictReader(f) if r.get("val/wer") and r.get("epoch")}


def average_run(run_dir: Path, last: int = 0, best: int = 0) -> Path:
    """Average the ``last`` newest (or ``best`` lowest-dev-WER) per-epoch checkpoints of a run
    into ``checkpoints/averaged.ckpt``; returns its path."""
    run_dir = Path(run_dir)
    kept = epoch_checkpoints(run_dir)
    n = last or best
    if (last > 0) == (best > 0):
        raise ValueError("give one of --last N or --best N (N >= 1)")
    if len(kept) < n:
        raise FileNotFoundError(f"{run_dir}: {len(kept)} per-epoch checkpoint(s) kept, {n} asked for; train with "
                                f"trainer.keep_epoch_checkpoints={n} (or more) to keep them")
    if last:
        epochs = sorted(kept)[-n:]
    else:
        wer = _dev_wer_by_epoch(run_dir)
        scored = [e for e in kept if e in wer]
        if len(scored) < n:
            raise FileNotFoundError(f"{run_dir}: only {len(scored)} kept epoch(s) have a dev WER in logs/metrics.csv")
        epochs = sorted(sorted(scored, key=lambda e: (wer[e], -e))[:n])
    checkpoint = average_checkpoints([kept[e] for e in epochs])
    out = run_dir / "checkpoints" / "averaged.ckpt"
    atomic_replace(out, lambda tmp: torch.save(checkpoint, tmp))
    print(f"{out}: mean of epochs {', '.join(map(str, epochs))}")
    return out
