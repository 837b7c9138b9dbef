"""An Imputer's training cost in the comparison includes its expert's (the CTC model it was
aligned with and started from): compare's train_time_s sums the expert chain."""

import json

from asr_zoo.config import compose, save_config
from asr_zoo.report.table import collect_rows


def _run(path, seconds, expert="", seed=0):
    (path / "results").mkdir(parents=True)
    (path / "train_summary.json").write_text(json.dumps({"train_time_s": seconds}))
    overrides = [f"seed={seed}"] + (["objective=imputer_dp", f"objective.expert={expert}"] if expert else [])
    save_config(compose(overrides), path / "config.yaml")
    (path / "results" / "test.json").write_text(json.dumps({"split": "test", "wer": 1.0, "sub": 1.0}))


def test_imputer_train_time_includes_its_expert_chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path / "runs" / "ctc-s3", 100.0, seed=3)
    _run(tmp_path / "runs" / "dp-s3", 40.0, expert="runs/ctc-s{seed}", seed=3)  # placeholder as saved
    _run(tmp_path / "runs" / "dp2", 5.0, expert="runs/dp-s3", seed=3)  # a chain of two
    _run(tmp_path / "runs" / "lost", 7.0, expert="runs/nowhere")  # an expert that is gone adds nothing
    rows = {r["run"]: r["train_time_s"] for r in collect_rows(sorted((tmp_path / "runs").iterdir()), "test")}
    assert rows == {"ctc-s3": 100.0, "dp-s3": 140.0, "dp2": 145.0, "lost": 7.0}


def test_imputer_runs_group_by_their_experts_configuration_not_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path / "runs" / "ctc-s0", 1.0, seed=0)
    _run(tmp_path / "elsewhere" / "demo-ctc", 1.0, seed=1)  # same config, other seed and place
    _run(tmp_path / "runs" / "dp-s0", 1.0, expert="runs/ctc-s{seed}", seed=0)
    _run(tmp_path / "runs" / "dp-s1", 1.0, expert=str(tmp_path / "elsewhere" / "demo-ctc"), seed=1)
    rows = collect_rows([tmp_path / "runs" / "dp-s0", tmp_path / "runs" / "dp-s1"], "test")
    keys = {r["config"]["objective.expert"] for r in rows}
    assert len(keys) == 1 and next(iter(keys)).startswith("expert config ")
