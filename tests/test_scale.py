"""Training at scale on one machine: the cosine schedule under an epoch budget, the progress
total, per-epoch checkpoints, split roles."""

from __future__ import annotations

import csv
import math

from conftest import tiny_train_args

from asr_zoo.cli import main


def _lr_rows(run) -> list[tuple[int, float]]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    key = next(k for k in rows[0] if k.startswith("lr-AdamW"))
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def test_cosine_decays_under_an_epoch_budget(tiny_corpus, tmp_path):
    """trainer=cpu bounds the run by max_epochs only (max_steps=-1): the schedule's length comes
    from the datamodule's estimate of batches per epoch, so the LR decays to the floor."""
    run = tmp_path / "cos"
    assert main(tiny_train_args(tiny_corpus, run, "trainer=cpu", "trainer.max_steps=-1", "trainer.max_epochs=3",
                                "data.max_duration=20", "trainer.log_every_n_steps=1", "optim.warmup_steps=2",
                                "optim.lr=1e-3", "optim.min_lr_ratio=0.1", "trainer.val_max_utts=2")) == 0
    lrs = _lr_rows(run)
    steps = [s for s, _ in lrs]
    values = [v for _, v in lrs]
    assert len(lrs) >= 6, lrs
    peak = max(values)
    assert math.isclose(peak, 1e-3, rel_tol=0.1)  # warm-up reached the peak
    after = values[values.index(peak):]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:])), lrs  # monotone decay after the peak
    assert after[-1] < 0.3e-3, lrs  # decayed most of the way to the 1e-4 floor, not constant
    assert steps == sorted(steps)
