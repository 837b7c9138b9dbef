"""Read corpora into lhotse CutSets: LibriSpeech layout (real or synthetic) and JSONL manifests.

Every utterance is checked before it enters a manifest; a bad one is dropped and reported (id,
file, reason) or, with ``on_bad="fail"``, raises :class:`BadUtterance`. Nothing disappears
silently. The checks:

* transcript: normalised by :func:`normalize_text`; digits, pronounced symbols and letters with
  no ASCII folding are refused, an empty result is refused;
* layout: a transcript line whose audio file is missing, an audio file with no transcript line,
  a duplicate utterance id, a manifest line that is not a JSON object with ``audio`` and ``text``;
* audio: every file is decoded once, in full (a truncated FLAC passes ``sf.info`` and fails only
  when decoded), and must be mono, at least one 25 ms analysis frame long, and finite (no NaN /
  Inf samples). Audio at another sampling rate is kept and resampled to 16 kHz on load.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

__all__ = ["BadUtterance", "CorpusReport", "SAMPLING_RATE", "check_audio", "normalize_text",
           "read_librispeech_split", "read_manifest"]

SAMPLING_RATE = 16000  # every recording is resampled to this rate (the fbank front-end's)
MIN_AUDIO_SECONDS = 0.025  # one fbank analysis frame; shorter audio cannot be featurised
AUDIO_SUFFIXES = (".flac", ".wav")


class BadUtterance(ValueError):
    """An utterance that cannot be used; the message names the file/utterance and the problem."""


@dataclass
class CorpusReport:
    """What happened to every utterance of one split (written as ``<split>_report.json``).

    ``dropped``: left out of the manifest (every stage). ``excluded_from_training``: in the
    manifest, but filtered out of training by the datamodule (duration limits, tokenizer, the
    objective's own filter); still evaluated when the split is a dev/test split.
    """

    split: str
    kept: int = 0
    hours: float = 0.0
    resampled: int = 0  # kept utterances whose audio is resampled to SAMPLING_RATE on load
    dropped: list = field(default_factory=list)  # [{"id", "path", "reason"}]
    excluded_from_training: list = field(default_factory=list)  # [{"id", "path", "reason"}]

    def drop(self, utt_id: str, path: str, reason: str, on_bad: str) -> None:
        """Record a dropped utterance, or raise :class:`BadUtterance` when ``on_bad == "fail"``."""
        if on_bad == "fail":
            raise BadUtterance(f"{self.split}: utterance {utt_id} ({path}): {reason}")
        self.dropped.append({"id": utt_id, "path": str(path), "reason": reason})

    def exclude_from_training(self, utt_id: str, path: str, reason: str, on_bad: str) -> None:
        """Record a manifest utterance unfit for training, or raise :class:`BadUtterance`."""
        if on_bad == "fail":
            raise BadUtterance(f"{self.split}: training utterance {utt_id} ({path}): {reason}")
        self.excluded_from_training.append({"id": utt_id, "path": str(path), "reason": reason})

    def summary(self) -> str:
        """One line: kept, hours, resampled, and the drops counted by reason."""
        resampled = f", resampled {self.resampled} to {SAMPLING_RATE} Hz" if self.resampled else ""
        line = (f"{self.split}: kept {self.kept} utterances ({self.hours:.2f} h){resampled}, "
                f"dropped {len(self.dropped)}{_by_reason(self.dropped)}")
        if self.excluded_from_training:
            line += (f"; excluded {len(self.excluded_from_training)} of the kept from training"
                     f"{_by_reason(self.excluded_from_training)}")
        return line

    def to_dict(self) -> dict:
        return {"split": self.split, "kept": self.kept, "hours": round(self.hours, 4),
                "resampled": self.resampled, "dropped": self.dropped,
                "excluded_from_training": self.excluded_from_training}

    @classmethod
    def from_dict(cls, d: dict) -> "CorpusReport":
        return cls(d["split"], d["kept"], d["hours"], d.get("resampled", 0), list(d["dropped"]),
                   list(d.get("excluded_from_training", [])))


def _by_reason(entries: list[dict]) -> str:
    """`` (2 x empty transcript; 1 x unreadable audio)``: counts by the reason before its first ``:``."""
    counts = Counter(e["reason"].split(":")[0] for e in entries)
    return f" ({'; '.join(f'{n} x {r}' for r, n in counts.items())})" if counts else ""


# -- transcripts ---------------------------------------------------------------------------------
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SPOKEN_SYMBOLS = set("#%&@§")  # punctuation (Unicode category P) that is read out, not skipped


def normalize_text(text: str) -> str:
    """Normalise a transcript to LibriSpeech style: upper-case ASCII words and apostrophes.

    * upper-case, then NFKD with combining marks removed: ``café`` -> ``CAFE``, ``ß`` -> ``SS``;
      typographic apostrophes become ``'``;
    * punctuation (Unicode category P, apostrophes excepted), control characters and whitespace
      separate words (``well-known,`` -> ``WELL KNOWN``); tokens made only of apostrophes go;
    * anything that would be spoken but has no letters here is refused with ``ValueError`` (the
      caller drops the utterance with that reason): digits (``1984`` is a year or a number: we do
      not guess), symbols (category S: ``$ + = ~ °``..., and the spoken punctuation ``# % & @ §``)
      and letters with no ASCII folding (``Ø``, ``Ж``).

    Idempotent, and the identity on LibriSpeech transcripts.

    >>> normalize_text("  Don’t   go — Señor!  ")
    "DON'T GO SENOR"
    """
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.upper()) if not unicodedata.combining(c))
    chars = []
    for c in folded.translate(_APOSTROPHES):
        if "A" <= c <= "Z" or c == "'":
            chars.append(c)
        elif unicodedata.category(c)[0] == "N":
            raise ValueError(f"digits in transcript: {c!r} (numbers must be spelled out)")
        elif unicodedata.category(c)[0] == "S" or c in _SPOKEN_SYMBOLS:
            raise ValueError(f"symbol in transcript: {c!r} (must be spelled out)")
        elif c.isspace() or unicodedata.category(c)[0] in "PC":
            chars.append(" ")
        else:
            raise ValueError(f"non-ASCII letter in transcript: {c!r} (no ASCII folding)")
    return " ".join(w for w in "".join(chars).split() if w.strip("'"))


# -- audio ---------------------------------------------------------------------------------------
class AudioInfo(NamedTuple):
    """What :func:`check_audio` found in a usable file."""

    sampling_rate: int
    num_samples: int


def check_audio(path: Path) -> AudioInfo:
    """Decode ``path`` once, in full, and return its rate and length.

    Raises:
        ValueError: with the reason the file cannot be used (missing, empty, undecodable,
            truncated, not mono, shorter than one analysis frame, NaN/Inf samples).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError("unreadable audio: file not found")
    if path.stat().st_size == 0:
        raise ValueError("zero-length audio: empty file (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:  # corrupt, truncated, unknown format
        raise ValueError(f"unreadable audio: {e}".replace("\n", " ")) from None
    if frames == 0:
        raise ValueError("zero-length audio: 0 samples")
    if len(data) != frames:
        raise ValueError(f"truncated audio: decoded {len(data)} of {frames} samples")
    if channels != 1:
        raise ValueError(f"not mono: {channels} channels")
    if frames < MIN_AUDIO_SECONDS * rate:
        raise ValueError(f"audio too short: {frames} samples at {rate} Hz (< one {MIN_AUDIO_SECONDS * 1000:.0f} ms frame)")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f"non-finite samples: {bad} NaN/Inf of {frames}")
    return AudioInfo(rate, frames)


def _checked(path: Path) -> AudioInfo | str:
    """:func:`check_audio`, with the failure reason returned instead of raised."""
    try:
        return check_audio(path)
    except ValueError as e:
        return str(e)


# -- building cut sets ---------------------------------------------------------------------------
class _Item(NamedTuple):
    utt_id: str
    audio: Path
    text: str
    speaker: str


class _Transcript(NamedTuple):
    text: Optional[str]  # normalised, or None when refused
    reason: Optional[str] = None


def _transcript(raw: str) -> _Transcript:
    """:func:`normalize_text`, with the refusal reason (or ``empty transcript``) returned."""
    try:
        text = normalize_text(raw)
    except ValueError as e:
        return _Transcript(None, str(e))
    return _Transcript(text) if text else _Transcript(None, "empty transcript")


def _build(items: list[_Item], report: CorpusReport, on_bad: str, num_jobs: Optional[int] = None) -> CutSet:
    """Check every item (transcript, then audio decoded on ``num_jobs`` threads) into a CutSet.

    Problems are reported in item order, so ``on_bad="fail"`` names the first bad item.
    """
    texts = [_transcript(item.text) for item in items]
    # soundfile releases the GIL while decoding: threads decode in parallel
    with ThreadPoolExecutor(max_workers=num_jobs or min(8, os.cpu_count() or 1)) as pool:
        infos = iter(list(pool.map(_checked, [item.audio for item, text in zip(items, texts) if text.text])))
    cuts = []
    for item, text in zip(items, texts):
        info = next(infos) if text.text else text.reason
        if isinstance(info, str):
            report.drop(item.utt_id, item.audio, info, on_bad)
            continue
        duration = info.num_samples / info.sampling_rate
        rec = Recording(id=item.utt_id, sources=[AudioSource(type="file", channels=[0], source=str(item.audio))],
                        sampling_rate=info.sampling_rate, num_samples=info.num_samples, duration=duration)
        sup = SupervisionSegment(id=item.utt_id, recording_id=item.utt_id, start=0.0, duration=duration,
                                 channel=0, text=text.text, speaker=item.speaker)
        cut = MonoCut(id=item.utt_id, start=0.0, duration=duration, channel=0, recording=rec, supervisions=[sup])
        if info.sampling_rate != SAMPLING_RATE:
            cut = cut.resample(SAMPLING_RATE)
            report.resampled += 1
        cuts.append(cut)
        report.kept += 1
        report.hours += duration / 3600
    if not cuts:
        first = "; ".join(f"{d['id']} ({d['path']}): {d['reason']}" for d in report.dropped[:3])
        raise BadUtterance(f"{report.split}: no usable utterances ({len(report.dropped)} dropped"
                           + (f", e.g. {first})" if first else ")"))
    return CutSet.from_cuts(cuts)


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; an error naming the file otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BadUtterance(f"{path}: not UTF-8 text ({e})") from None


def _missing_split(split: str, where: Path, available: list[str]) -> FileNotFoundError:
    return FileNotFoundError(f"split {split!r}: {where} does not exist; splits found: {', '.join(available) or 'none'}")


def read_librispeech_split(corpus_dir: Path, split: str, on_bad: str = "drop",
                           num_jobs: Optional[int] = None) -> tuple[CutSet, CorpusReport]:
    """Read ``<corpus_dir>/<split>/<spk>/<chapter>/*.trans.txt`` and the audio files they name.

    A transcript line without an audio file, an audio file without a transcript line and a
    repeated utterance id (the later line) are dropped and reported like bad audio.

    Args:
        corpus_dir: the ``LibriSpeech`` directory.
        split: split directory name (``train-clean-100``, ``dev``, ...).
        on_bad: ``drop`` (report) or ``fail`` (raise :class:`BadUtterance`).
        num_jobs: threads decoding audio (default: up to 8).

    Raises:
        FileNotFoundError: no such split directory (the message lists the splits found), or no
            transcripts in it.
    """
    corpus_dir = Path(corpus_dir)
    split_dir = corpus_dir / split
    if not split_dir.is_dir():
        have = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir()) if corpus_dir.is_dir() else []
        raise _missing_split(split, split_dir, have)
    trans_files = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(f"{split_dir}: no <spk>/<chapter>/*.trans.txt files (not LibriSpeech layout)")

    report = CorpusReport(split)
    items, first_seen, named = [], {}, set()
    for tf in trans_files:
        for lineno, line in enumerate(_read_lines(tf), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            where = f"{tf}:{lineno}"
            candidates = [tf.parent / f"{utt_id}{ext}" for ext in AUDIO_SUFFIXES]
            named.update(candidates)
            if utt_id in first_seen:
                report.drop(utt_id, where, f"duplicate utterance id: first at {first_seen[utt_id]}", on_bad)
                continue
            first_seen[utt_id] = where
            audio = next((p for p in candidates if p.exists()), candidates[0])  # missing: reported by _build
            items.append(_Item(utt_id, audio, text, utt_id.split("-")[0]))
    for audio in sorted(p for p in split_dir.glob("*/*/*") if p.suffix in AUDIO_SUFFIXES and p not in named):
        report.drop(audio.stem, audio, f"no transcript: no line for {audio.stem} in "
                    f"{audio.parent.name}/*.trans.txt", on_bad)
    return _build(items, report, on_bad, num_jobs), report


def read_manifest(path: Path, split: str | None = None, on_bad: str = "drop",
                  num_jobs: Optional[int] = None) -> tuple[CutSet, CorpusReport]:
    """Read a JSONL manifest: one ``{"audio": path, "text": str, "id"?: str, "speaker"?: str}`` per line.

    Relative audio paths are resolved against the manifest's directory. A line without an
    ``id`` gets ``<manifest stem>-<line number>``. A line that is not a JSON object with string
    ``audio`` and ``text`` and a repeated id (the later line) are dropped and reported under
    that id and ``<manifest>:<line>``, like bad audio (or raise with ``on_bad="fail"``).

    Raises:
        FileNotFoundError: no manifest file (the message lists the ``*.jsonl`` splits beside it).
    """
    path = Path(path)
    split = split or path.stem
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.jsonl")) if path.parent.is_dir() else []
        raise _missing_split(split, path, have)
    report = CorpusReport(split)
    items, first_seen = [], {}
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        utt_id = f"{path.stem}-{lineno:06d}"
        try:
            rec = json.loads(line)
            audio, text = rec["audio"], rec["text"]
            if not isinstance(audio, str) or not isinstance(text, str):
                raise TypeError("'audio' and 'text' must be strings")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            report.drop(utt_id, where, f"bad manifest line: not a JSON object with 'audio' and 'text' "
                        f"({type(e).__name__}: {e})", on_bad)
            continue
        utt_id = str(rec.get("id") or utt_id)
        if utt_id in first_seen:
            report.drop(utt_id, where, f"duplicate utterance id: first at {first_seen[utt_id]}", on_bad)
            continue
        first_seen[utt_id] = where
        audio = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        items.append(_Item(utt_id, audio, text, str(rec.get("speaker", utt_id))))
    return _build(items, report, on_bad, num_jobs), report
