import json

import numpy as np
import pytest

from asr_zoo.data.corpora import BadUtterance, read_librispeech_split, read_manifest
from conftest import write_librispeech_split

AUDIO = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("float32")


def _corpus(root):
    write_librispeech_split(root, "train", [("1-2-0000", "HELLO WORLD", AUDIO), ("1-2-0001", "", AUDIO),
                                            ("1-2-0002", "BROKEN FILE", AUDIO), ("1-2-0003", "NO AUDIO", None)])
    (root / "LibriSpeech/train/1/2/1-2-0002.flac").write_bytes(b"fLaC not really a flac file")


def test_bad_utterances_are_dropped_and_reported(tmp_path):
    _corpus(tmp_path)
    cuts, report = read_librispeech_split(tmp_path / "LibriSpeech", "train")
    assert [c.id for c in cuts] == ["1-2-0000"] and report.kept == 1
    reasons = {d["id"]: d["reason"] for d in report.dropped}
    assert reasons["1-2-0001"] == "empty transcript"
    assert reasons["1-2-0002"].startswith("unreadable audio") and reasons["1-2-0003"].startswith("unreadable audio")
    assert "dropped 3" in report.summary()


def test_fail_mode_names_the_utterance(tmp_path):
    _corpus(tmp_path)
    with pytest.raises(BadUtterance, match="1-2-0001.*empty transcript"):
        read_librispeech_split(tmp_path / "LibriSpeech", "train", on_bad="fail")


def test_missing_split_lists_available(tmp_path):
    _corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match="splits found: train"):
        read_librispeech_split(tmp_path / "LibriSpeech", "dev-clean")


def test_manifest_reader(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", AUDIO, 16000)
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "hello  there"}) + "\n")
    cuts, report = read_manifest(tmp_path / "train.jsonl")
    (cut,) = cuts
    assert cut.supervisions[0].text == "HELLO THERE" and abs(cut.duration - 1.0) < 1e-6
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(BadUtterance, match="bad.jsonl:1"):
        read_manifest(tmp_path / "bad.jsonl")
