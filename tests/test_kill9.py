"""kill -9 anywhere: ``prepare synth``, ``align`` and ``eval`` are SIGKILLed (whole process group)
at seeded random points while they work, rerun, and must leave nothing torn, nothing
duplicated, and the same outputs as an uninterrupted run. The harness is ``tests/faults.py``.

Set ``ASR_ZOO_KILL9_LOG=<file>`` to append one JSON line per case (kill delay, whether it
landed, rerun time, leftover temporaries).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_args
from faults import (assert_no_duplicates, assert_nothing_torn, cli_cmd, cut_set_content, default_env, kill_and_rerun,
                    kill_points, timed_run, tree_digest)

pytestmark = pytest.mark.slow

SEEDS = [0, 1, 2]
ENV = default_env(threads=1)
PREPARE = cli_cmd("prepare", "synth", "--out", "corpus", "--num-train", "24", "--num-dev", "4", "--num-test", "4",
                  "--workers", "2")
ALIGN = cli_cmd("align", "run", "--split", "train", "--split", "dev", "--split", "test", "--device", "cpu")
EVAL = cli_cmd("eval", "run", "--device", "cpu")


def _run_ok(cmd, cwd, watch=None):
    timed = timed_run(cmd, env=ENV, cwd=cwd, watch=watch)
    assert timed.rc == 0, timed.output[-3000:]
    return timed


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="session")
def k9_prepared(tmp_path_factory):
    """An uninterrupted ``prepare synth`` (paths inside are relative to the returned directory)."""
    work = tmp_path_factory.mktemp("k9_prepare_ref")
    return work, _run_ok(PREPARE, work, watch=work)


@pytest.fixture(scope="session")
def k9_trained(k9_prepared, tmp_path_factory):
    """The prepared corpus and a tiny CTC run trained on it, side by side (``corpus/``, ``run/``)."""
    work = tmp_path_factory.mktemp("k9_trained")
    _copy(k9_prepared[0] / "corpus", work / "corpus")
    _run_ok(cli_cmd(*tiny_train_args(Path("corpus"), Path("run"))), work)
    assert not (work / "corpus" / "fbank80" / "test_cuts.jsonl.gz").exists()  # left to align / eval
    return work


@pytest.fixture(scope="session")
def k9_align_ref(k9_trained, tmp_path_factory):
    work = _copy(k9_trained, tmp_path_factory.mktemp("k9_align") / "ref")
    return work, _run_ok(ALIGN, work, watch=work)


@pytest.fixture(scope="session")
def k9_eval_ref(k9_trained, tmp_path_factory):
    work = _copy(k9_trained, tmp_path_factory.mktemp("k9_eval") / "ref")
    return work, _run_ok(EVAL, work, watch=work)


def _kill_rerun_check(name: str, cmd, ref_timed, seed: int, work: Path):
    """Kill ``cmd`` once at a seeded point of ``ref_timed``'s working window, rerun, check."""
    delays = kill_points(seed, ref_timed.window())
    report = kill_and_rerun(cmd, delays, env=ENV, cwd=work,
                            after_kill=lambda _: assert_nothing_torn(work, cwd=work))  # committed files load
    assert report.rerun.rc == 0, report.rerun.output[-3000:]
    torn = assert_nothing_torn(work, cwd=work)
    assert_no_duplicates(work, cwd=work)
    assert not torn.findings, torn.findings
    if os.environ.get("ASR_ZOO_KILL9_LOG"):
        with open(os.environ["ASR_ZOO_KILL9_LOG"], "a") as f:
            f.write(json.dumps({"command": name, "seed": seed, "window": [round(x, 2) for x in ref_timed.window()],
                                "ref_s": round(ref_timed.seconds, 2),
                                "kills": [{"delay": k.delay, "landed": k.landed, "rc": k.rc} for k in report.kills],
                                "rerun_s": round(report.rerun.seconds, 2), "checked": dict(torn.checked),
                                "leftovers": [str(p.relative_to(work)) for p in torn.leftovers]}) + "\n")
    return report


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_prepare_synth(k9_prepared, tmp_path, seed):
    ref, ref_timed = k9_prepared
    _kill_rerun_check("prepare synth", PREPARE, ref_timed, seed, tmp_path)
    got, want = tmp_path / "corpus", ref / "corpus"
    assert tree_digest(got / "LibriSpeech") == tree_digest(want / "LibriSpeech")  # audio, transcripts, markers
    assert (got / "synth_info.json").read_bytes() == (want / "synth_info.json").read_bytes()
    for path in sorted((want / "manifests").iterdir()):
        if path.name.endswith(".jsonl.gz"):
            assert cut_set_content(got / "manifests" / path.name) == cut_set_content(path)
        elif path.name.endswith(".json"):
            assert (got / "manifests" / path.name).read_bytes() == path.read_bytes()


def _alignment_store(work: Path) -> tuple[dict, dict]:
    index = json.loads((work / "run" / "alignments.json").read_text())
    stores = {split: torch.load(work / index["dir"] / f"{split}.pt", weights_only=True) for split in index["splits"]}
    for stats in index["splits"].values():
        stats.pop("utts_per_s")
    for split, payload in stores.items():
        payload.pop("expert_run")  # absolute path of the run directory
        assert len(payload["alignments"]) == index["splits"][split]["aligned"]
    return index, stores


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_align(k9_trained, k9_align_ref, tmp_path, seed):
    ref, ref_timed = k9_align_ref
    work = _copy(k9_trained, tmp_path / "work")
    _kill_rerun_check("align", ALIGN, ref_timed, seed, work)
    (got_index, got), (want_index, want) = _alignment_store(work), _alignment_store(ref)
    assert got_index == want_index and set(got) == {"train", "dev", "test"}
    for split in want:
        assert got[split].keys() == want[split].keys()
        a, b = got[split]["alignments"], want[split]["alignments"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b), split


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_eval(k9_trained, k9_eval_ref, tmp_path, seed):
    ref, ref_timed = k9_eval_ref
    work = _copy(k9_trained, tmp_path / "work")
    _kill_rerun_check("eval", EVAL, ref_timed, seed, work)
    got, want = (json.loads((w / "run" / "results" / "test.json").read_text()) for w in (work, ref))
    for key in ("objective", "split", "num_utts", "wer", "cer", "decode_steps", "params"):
        assert got[key] == want[key], key
    assert (work / "run/results/test.hyps.tsv").read_bytes() == (ref / "run/results/test.hyps.tsv").read_bytes()
    assert sorted(p.name for p in (work / "run/results").iterdir()) == ["test.hyps.tsv", "test.json"]
