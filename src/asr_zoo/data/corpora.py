"""Read corpora into lhotse CutSets: LibriSpeech layout (real or synthetic) and JSONL manifests.

Every utterance is checked (readable audio, non-empty transcript); bad ones are dropped and
reported with the file and the reason, or raise, by configuration. Nothing disappears silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

__all__ = ["BadUtterance", "CorpusReport", "read_librispeech_split", "read_manifest", "normalize_text"]


class BadUtterance(ValueError):
    """An utterance that cannot be used; the message names the file/utterance and the problem."""


@dataclass
class CorpusReport:
    split: str
    kept: int = 0
    hours: float = 0.0
    dropped: list = field(default_factory=list)  # [{"id", "path", "reason"}]

    def drop(self, utt_id: str, path: str, reason: str, on_bad: str) -> None:
        if on_bad == "fail":
            raise BadUtterance(f"{self.split}: utterance {utt_id} ({path}): {reason}")
        self.dropped.append({"id": utt_id, "path": path, "reason": reason})

    def summary(self) -> str:
        reasons = Counter(d["reason"].split(":")[0] for d in self.dropped)
        why = "; ".join(f"{n} x {r}" for r, n in reasons.items())
        return (f"{self.split}: kept {self.kept} utterances ({self.hours:.2f} h), dropped {len(self.dropped)}"
                + (f" ({why})" if why else ""))

    def to_dict(self) -> dict:
        return {"split": self.split, "kept": self.kept, "hours": round(self.hours, 4), "dropped": self.dropped}


def normalize_text(text: str) -> str:
    """Upper-case and collapse whitespace (LibriSpeech transcripts are upper-case)."""
    return " ".join(text.upper().split())


def _recording(utt_id: str, path: Path) -> Recording:
    info = sf.info(str(path))  # raises on unreadable / corrupt files
    if info.frames == 0:
        raise ValueError("empty audio")
    if info.channels != 1:
        raise ValueError(f"{info.channels} channels (mono expected)")
    return Recording(
        id=utt_id, sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=info.samplerate, num_samples=info.frames, duration=info.frames / info.samplerate,
    )


def _build(items, split: str, on_bad: str) -> tuple[CutSet, CorpusReport]:
    """items: iterable of (utt_id, audio_path, text, speaker)."""
    report = CorpusReport(split)
    cuts = []
    for utt_id, path, text, speaker in items:
        text = normalize_text(text)
        if not text:
            report.drop(utt_id, str(path), "empty transcript", on_bad)
            continue
        try:
            rec = _recording(utt_id, Path(path))
            # decode a little to catch files whose header is fine but whose data is not
            sf.read(str(path), frames=min(rec.num_samples, 1600), dtype="float32")
        except Exception as e:  # soundfile raises RuntimeError/LibsndfileError on corrupt files
            report.drop(utt_id, str(path), f"unreadable audio: {e}".replace("\n", " "), on_bad)
            continue
        sup = SupervisionSegment(id=utt_id, recording_id=utt_id, start=0.0, duration=rec.duration,
                                 channel=0, text=text, speaker=speaker)
        cuts.append(MonoCut(id=utt_id, start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
        report.kept += 1
        report.hours += rec.duration / 3600
    if not cuts:
        raise BadUtterance(f"{split}: no usable utterances ({len(report.dropped)} dropped)")
    return CutSet.from_cuts(cuts), report


def read_librispeech_split(corpus_dir: Path, split: str, on_bad: str = "drop") -> tuple[CutSet, CorpusReport]:
    """Read ``<corpus_dir>/<split>/<spk>/<chapter>/*.trans.txt`` and the audio files they name.

    Args:
        corpus_dir: the ``LibriSpeech`` directory.
        split: split directory name (``train-clean-100``, ``dev``, ...).
        on_bad: ``drop`` (report) or ``fail`` (raise :class:`BadUtterance`).
    """
    split_dir = Path(corpus_dir) / split
    if not split_dir.is_dir():
        have = sorted(p.name for p in Path(corpus_dir).iterdir() if p.is_dir()) if Path(corpus_dir).is_dir() else []
        raise FileNotFoundError(f"split directory {split_dir} does not exist; splits found: {', '.join(have) or 'none'}")
    trans_files = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(f"{split_dir}: no <spk>/<chapter>/*.trans.txt files (not LibriSpeech layout)")

    def items():
        for tf in trans_files:
            for lineno, line in enumerate(tf.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                audio = next((tf.parent / f"{utt_id}{ext}" for ext in (".flac", ".wav")
                              if (tf.parent / f"{utt_id}{ext}").exists()), tf.parent / f"{utt_id}.flac")
                yield utt_id, audio, text, utt_id.split("-")[0]

    return _build(items(), split, on_bad)


def read_manifest(path: Path, split: str | None = None, on_bad: str = "drop") -> tuple[CutSet, CorpusReport]:
    """Read a JSONL manifest: one ``{"audio": path, "text": str, "duration"?: s, "id"?: str}`` per line.

    Relative audio paths are resolved against the manifest's directory.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist")

    def items():
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                audio, text = rec["audio"], rec["text"]
            except (json.JSONDecodeError, KeyError) as e:
                raise BadUtterance(f"{path}:{lineno}: not a JSON object with 'audio' and 'text' ({e})") from None
            audio = Path(audio) if Path(audio).is_absolute() else path.parent / audio
            utt_id = str(rec.get("id") or f"{path.stem}-{lineno:06d}")
            yield utt_id, audio, text, str(rec.get("speaker", utt_id))

    return _build(items(), split or path.stem, on_bad)
