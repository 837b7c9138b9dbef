"""Real recordings: the Free Spoken Digit Dataset (FSDD) as a small connected-digits corpus.

FSDD (https://github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0) holds 3000 trimmed
8 kHz recordings of isolated English digits, ``{digit}_{speaker}_{index}.wav``: 50 of each digit by
each of 6 male speakers, four of them non-native (accents DEU x2, BEL/French, GRC), recorded on
their own microphones. :func:`prepare_fsdd` splits it by speaker (dev and test voices are never
heard in training) and joins each speaker's recordings into strings of ``min_digits`` ..
``max_digits`` digits with short pauses, the task of a connected-digits corpus. The voices,
accents and channels are real; the joins are not (no coarticulation across digits).

Every recording is used once per pass: dev and test take one pass (each recording in exactly one
string), training ``train_passes`` (differently joined, so the model sees each digit in several
contexts). Pauses are 50-250 ms of Gaussian noise at the level of the quietest 20 ms of the
speaker's recordings, so the background does not drop to digital silence between digits.

Writes (JSONL manifests, read with ``data=fsdd`` / ``data.format=manifest``)::

    <out>/<split>.jsonl            {"id", "audio", "text", "speaker"} per line, audio relative
    <out>/audio/<split>/<id>.flac  8 kHz, 16 bit (resampled to 16 kHz when loaded)
    <out>/fsdd_info.json           speakers per split, counts, hours, the options

Rerunning with the same options finds ``fsdd_info.json`` and does nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_zoo.utils import atomic_replace, atomic_write_json, atomic_write_text, read_json, remove_stale_temps

__all__ = ["DIGIT_WORDS", "SPEAKERS", "read_fsdd", "digit_strings", "join_recordings", "prepare_fsdd"]

DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
SPEAKERS = {  # FSDD's metadata.py: all male
    "jackson": "USA/neutral", "theo": "USA/neutral", "nicolas": "BEL/French",
    "yweweler": "DEU/German", "lucas": "DEU/German", "george": "GRC/Greek",
}
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
_FLOOR_FRAME_S = 0.02


def read_fsdd(src: Path) -> dict[str, list[tuple[int, Path]]]:
    """Speaker -> [(digit, path)] sorted by path, from ``<src>/recordings/*.wav`` (a clone of the
    repository) or ``<src>/*.wav``. A ``.wav`` not named ``{digit}_{speaker}_{index}.wav`` raises,
    naming the file."""
    src = Path(src)
    folder = src / "recordings" if (src / "recordings").is_dir() else src
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no FSDD recordings in {folder} (expected {{digit}}_{{speaker}}_{{index}}.wav; "
                                "git clone https://github.com/Jakobovski/free-spoken-digit-dataset)")
    speakers: dict[str, list[tuple[int, Path]]] = {}
    for path in files:
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"{path}: not an FSDD file name ({{digit}}_{{speaker}}_{{index}}.wav)")
        speakers.setdefault(m.group(2), []).append((int(m.group(1)), path))
    return speakers


def digit_strings(n: int, rng: np.random.Generator, min_digits: int, max_digits: int) -> list[list[int]]:
    """A random partition of ``range(n)`` into groups of ``min_digits`` .. ``max_digits`` (uniform
    lengths; the last group takes what is left, at least one). Every index occurs exactly once."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    order = rng.permutation(n).tolist()
    groups = []
    while order:
        k = int(rng.integers(min_digits, max_digits + 1))
        groups.append(order[:k])
        order = order[k:]
    return groups


def noise_floor(audio: np.ndarray, rate: int) -> float:
    """RMS of the quietest 20 ms frame of ``audio`` `(S,)` (the whole signal if shorter)."""
    hop = max(1, int(_FLOOR_FRAME_S * rate))
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop) if len(audio) >= hop else audio[None]
    return float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).min())


def join_recordings(waves: list[np.ndarray], pauses: list[int], floor: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``waves[0], pause, waves[1], ...``: float32 `(S,)`; ``pauses`` (``len(waves) - 1`` sample
    counts) are Gaussian noise of RMS ``floor``."""
    if len(pauses) != len(waves) - 1:
        raise ValueError(f"{len(waves)} recordings need {len(waves) - 1} pauses, got {len(pauses)}")
    parts = [waves[0]]
    for wave, pause in zip(waves[1:], pauses):
        parts += [(rng.standard_normal(pause) * floor).astype(np.float32), wave]
    return np.concatenate(parts).astype(np.float32)


def prepare_fsdd(src: Path, out: Path, dev_speakers: tuple[str, ...] = ("george",),
                 test_speakers: tuple[str, ...] = ("nicolas",), min_digits: int = 1, max_digits: int = 7,
                 train_passes: int = 3, seed: int = 0) -> dict:
    """Write the speaker-split connected-digits corpus (module docstring) and return its summary."""
    out = Path(out)
    options = {"dev_speakers": sorted(dev_speakers), "test_speakers": sorted(test_speakers),
               "min_digits": min_digits, "max_digits": max_digits, "train_passes": train_passes, "seed": seed}
    info_path = out / "fsdd_info.json"
    if info_path.exists():
        info = read_json(info_path)
        if info["options"] == options:
            return info
        raise FileExistsError(f"{out} holds an FSDD corpus made with other options ({info['options']}); "
                              "choose another --out")
    recordings = read_fsdd(src)
    held_out = set(dev_speakers) | set(test_speakers)
    if held_out - set(recordings) or set(dev_speakers) & set(test_speakers):
        raise ValueError(f"dev {sorted(dev_speakers)} and test {sorted(test_speakers)} speakers must be distinct "
                         f"speakers of the corpus: {sorted(recordings)}")
    splits = {"train": sorted(set(recordings) - held_out), "dev": sorted(dev_speakers),
              "test": sorted(test_speakers)}
    if not splits["train"]:
        raise ValueError("no speaker left for training")
    rng = np.random.default_rng(seed)
    summary = {"source": "Free Spoken Digit Dataset (CC BY-SA 4.0)", "options": options, "splits": {}}
    for split, speakers in splits.items():
        remove_stale_temps(out / "audio" / split)
        lines, seconds, digits = [], 0.0, 0
        for speaker in speakers:
            waves, rate = [], None
            for _, path in recordings[speaker]:
                audio, rate_i = sf.read(path, dtype="float32", always_2d=True)
                if rate is not None and rate_i != rate:
                    raise ValueError(f"{path}: {rate_i} Hz, the speaker's other recordings are {rate} Hz")
                rate = rate_i
                waves.append(audio.mean(axis=1))
            floor = min(noise_floor(w, rate) for w in waves)
            for p in range(train_passes if split == "train" else 1):
                for g, group in enumerate(digit_strings(len(waves), rng, min_digits, max_digits)):
                    pauses = rng.integers(int(0.05 * rate), int(0.25 * rate) + 1, size=len(group) - 1).tolist()
                    audio = join_recordings([waves[i] for i in group], pauses, floor, rng)
                    utt_id = f"{speaker}-{p}-{g:04d}"
                    rel = f"audio/{split}/{utt_id}.flac"
                    atomic_replace(out / rel, lambda tmp, a=audio, r=rate: sf.write(tmp, a, r, format="FLAC",
                                                                                   subtype="PCM_16"))
                    text = " ".join(DIGIT_WORDS[recordings[speaker][i][0]] for i in group)
                    lines.append({"id": utt_id, "audio": rel, "text": text, "speaker": speaker})
                    seconds += len(audio) / rate
                    digits += len(group)
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
        summary["splits"][split] = {"speakers": {s: SPEAKERS.get(s, "unknown") for s in speakers},
                                    "utterances": len(lines), "digits": digits, "hours": round(seconds / 3600, 3)}
    atomic_write_json(info_path, summary)  # last: its presence means the corpus is complete
    return summary
