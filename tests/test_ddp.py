"""DDP correctness on CPU (gloo): gradient parity with one process, every training cut once per
epoch across ranks, dev WER of 2 ranks = 1 process, 2 nodes x 1 process end to end (checkpoints
and results written once, resume from last.ckpt). Launched in subprocesses as users launch it."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_train_args

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env=ENV, timeout=300) -> None:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def test_gradients_of_two_ranks_equal_one_process(tiny_corpus, tmp_path):
    """One process on 2k utterances vs 2 ranks on k each, same initial weights, float64: the
    loss (mean of the ranks') and every all-reduced parameter gradient agree within 1e-6."""
    out = tmp_path / "parity.json"
    for attempt in range(3):  # two gloo processes on localhost: a rare stalled rendezvous is retried
        try:
            _run([sys.executable, str(HERE / "ddp_scripts.py"), "parity", str(tiny_corpus), str(out)],
                 env={**ENV, "PARITY_PORT": str(_free_port())}, timeout=120)
            break
        except (subprocess.TimeoutExpired, AssertionError):
            if attempt == 2:
                raise
    r = json.loads(out.read_text())
    assert r["missing"] == [] and r["params"] > 10
    assert r["loss_abs_diff"] < 1e-6 * max(1.0, abs(r["loss_1proc"]))
    assert r["max_grad_abs_diff"] < 1e-6, r


@pytest.fixture(scope="module")
def datamodule(tiny_corpus):
    from asr_zoo.config import compose
    from asr_zoo.data.datamodule import ASRDataModule

    cfg = compose([f"data.root={tiny_corpus}", "data.tokenizer.vocab_size=40", "data.num_workers=0"])
    dm = ASRDataModule(cfg.data, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("max_duration", [7.0, 10.0, 20.0, 33.0])
def test_each_training_cut_once_per_epoch_across_ranks(datamodule, monkeypatch, max_duration):
    """lhotse's bucketing sampler, as the datamodule builds it on rank r of 2 (it reads RANK /
    WORLD_SIZE): equal batch counts on both ranks, and each epoch every training cut exactly once."""
    previous, datamodule.cfg.max_duration = datamodule.cfg.max_duration, max_duration
    try:
        _check_every_cut_once(datamodule, monkeypatch)
    finally:
        datamodule.cfg.max_duration = previous


def _check_every_cut_once(datamodule, monkeypatch) -> None:
    want = sorted(c.id for c in datamodule.train_cuts)
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            monkeypatch.setenv("WORLD_SIZE", "2")
            monkeypatch.setenv("RANK", str(rank))
            sampler = datamodule.train_dataloader().sampler
            assert (sampler.world_size, sampler.rank) == (2, rank)
            sampler.set_epoch(epoch)
            per_rank.append([[c.id for c in batch] for batch in sampler])
        assert len(per_rank[0]) == len(per_rank[1]) > 0  # ranks step together
        seen = [i for batches in per_rank for b in batches for i in b]
        assert sorted(seen) == want, f"epoch {epoch}: duplicated or missing cuts"
        # the LR horizon's count: epoch 0 exactly, other shuffles within a batch or two
        assert abs(len(per_rank[0]) - datamodule.estimated_batches_per_epoch(2)) <= (0 if epoch == 0 else 2)


def test_dev_loader_counts_each_utterance_once(datamodule, monkeypatch):
    import asr_zoo.data.datamodule as dmod

    want = sorted(c.id for c in datamodule.dev_cuts)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(dmod, "_rank_and_world_size", lambda r=rank: (r, 2))
        seen += [i for batch in datamodule.val_dataloader() for i in batch["ids"]]
    assert sorted(seen) == want


def _two_nodes(tiny_corpus, run: Path, *extra: str) -> None:
    """`asr-zoo train` as two nodes x one process on localhost: the env a cluster launcher sets."""
    args = tiny_train_args(tiny_corpus, run, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
                           "trainer.max_steps=-1", "data.max_duration=20", "trainer.num_threads=1",
                           "trainer.log_every_n_steps=1", *extra)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "asr_zoo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                              "NODE_RANK": str(node), "WORLD_SIZE": "2"})
             for node in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)


def test_two_nodes_train_resume_and_validate_like_one_process(tiny_corpus, tmp_path):
    run = tmp_path / "ddp"
    _two_nodes(tiny_corpus, run, "trainer.max_epochs=1")
    first = json.loads((run / "train_summary.json").read_text())
    assert first["steps"] > 0 and first["epochs"] == 1
    # a run killed after its first epoch (last.ckpt written, no summary) resumes from last.ckpt
    # with a larger epoch budget, still on 2 nodes
    (run / "train_summary.json").unlink()
    _two_nodes(tiny_corpus, run, "trainer.max_epochs=2")
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_at_step"] == first["steps"] and summary["steps"] == 2 * first["steps"]
    # written once: no versioned duplicates, one CSV row per logged step
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    with open(run / "logs" / "metrics.csv", newline="") as f:
        steps = [r["step"] for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(steps) == len(set(steps)) == summary["steps"]

    # dev WER of last.ckpt: 2 processes (unequal shards: 7 utterances) == 1 process
    wers = {}
    for n in (1, 2):
        out = tmp_path / f"val{n}.json"
        _run([sys.executable, str(HERE / "ddp_scripts.py"), "validate", str(run), str(n), str(out)],
             env={**ENV, "MASTER_PORT": str(_free_port())})
        wers[n] = json.loads(out.read_text())["wer"]
        seen = [i for r in range(n) for i in json.loads(Path(f"{out}.rank{r}").read_text())]
        assert len(seen) == len(set(seen)) == 7
    assert abs(wers[1] - wers[2]) < 1e-9, wers
