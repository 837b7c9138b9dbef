"""Bad input at every stage: a clear error naming the utterance / file, or a counted and reported
drop (``manifests/<split>_report.json`` and the printed summary), per ``data.on_bad_utterance``.

The table of cases is docs/reliability_bad_input.md.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording

from asr_zoo.schemas import DataConfig, TokenizerConfig
from asr_zoo.data.corpora import BadUtterance, normalize_text, read_librispeech_split
from asr_zoo.data.datamodule import ASRDataModule
from asr_zoo.data.prepare import PreparedData
from asr_zoo.data.tokenizer import Tokenizer, train_tokenizer
from conftest import write_librispeech_split

RNG = np.random.default_rng(0)


def _noise(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.1 * RNG.standard_normal(int(seconds * rate))).astype("float32")


def _data(root: Path, fmt: str = "librispeech", on_bad: str = "drop", **kw) -> PreparedData:
    return PreparedData(DataConfig(root=str(root), format=fmt, on_bad_utterance=on_bad,
                                   tokenizer=TokenizerConfig(type="char"), **kw))


def _dropped(root: Path, split: str = "train") -> dict[str, str]:
    """id -> reason, from the split's report on disk."""
    report = json.loads((root / "manifests" / f"{split}_report.json").read_text())
    return {d["id"]: d["reason"] for d in report["dropped"]}


def _manifest(root: Path, split: str, lines: list) -> None:
    """``<root>/<split>.jsonl``: dicts are written as JSON, strings verbatim."""
    text = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n"
    (root / f"{split}.jsonl").write_text(text)


def _flac_corpus(root: Path) -> Path:
    """train: 1-2-0000 good, 1-2-0001 random bytes, 1-2-0002 a valid FLAC cut in half."""
    write_librispeech_split(root, "train", [("1-2-0000", "GOOD ONE", _noise(1.0)),
                                            ("1-2-0001", "CORRUPT", _noise(1.0)),
                                            ("1-2-0002", "TRUNCATED", _noise(2.0))])
    chapter = root / "LibriSpeech/train/1/2"
    (chapter / "1-2-0001.flac").write_bytes(RNG.bytes(4000))
    whole = (chapter / "1-2-0002.flac").read_bytes()
    (chapter / "1-2-0002.flac").write_bytes(whole[: len(whole) // 2])
    assert sf.info(str(chapter / "1-2-0002.flac")).frames == 32000  # the header still claims 2 s
    return chapter


# 1. corrupt and truncated FLAC --------------------------------------------------------------------
def test_corrupt_and_truncated_flac_are_dropped_at_prepare(tmp_path, capsys):
    _flac_corpus(tmp_path)
    cuts = _data(tmp_path).features("train", num_jobs=1)  # features of the good one only: no crash
    assert [c.id for c in cuts] == ["1-2-0000"] and cuts[0].has_features
    dropped = _dropped(tmp_path)
    assert set(dropped) == {"1-2-0001", "1-2-0002"}
    assert all(r.startswith(("unreadable audio", "truncated audio")) for r in dropped.values())
    assert "train: kept 1 utterances" in capsys.readouterr().out


def test_truncated_flac_fails_with_id_and_file(tmp_path):
    chapter = _flac_corpus(tmp_path)
    (chapter / "1-2-0001.flac").unlink()
    (chapter / "1-2.trans.txt").write_text("1-2-0000 GOOD ONE\n1-2-0002 TRUNCATED\n")
    with pytest.raises(BadUtterance, match=r"utterance 1-2-0002 \(.*1-2-0002\.flac\): (unreadable|truncated) audio"):
        _data(tmp_path, on_bad="fail").manifest("train")


# 2. zero-length and too-short audio ----------------------------------------------------------------
def test_zero_length_audio_is_dropped(tmp_path):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "GOOD", _noise(1.0)), ("1-2-0001", "EMPTY FILE", None),
                                                ("1-2-0002", "NO SAMPLES", None), ("1-2-0003", "TINY", None)])
    chapter = tmp_path / "LibriSpeech/train/1/2"
    (chapter / "1-2-0001.flac").write_bytes(b"")
    sf.write(chapter / "1-2-0002.wav", np.zeros(0, "float32"), 16000)  # a header and no samples
    sf.write(chapter / "1-2-0003.wav", _noise(0.005), 16000)  # 80 samples: less than one fbank frame
    assert len(_data(tmp_path).features("train", num_jobs=1)) == 1
    dropped = _dropped(tmp_path)
    assert dropped["1-2-0001"] == "zero-length audio: empty file (0 bytes)"
    assert dropped["1-2-0002"] == "zero-length audio: 0 samples"
    assert dropped["1-2-0003"].startswith("audio too short: 80 samples")


def test_stereo_audio_is_dropped(tmp_path):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "GOOD", _noise(0.5)), ("1-2-0001", "STEREO", None)])
    sf.write(tmp_path / "LibriSpeech/train/1/2/1-2-0001.flac", np.stack([_noise(0.5), _noise(0.5)], 1), 16000)
    assert len(_data(tmp_path).manifest("train")) == 1
    assert _dropped(tmp_path) == {"1-2-0001": "not mono: 2 channels"}


# 3. NaN / Inf samples ------------------------------------------------------------------------------
def test_nan_and_inf_samples_are_dropped(tmp_path):
    good, nan, inf = _noise(1.0), _noise(1.0), _noise(1.0)
    nan[100], inf[200] = np.nan, -np.inf
    for name, audio in [("good", good), ("nan", nan), ("inf", inf)]:
        sf.write(tmp_path / f"{name}.wav", audio, 16000, subtype="FLOAT")
    _manifest(tmp_path, "train", [{"id": n, "audio": f"{n}.wav", "text": "HELLO"} for n in ("good", "nan", "inf")])
    with pytest.raises(BadUtterance, match=r"utterance nan \(.*nan\.wav\): non-finite samples"):
        _data(tmp_path, fmt="manifest", on_bad="fail").manifest("train")
    cuts = _data(tmp_path, fmt="manifest").features("train", num_jobs=1)
    assert [c.id for c in cuts] == ["good"] and np.isfinite(cuts[0].load_features()).all()
    assert _dropped(tmp_path) == {"nan": "non-finite samples: 1 NaN/Inf of 16000",
                                  "inf": "non-finite samples: 1 NaN/Inf of 16000"}


# 4. sampling rate other than 16 kHz: resampled, not refused -----------------------------------------
def test_other_sampling_rates_are_resampled_to_16k(tmp_path, capsys):
    for name, rate in [("r16", 16000), ("r8", 8000), ("r44", 44100)]:
        sf.write(tmp_path / f"{name}.wav", _noise(1.0, rate), rate)
    _manifest(tmp_path, "train", [{"id": n, "audio": f"{n}.wav", "text": "HELLO"} for n in ("r16", "r8", "r44")])
    data = _data(tmp_path, fmt="manifest")
    cuts = data.features("train", num_jobs=1)
    assert sorted(c.id for c in cuts) == ["r16", "r44", "r8"]
    for cut in cuts:
        assert cut.sampling_rate == 16000 and abs(cut.duration - 1.0) < 1e-3
        assert abs(cut.load_features().shape[0] - 100) <= 1  # 10 ms frames of 16 kHz audio
    assert data.report("train").resampled == 2 and _dropped(tmp_path) == {}
    assert "resampled 2 to 16000 Hz" in capsys.readouterr().out


# 5. over-long (and too short) utterances: kept in the manifest, excluded from training ---------------
def test_overlong_utterances_are_excluded_from_training_and_reported(noise_corpus, capsys):
    cfg = dict(max_utt_duration=1.5, num_workers=0)
    lengths = {c.id: c.duration for c in _data(noise_corpus, **cfg).manifest("train")}
    too_long = {i for i, d in lengths.items() if d > 1.5}
    assert 0 < len(too_long) < len(lengths)
    dm = ASRDataModule(_data(noise_corpus, **cfg).cfg)
    dm.prepare_data()
    dm.setup("fit")
    assert {c.id for c in dm.train_cuts} == set(lengths) - too_long
    report = json.loads((noise_corpus / "manifests/train_report.json").read_text())
    excluded = {d["id"]: d["reason"] for d in report["excluded_from_training"]}
    assert set(excluded) == too_long and report["kept"] == len(lengths)
    assert all(r.startswith("too long for training:") and r.endswith("> data.max_utt_duration=1.5")
               for r in excluded.values())
    assert f"excluded {len(too_long)} of the kept from training ({len(too_long)} x too long for training)" \
        in capsys.readouterr().out
    dm = ASRDataModule(_data(noise_corpus, on_bad="fail", **cfg).cfg)
    with pytest.raises(BadUtterance, match=r"train: training utterance 100-1-\d{4} \(.*\.flac\): too long"):
        dm.setup("fit")


# 6. transcript normalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw,expected", [
    ("hello,   world!", "HELLO WORLD"),
    ("Don’t stop — it's “fine”.", "DON'T STOP IT'S FINE"),
    ("well-known café, naïve Zoë; Straße", "WELL KNOWN CAFE NAIVE ZOE STRASSE"),
    ("the brothers' house ' 'tis", "THE BROTHERS' HOUSE 'TIS"),
    ("ＦＵＬＬ　ＷＩＤＴＨ", "FULL WIDTH"),
    ("and/or *this* (maybe)", "AND OR THIS MAYBE"),
    ("HE SAID THAT'S ALL", "HE SAID THAT'S ALL"),  # LibriSpeech text is unchanged
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected


@pytest.mark.parametrize("raw,reason", [
    ("in 1984 we", "digits in transcript: '1'"),
    ("the 2nd time", "digits in transcript: '2'"),
    ("x² again", "digits in transcript: '2'"),
    ("½ cup", "digits in transcript: '1'"),
    ("fifty % off", "symbol in transcript: '%'"),
    ("salt & pepper", "symbol in transcript: '&'"),
    ("a $5 bill", "symbol in transcript: '\\$'"),
    ("one + one", "symbol in transcript: '\\+'"),
    ("Ørsted wind", "non-ASCII letter in transcript: 'Ø'"),
    ("привет", "non-ASCII letter in transcript: 'П'"),
])
def test_normalize_text_refuses_what_it_cannot_spell(raw, reason):
    with pytest.raises(ValueError, match=reason):
        normalize_text(raw)


def test_transcripts_are_normalised_or_dropped_with_the_reason(tmp_path):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "Café au lait, s'il vous plaît!", _noise(0.5)),
                                                ("1-2-0001", "CHAPTER 12", _noise(0.5)),
                                                ("1-2-0002", "?!...", _noise(0.5))])
    (cut,) = _data(tmp_path).manifest("train")
    assert cut.supervisions[0].text == "CAFE AU LAIT S'IL VOUS PLAIT"
    assert _dropped(tmp_path) == {"1-2-0001": "digits in transcript: '1' (numbers must be spelled out)",
                                  "1-2-0002": "empty transcript"}


# 7. transcript line without audio, audio without transcript line ------------------------------------
def test_missing_audio_and_missing_transcript_are_reported_by_id(tmp_path):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "GOOD", _noise(0.5)), ("1-2-0001", "NO AUDIO", None)])
    sf.write(tmp_path / "LibriSpeech/train/1/2/1-2-0002.flac", _noise(0.5), 16000)  # no transcript line
    assert [c.id for c in _data(tmp_path).manifest("train")] == ["1-2-0000"]
    dropped = _dropped(tmp_path)
    assert dropped["1-2-0001"] == "unreadable audio: file not found"
    assert dropped["1-2-0002"] == "no transcript: no line for 1-2-0002 in 2/*.trans.txt"
    with pytest.raises(BadUtterance, match=r"utterance 1-2-0002 \(.*1-2-0002\.flac\): no transcript"):
        read_librispeech_split(tmp_path / "LibriSpeech", "train", on_bad="fail")
    (tmp_path / "LibriSpeech/train/1/2/1-2-0002.flac").unlink()
    with pytest.raises(BadUtterance, match=r"utterance 1-2-0001 \(.*1-2-0001\.flac\): unreadable audio: file not"):
        read_librispeech_split(tmp_path / "LibriSpeech", "train", on_bad="fail")


# 8. duplicate utterance ids ------------------------------------------------------------------------------
def test_duplicate_ids_in_a_manifest_keep_the_first(tmp_path):
    sf.write(tmp_path / "a.wav", _noise(0.5), 16000)
    sf.write(tmp_path / "b.wav", _noise(0.7), 16000)
    _manifest(tmp_path, "train", [{"id": "u1", "audio": "a.wav", "text": "FIRST"},
                                  {"id": "u1", "audio": "b.wav", "text": "SECOND"}])
    (cut,) = _data(tmp_path, fmt="manifest").manifest("train")
    assert cut.supervisions[0].text == "FIRST"
    report = json.loads((tmp_path / "manifests/train_report.json").read_text())
    assert report["dropped"] == [{"id": "u1", "path": f"{tmp_path / 'train.jsonl'}:2",
                                  "reason": f"duplicate utterance id: first at {tmp_path / 'train.jsonl'}:1"}]


def test_duplicate_ids_in_librispeech_layout(tmp_path):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "GOOD", _noise(0.5)), ("1-3-0000", "OTHER", _noise(0.5))])
    (tmp_path / "LibriSpeech/train/1/2/1-2.trans.txt").write_text("1-2-0000 GOOD\n1-2-0000 AGAIN\n")
    (tmp_path / "LibriSpeech/train/1/3/1-3.trans.txt").write_text("1-3-0000 OTHER\n1-2-0000 ELSEWHERE\n")
    cuts, report = read_librispeech_split(tmp_path / "LibriSpeech", "train")
    assert sorted(c.id for c in cuts) == ["1-2-0000", "1-3-0000"] and cuts["1-2-0000"].supervisions[0].text == "GOOD"
    assert [(d["id"], d["path"].rsplit("/", 1)[-1]) for d in report.dropped] == [("1-2-0000", "1-2.trans.txt:2"),
                                                                                ("1-2-0000", "1-3.trans.txt:2")]
    assert all(d["reason"].endswith("1-2.trans.txt:1") for d in report.dropped)
    with pytest.raises(BadUtterance, match=r"1-2-0000 \(.*1-2\.trans\.txt:2\): duplicate utterance id"):
        read_librispeech_split(tmp_path / "LibriSpeech", "train", on_bad="fail")


# 9. manifest lines that are not JSON objects with audio and text -----------------------------------------
def test_bad_manifest_lines(tmp_path):
    sf.write(tmp_path / "a.wav", _noise(0.5), 16000)
    _manifest(tmp_path, "train", [{"audio": "a.wav", "text": "GOOD"}, "{not json", '["a.wav", "TEXT"]',
                                  {"audio": "a.wav"}, {"audio": 3, "text": "NUMBER"}])
    with pytest.raises(BadUtterance, match=r"train-000002 \(.*train\.jsonl:2\): bad manifest line: not a JSON"):
        _data(tmp_path, fmt="manifest", on_bad="fail").manifest("train")
    assert [c.id for c in _data(tmp_path, fmt="manifest").manifest("train")] == ["train-000001"]
    dropped = _dropped(tmp_path)
    assert sorted(dropped) == ["train-000002", "train-000003", "train-000004", "train-000005"]
    assert all(r.startswith("bad manifest line: not a JSON object with 'audio' and 'text'") for r in dropped.values())


def test_non_utf8_transcripts_name_the_file(tmp_path):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "GOOD", _noise(0.5))])
    (tmp_path / "LibriSpeech/train/1/2/1-2.trans.txt").write_bytes(b"1-2-0000 CAF\xe9\n")  # latin-1
    with pytest.raises(BadUtterance, match=r"1-2\.trans\.txt: not UTF-8 text"):
        _data(tmp_path).manifest("train")


# 10. missing split, both formats ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["librispeech", "manifest"])
def test_missing_split_names_it_and_lists_the_others(tmp_path, fmt):
    write_librispeech_split(tmp_path, "train", [("1-2-0000", "GOOD", _noise(0.5))])
    write_librispeech_split(tmp_path, "dev", [("1-2-0000", "GOOD", _noise(0.5))])
    _manifest(tmp_path, "train", [{"audio": "LibriSpeech/train/1/2/1-2-0000.flac", "text": "GOOD"}])
    _manifest(tmp_path, "dev", [{"audio": "LibriSpeech/dev/1/2/1-2-0000.flac", "text": "GOOD"}])
    where = "LibriSpeech/test-clean" if fmt == "librispeech" else "test-clean.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"split 'test-clean': .*{where} does not exist; splits found: dev, train$"):
        _data(tmp_path, fmt=fmt).features("test-clean")


# 11. a tokenizer that is not one ----------------------------------------------------------------------------
def test_tokenizer_refuses_garbage(tmp_path):
    good = train_tokenizer(["HELLO WORLD"] * 10, tmp_path / "tok", "char", 0).model_proto
    for garbage in [b"", RNG.bytes(500), good[: len(good) // 2]]:
        with pytest.raises(ValueError, match="not a sentencepiece model"):
            Tokenizer(garbage)
    (tmp_path / "bad.model").write_bytes(b"this is not a model")
    with pytest.raises(ValueError, match=r"tokenizer .*bad\.model: not a sentencepiece model"):
        Tokenizer.load(tmp_path / "bad.model")


# feature extraction: audio that changed after its manifest was checked -------------------------------------
def _spoil_after_manifest(root: Path, on_bad: str) -> PreparedData:
    write_librispeech_split(root, "train", [(f"1-2-{i:04d}", "HELLO", _noise(1.0)) for i in range(4)])
    data = _data(root, on_bad=on_bad)
    data.manifest("train")
    flac = root / "LibriSpeech/train/1/2/1-2-0002.flac"
    flac.write_bytes(flac.read_bytes()[:2000])  # truncated after the check
    return data


def test_audio_spoilt_after_the_manifest_is_reported_by_parallel_extraction(tmp_path, capsys):
    data = _spoil_after_manifest(tmp_path, "drop")
    cuts = data.features("train", num_jobs=2)  # lhotse skips the file with only a warning: we count it
    assert sorted(c.id for c in cuts) == ["1-2-0000", "1-2-0001", "1-2-0003"]
    report = data.report("train")
    assert report.kept == 3 and [d["id"] for d in report.dropped] == ["1-2-0002"]
    assert report.dropped[0]["reason"].startswith("unreadable audio at feature extraction: unreadable audio")
    assert "kept 3 utterances" in capsys.readouterr().out.splitlines()[-1]


def test_audio_spoilt_after_the_manifest_fails_with_its_id(tmp_path):
    data = _spoil_after_manifest(tmp_path, "fail")
    with pytest.raises(BadUtterance, match=r"utterance 1-2-0002 \(.*1-2-0002\.flac\): unreadable audio at feature"):
        data.features("train", num_jobs=1)


def test_extraction_crash_on_an_unchecked_manifest_names_the_utterance(tmp_path):
    """A manifest written without these checks (an older version): fbank crashes on 80 samples."""
    sf.write(tmp_path / "tiny.wav", _noise(0.005), 16000)
    sf.write(tmp_path / "ok.wav", _noise(1.0), 16000)
    cuts = CutSet.from_cuts(MonoCut(id=n, start=0, duration=r.duration, channel=0, recording=r)
                            for n in ("ok", "tiny") for r in [Recording.from_file(tmp_path / f"{n}.wav", n)])
    data = _data(tmp_path)
    data.manifest_path("train").parent.mkdir()
    cuts.to_file(data.manifest_path("train"))
    with pytest.raises(BadUtterance, match=r"train: feature extraction failed .*tiny: audio too short: 80 samples"):
        data.features("train", num_jobs=1)
