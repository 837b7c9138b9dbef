"""kill -9 anywhere: ``prepare synth``, ``align`` and ``eval`` are SIGKILLed (whole process group)
at seeded random points while they work, rerun, and must leave nothing torn, nothing
duplicated, and the same outputs as an uninterrupted run. The harness is ``tests/faults.py``.

Set ``ASR_ZOO_KILL9_LOG=<file>`` to append one JSON line per case (kill delay, whether it
landed, the killed command's last output line, rerun time, leftover temporaries), and
``ASR_ZOO_KILL9_SEEDS=<n>`` to kill each command at ``n`` seeded points instead of 3.
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

SEEDS = list(range(int(os.environ.get("ASR_ZOO_KILL9_SEEDS", "3"))))  # kills per command
ENV = default_env(threads=1)
PREPARE = cli_cmd("prepare", "synth", "--out", "corpus", "--num-train", "24", "--num-dev", "4", "--num-test", "4",
                  "--workers", "2")
ALIGN = cli_cmd("align", "run", "--split", "train", "--split", "dev", "--device", "cpu")  # two stores, two pointer updates
EVAL = cli_cmd("eval", "run", "--device", "cpu")


def _run_ok(cmd, cwd, watch=None):
    timed = timed_run(cmd, env=ENV, cwd=cwd, watch=watch)
    assert timed.rc == 0, timed.output[-3000:]
    return timed


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _recopy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst)
    return _copy(src, dst)


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


def _last_line(output: str) -> str:
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][-160:] if lines else ""


def _kill_rerun_check(name: str, cmd, ref_timed, seed: int, work: Path, reset):
    """Kill ``cmd`` once at a seeded point of its work (counted from its first write, within the
    reference run's span from first to last write), rerun, check."""
    delays = kill_points(seed, ref_timed.work_window())
    report = kill_and_rerun(cmd, delays, env=ENV, cwd=work, watch=work, reset=reset,
                            after_kill=lambda _: assert_nothing_torn(work, cwd=work))  # committed files load
    assert report.kills[-1].landed, report.summary()
    assert report.rerun.rc == 0, report.rerun.output[-3000:]
    torn = assert_nothing_torn(work, cwd=work)
    assert_no_duplicates(work, cwd=work)
    assert not torn.findings, torn.findings
    if os.environ.get("ASR_ZOO_KILL9_LOG"):
        with open(os.environ["ASR_ZOO_KILL9_LOG"], "a") as f:
            f.write(json.dumps({"command": name, "seed": seed, "ref_s": round(ref_timed.seconds, 2),
                                "ref_first_write_s": round(ref_timed.first_write_s or 0.0, 2),
                                "ref_last_write_s": round(ref_timed.last_write_s or 0.0, 2),
                                "kills": [{"after_first_write_s": k.delay, "at_s": k.at_s, "landed": k.landed,
                                           "rc": k.rc, "last_output": _last_line(k.output)}
                                          for k in report.kills],  # not landed: retried
                                "rerun_s": round(report.rerun.seconds, 2), "checked": dict(torn.checked),
                                "leftovers": [str(p.relative_to(work)) for p in torn.leftovers]}) + "\n")
    return torn


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_prepare_synth(k9_prepared, tmp_path, seed):
    ref, ref_timed = k9_prepared
    torn = _kill_rerun_check("prepare synth", PREPARE, ref_timed, seed, tmp_path,
                             reset=lambda: shutil.rmtree(tmp_path / "corpus"))
    # the synthesis removes its own temporaries; manifests/.tmp-* (data/prepare.py) may stay
    assert not [p for p in torn.leftovers if "manifests" not in p.parts], torn.leftovers
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
    torn = _kill_rerun_check("align", ALIGN, ref_timed, seed, work, reset=lambda: _recopy(k9_trained, work))
    assert not torn.leftovers, torn.leftovers  # align removes what a killed run left
    (got_index, got), (want_index, want) = _alignment_store(work), _alignment_store(ref)
    assert got_index == want_index and set(got) == {"train", "dev"}
    for split in want:
        assert got[split].keys() == want[split].keys()
        a, b = got[split]["alignments"], want[split]["alignments"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b), split


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_eval(k9_trained, k9_eval_ref, tmp_path, seed):
    ref, ref_timed = k9_eval_ref
    work = _copy(k9_trained, tmp_path / "work")
    _kill_rerun_check("eval", EVAL, ref_timed, seed, work, reset=lambda: _recopy(k9_trained, work))
    got, want = (json.loads((w / "run" / "results" / "test.json").read_text()) for w in (work, ref))
    for key in ("objective", "split", "num_utts", "wer", "cer", "decode_steps", "params"):
        assert got[key] == want[key], key
    names = sorted(p.name for p in (ref / "run/results").iterdir())
    assert sorted(p.name for p in (work / "run/results").iterdir()) == names and "test.hyps.tsv" in names
    for name in names:  # hypotheses (and any per-utterance table) byte for byte
        if name.endswith(".tsv"):
            assert (work / "run/results" / name).read_bytes() == (ref / "run/results" / name).read_bytes(), name


# -- the harness itself: it must see torn files, duplicates and stray processes -----------------

def test_checkers_see_torn_files_and_duplicates(tmp_path):
    import gzip

    from lhotse import CutSet, MonoCut, SupervisionSegment

    cut = MonoCut("a-1-0000", 0.0, 1.0, 0, supervisions=[SupervisionSegment("a-1-0000", "a-1-0000", 0.0, 1.0, text="HI")])
    CutSet.from_cuts([cut]).to_file(tmp_path / "ok_cuts.jsonl.gz")
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert assert_nothing_torn(tmp_path).checked == {"cut sets": 1, "torch files": 1, "json": 1}

    whole = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "torn.json").write_text('{"a": ')
    line = json.dumps(cut.to_dict()) + "\n"
    (tmp_path / "torn_cuts.jsonl.gz").write_bytes(gzip.compress(line.encode())[:-12])
    (tmp_path / "r.hyps.tsv").write_text("utt_id\treference\thypothesis\nx\tA\n")
    (tmp_path / ".ok.json.abc123.tmp").write_text("{")  # an interrupted atomic_replace
    with pytest.raises(AssertionError) as e:
        assert_nothing_torn(tmp_path)
    for name in ("torn.pt", "torn.json", "torn_cuts.jsonl.gz", "r.hyps.tsv"):
        assert name in str(e.value)
    assert ".ok.json.abc123.tmp" not in str(e.value)

    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / ".tmp-123-x_cuts.jsonl.gz").write_bytes(b"\x1f")
    torch.save({"p": Path("x")}, clean / "unsafe.pt")  # whole, but not loadable with weights_only=True
    report = assert_nothing_torn(clean)
    assert [p.name for p in report.leftovers] == [".tmp-123-x_cuts.jsonl.gz"]
    assert len(report.findings) == 1 and "weights_only=False" in report.findings[0]

    dup = tmp_path / "dup"
    dup.mkdir()
    CutSet.from_cuts([cut, cut.with_id("a-1-0001"), cut.with_id("a-1-0001")]).to_file(dup / "d_cuts.jsonl.gz")
    (dup / "d.hyps.tsv").write_text("utt_id\treference\thypothesis\nx\tA\tB\nx\tA\tB\n")
    chapter = dup / "LibriSpeech" / "train" / "1" / "2"
    chapter.mkdir(parents=True)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 A\n1-2-0000 A\n")
    with pytest.raises(AssertionError) as e:
        assert_no_duplicates(dup)
    msg = str(e.value)
    assert "cut ids repeated: ['a-1-0001']" in msg and "utterances repeated: ['x']" in msg
    assert "transcript ids repeated: ['1-2-0000']" in msg


def test_kill_and_rerun_kills_the_process_group(tmp_path):
    """A worker started by the command dies with it; a command that ends first is reported so."""
    import sys

    script = ("import subprocess, sys, time; from pathlib import Path\n"
              "if Path('child.pid').exists(): sys.exit(0)\n"
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "Path('child.pid').write_text(str(c.pid)); time.sleep(60)\n")
    seen = []

    def after_kill(kill):
        pid = int((tmp_path / "child.pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        seen.append(kill)

    report = kill_and_rerun([sys.executable, "-c", script], [1.0], cwd=tmp_path, after_kill=after_kill)
    assert seen and seen[0].landed and seen[0].rc == -9 and report.rerun.rc == 0
    resets = []
    report = kill_and_rerun([sys.executable, "-c", "pass"], [5.0], cwd=tmp_path, reset=lambda: resets.append(1))
    assert [(k.delay, k.landed, k.rc) for k in report.kills] == [(5.0, False, 0), (2.5, False, 0), (1.25, False, 0)]
    assert len(resets) == 2 and report.rerun.rc == 0


def test_prepare_synth_rerun_removes_its_temporaries(k9_prepared, tmp_path):
    """What a kill can leave mid-write (a FLAC, a transcript, a marker, synth_info.json under their
    temporary names) is gone after the rerun, and the corpus is unchanged."""
    from asr_zoo.data.synth import prepare_synth

    ref = k9_prepared[0] / "corpus"
    out = _copy(ref, tmp_path / "corpus")
    dev = out / "LibriSpeech" / "dev"
    (dev / ".done").unlink()
    chapter = next(p.parent for p in dev.glob("*/*/*.trans.txt"))
    flac = next(chapter.glob("*.flac"))
    stale = [out / ".tmp-12345-synth_info.json", dev / ".tmp-12345-.done", chapter / f".tmp-1-{chapter.parent.name}-x.trans.txt",
             flac.with_name(f".tmp-12345-{flac.name}")]
    for p in stale:
        p.write_bytes(b"partial")
    prepare_synth(out, num_train=24, num_dev=4, num_test=4, num_workers=1, progress=False)
    assert not [p for p in stale if p.exists()]
    assert tree_digest(out / "LibriSpeech") == tree_digest(ref / "LibriSpeech")
    assert (out / "synth_info.json").read_bytes() == (ref / "synth_info.json").read_bytes()


def test_align_rerun_cleans_up_and_points_at_its_store(k9_trained, k9_align_ref, tmp_path, monkeypatch):
    """Temporaries of a killed store or pointer write are removed on rerun; a pointer naming
    another store directory (the run was renamed) is replaced, not kept with the new split
    added: it must name the directory the stores were written to."""
    from asr_zoo.aligner import align_run

    work = _copy(k9_trained, tmp_path / "work")
    monkeypatch.chdir(work)
    store = Path(json.loads((k9_align_ref[0] / "run" / "alignments.json").read_text())["dir"])
    stale = [work / store / ".tmp-abc123-train.pt", work / "run" / ".tmp-xyz789-alignments.json"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    (work / "run" / "alignments.json").write_text(json.dumps({"dir": "corpus/alignments/old-12345678",
                                                              "splits": {"train": {"aligned": 1}}}))
    index = align_run(Path("run"), ["train"])
    assert index["dir"] == str(store) and list(index["splits"]) == ["train"]
    assert (work / store / "train.pt").exists() and not [p for p in stale if p.exists()]
    assert json.loads((work / "run" / "alignments.json").read_text())["dir"] == index["dir"]
