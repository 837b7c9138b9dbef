"""`asr-zoo prepare fsdd`: FSDD's isolated digits joined into connected digits, split by speaker.

A fake FSDD (tone bursts named like the real files) stands in for the clone; what is checked is
the split by speaker, that every recording is used once per pass, that transcripts follow the
file names, the audio is the recordings and pauses, and that the corpus loads as manifests."""

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from asr_zoo.cli import main
from asr_zoo.config import compose
from asr_zoo.data.fsdd import DIGIT_WORDS, digit_strings, join_recordings, noise_floor, prepare_fsdd, read_fsdd
from asr_zoo.data.prepare import PreparedData

RATE = 8000


def _fake_fsdd(root, speakers=("ann", "bob", "cid", "dan"), digits=(0, 3, 7), per_digit=2):
    """Each recording is a tone whose length encodes (speaker, digit): 0.2-0.4 s."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    lengths = {}
    for s, speaker in enumerate(speakers):
        for d in digits:
            for i in range(per_digit):
                n = 1600 + 40 * (s * 10 + d)
                t = np.arange(n) / RATE
                sf.write(rec / f"{d}_{speaker}_{i}.wav", 0.3 * np.sin(2 * np.pi * 300 * t), RATE, subtype="PCM_16")
                lengths[f"{d}_{speaker}_{i}.wav"] = n
    return lengths


def test_digit_strings_partition_every_index_once():
    rng = np.random.default_rng(0)
    groups = digit_strings(103, rng, 2, 5)
    assert sorted(i for g in groups for i in g) == list(range(103))
    assert all(2 <= len(g) <= 5 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 5
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        digit_strings(5, rng, 3, 2)


def test_join_puts_noise_at_the_floor_between_the_recordings():
    rng = np.random.default_rng(0)
    a, b = np.ones(100, np.float32), -np.ones(50, np.float32)
    out = join_recordings([a, b], [400], 0.01, rng)
    assert out.shape == (550,) and (out[:100] == 1).all() and (out[500:] == -1).all()
    assert 0.008 < out[100:500].std() < 0.012
    with pytest.raises(ValueError, match="need 1 pauses"):
        join_recordings([a, b], [], 0.01, rng)
    quiet = np.concatenate([np.zeros(160), np.ones(320)]).astype(np.float32)
    assert noise_floor(quiet, RATE) == 0.0 and noise_floor(np.ones(10, np.float32), RATE) == 1.0


def test_prepare_splits_by_speaker_and_uses_each_recording_once_per_pass(tmp_path):
    lengths = _fake_fsdd(tmp_path / "src")
    out = tmp_path / "fsdd"
    info = prepare_fsdd(tmp_path / "src", out, ("bob",), ("cid",), min_digits=2, max_digits=3, train_passes=2)
    rows = {split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "dev", "test")}
    assert {r["speaker"] for r in rows["train"]} == {"ann", "dan"}
    assert {r["speaker"] for r in rows["dev"]} == {"bob"} and {r["speaker"] for r in rows["test"]} == {"cid"}
    for split, passes, speakers in (("train", 2, 2), ("dev", 1, 1), ("test", 1, 1)):
        words = Counter(w for r in rows[split] for w in r["text"].split())
        assert words == {DIGIT_WORDS[d]: 2 * passes * speakers for d in (0, 3, 7)}  # 2 recordings each
        assert info["splits"][split]["digits"] == 6 * passes * speakers
        for r in rows[split]:
            audio, rate = sf.read(out / r["audio"])
            n = len(r["text"].split())
            assert rate == RATE and 1 <= n <= 3  # 2-3, or fewer in the last string of a partition
            # the recordings' samples plus n - 1 pauses of 50-250 ms
            assert 0.05 * (n - 1) * RATE <= len(audio) - _recorded(r, lengths) <= 0.25 * (n - 1) * RATE
    assert info["splits"]["test"]["speakers"] == {"cid": "unknown"}
    assert len({r["id"] for split in rows.values() for r in split}) == sum(map(len, rows.values()))

    # same options: nothing to do; other options: refused rather than mixed
    (out / "train.jsonl").write_text("untouched\n")
    assert prepare_fsdd(tmp_path / "src", out, ("bob",), ("cid",), 2, 3, 2) == info
    assert (out / "train.jsonl").read_text() == "untouched\n"
    with pytest.raises(FileExistsError, match="other options"):
        prepare_fsdd(tmp_path / "src", out, ("bob",), ("cid",), 2, 4, 2)


def _recorded(row, lengths):
    """Samples of the recordings a string was made of (a speaker's recordings of one digit are
    equally long in the fake corpus)."""
    return sum(lengths[f"{DIGIT_WORDS.index(w)}_{row['speaker']}_0.wav"] for w in row["text"].split())


def test_bad_input_is_named(tmp_path):
    _fake_fsdd(tmp_path / "src")
    with pytest.raises(ValueError, match="distinct speakers of the corpus"):
        prepare_fsdd(tmp_path / "src", tmp_path / "o", ("zed",), ("cid",))
    with pytest.raises(ValueError, match="distinct"):
        prepare_fsdd(tmp_path / "src", tmp_path / "o", ("cid",), ("cid",))
    (tmp_path / "src" / "recordings" / "seven.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="seven.wav: not an FSDD file name"):
        read_fsdd(tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="no FSDD recordings"):
        read_fsdd(tmp_path / "empty")


def test_cli_prepares_a_corpus_the_manifest_loader_reads(tmp_path, capsys):
    _fake_fsdd(tmp_path / "src")
    out = tmp_path / "fsdd"
    assert main(["prepare", "fsdd", "--src", str(tmp_path / "src"), "--out", str(out), "--dev-speakers", "bob",
                 "--test-speakers", "cid", "dan", "--max-digits", "3", "--train-passes", "1"]) == 0
    assert "test: " in capsys.readouterr().out
    cfg = compose(["data=fsdd", f"data.root={out}"])
    cuts = PreparedData(cfg.data).manifest("test", num_jobs=1)
    assert {c.supervisions[0].speaker for c in cuts} == {"cid", "dan"}
    assert all(set(c.supervisions[0].text.split()) <= set(DIGIT_WORDS) for c in cuts)
