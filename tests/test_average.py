"""Checkpoint averaging: the mean of equal checkpoints is that checkpoint, of two their mean;
end to end, per-epoch checkpoints -> `asr-zoo average` -> `asr-zoo eval --checkpoint averaged`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_train_args

from asr_zoo.average import average_checkpoints, average_run
from asr_zoo.cli import main


def _ckpt(path, w: torch.Tensor, steps: int = 7):
    torch.save({"state_dict": {"w": w, "n": torch.tensor(steps)}, "hyper_parameters": {"vocab_size": 3},
                "optimizer_states": [{}], "global_step": steps}, path)
    return path


def test_average_of_equal_checkpoints_is_that_checkpoint(tmp_path):
    w = torch.randn(5, 3)
    paths = [_ckpt(tmp_path / f"{i}.ckpt", w.clone()) for i in range(3)]
    out = average_checkpoints(paths)
    assert torch.equal(out["state_dict"]["w"], w)  # bit for bit (float64 accumulation)
    assert out["hyper_parameters"] == {"vocab_size": 3} and "optimizer_states" not in out


def test_average_of_two_is_their_mean(tmp_path):
    a, b = torch.randn(4, 2), torch.randn(4, 2)
    out = average_checkpoints([_ckpt(tmp_path / "a.ckpt", a, 1), _ckpt(tmp_path / "b.ckpt", b, 2)])
    torch.testing.assert_close(out["state_dict"]["w"], (a + b) / 2, rtol=0, atol=1e-7)
    assert int(out["state_dict"]["n"]) == 2  # integer buffers: the newest's


def test_mismatched_checkpoints_are_refused(tmp_path):
    torch.save({"state_dict": {"v": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="differ"):
        average_checkpoints([tmp_path / "x.ckpt", _ckpt(tmp_path / "a.ckpt", torch.zeros(1))])


def test_keep_epoch_checkpoints_average_and_eval(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "avg"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=-1", "trainer.max_epochs=3",
                                "data.max_duration=60", "trainer.keep_epoch_checkpoints=2",
                                "trainer.val_max_utts=2")) == 0
    kept = sorted(p.name for p in (run / "checkpoints").glob("epoch-*.ckpt"))
    assert kept == ["epoch-001.ckpt", "epoch-002.ckpt"]  # the last two epochs
    assert main(["average", str(run), "--last", "2"]) == 0
    averaged = torch.load(run / "checkpoints" / "averaged.ckpt", weights_only=True)
    e1, e2 = (torch.load(run / "checkpoints" / k, weights_only=True)["state_dict"] for k in kept)
    name = next(k for k, v in e2.items() if v.is_floating_point() and v.ndim == 2)
    torch.testing.assert_close(averaged["state_dict"][name], (e1[name] + e2[name]) / 2)
    assert main(["average", str(run), "--best", "1"]) == 0
    assert main(["average", str(run), "--last", "3"]) == 2  # only two kept: a one-line error
    assert "keep_epoch_checkpoints" in capsys.readouterr().err
    average_run(run, last=2)
    assert main(["eval", str(run), "--checkpoint", "averaged", "--split", "test", "--max-utts", "2"]) == 0
    assert json.loads((run / "results" / "test.json").read_text())["checkpoint"] == "averaged"
