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
    assert sum(v <= 1e-4 + 1e-9 for v in values) <= 3, lrs  # the horizon is counted: no long tail at the floor
    assert steps == sorted(steps)


def test_split_roles_resolve_to_the_configured_splits():
    import pytest

    from asr_zoo.config import ConfigError, compose
    from asr_zoo.data.splits import resolve_split, split_names

    ls = compose(["data=librispeech"]).data
    assert resolve_split(ls, "test") == ls.test_split != "test"
    assert resolve_split(ls, "dev") == ls.dev_split
    assert split_names(ls, "train") == list(ls.train_splits)
    assert resolve_split(ls, "test-other") == "test-other"  # directory names pass through
    if len(ls.train_splits) > 1:
        with pytest.raises(ConfigError, match="name one of them"):
            resolve_split(ls, "train")
    synth = compose([]).data
    assert [resolve_split(synth, r) for r in ("dev", "test")] == ["dev", "test"]


def test_eval_split_role_on_a_librispeech_layout_run(tiny_corpus, tmp_path):
    """`asr-zoo eval RUN --split test` on a run whose test split is test-clean."""
    import json
    import shutil

    root = tmp_path / "ls"
    for src, dst in [("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean")]:
        shutil.copytree(tiny_corpus / "LibriSpeech" / src, root / "LibriSpeech" / dst)
    run = tmp_path / "run"
    assert main(tiny_train_args(root, run, "data.train_splits=[train-clean-100]", "data.dev_split=dev-clean",
                                "data.test_split=test-clean", "trainer.max_steps=1")) == 0
    assert main(["eval", str(run), "--split", "test", "--max-utts", "2"]) == 0
    assert json.loads((run / "results" / "test-clean.json").read_text())["split"] == "test-clean"
