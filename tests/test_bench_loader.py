"""``asr-zoo bench loader`` on the tiny corpus: every storage and worker count gives a record with
its throughput fields, every training utterance delivered once per epoch."""

from __future__ import annotations

import json

from asr_zoo.cli import main

LOADER_KEYS = {"storage", "workers", "batches", "utts", "distinct_utts", "audio_h", "hours_per_s", "batches_per_s",
               "utts_per_s", "hours_per_cpu_s", "first_batch_s", "padding_frac", "cpu_capability", "load_avg_1min", "hours_per_s_runs"}


def test_bench_loader_records(tiny_corpus, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "loader", "--out", str(out), "--root", str(tiny_corpus), "--workers", "0", "1",
                 "--repeats", "1", "--extract", "3", "data.tokenizer.vocab_size=40"]) == 0
    records = [json.loads(line) for line in (out / "loader.jsonl").read_text().splitlines()]
    loaders = [r for r in records if r["section"] == "loader"]
    assert {(r["storage"], r["workers"]) for r in loaders} == {(s, w) for s in ("lilcom_chunky", "shar_lilcom",
                                                                               "shar_numpy") for w in (0, 1)}
    for r in loaders:
        assert LOADER_KEYS <= r.keys() and r["hours_per_s"] > 0 and r["cpu_capability"]
        assert r["utts"] == r["distinct_utts"] == r["train_utts"] == 40  # one epoch, each utterance once
    storage = {r["storage"]: r for r in records if r["section"] == "storage"}
    assert storage.keys() == {"lilcom_chunky", "shar_lilcom", "shar_numpy"}
    assert all(r["bytes_per_hour"] > 0 for r in storage.values())
    extract = next(r for r in records if r["section"] == "extract")
    assert extract["utts"] == 3 and extract["hours_per_s"] > 0
    assert "| storage | workers |" in (out / "loader.md").read_text()
