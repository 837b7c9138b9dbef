"""The default synthetic corpus: espeak-ng speech written in LibriSpeech layout.

Sentences come from :mod:`asr_zoo.data.sentences`; each is spoken by libespeak-ng
(:mod:`asr_zoo.data.espeak`) with one speaker's voice setting, padded with a little silence,
mixed with light coloured noise (20-35 dB SNR), resampled to 16 kHz, peak-normalised and
written as 16-bit FLAC::

    <out>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac
    <out>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt   ("<utt_id> <TEXT>")
    <out>/LibriSpeech/<split>/.done                                       (split statistics)
    <out>/synth_info.json                                                 (config + statistics)

A speaker is one voice setting: dialect (``en-us``, ``en-gb-scotland``...) + variant
(``m1``-``m7``, ``f1``-``f4``) + pitch; its utterances are grouped into chapters of
:data:`UTTERANCES_PER_CHAPTER`. Splits are ``train``, ``dev`` and ``test``; dev shares the
train voices (matched condition) and test uses dialect+variant combinations found in
neither (one male and one female variant per dialect are held out).

``layout="librispeech"`` (:data:`LAYOUTS`) writes LibriSpeech's split names instead, for running
the LibriSpeech recipe on synthetic data: ``train-clean-100`` (``num_train``), ``dev-clean`` and
``test-clean`` (``num_dev`` / ``num_test`` each; new speakers of the training dialect+variant
combinations, the same noise), ``dev-other`` and ``test-other`` (held-out dialect+variant
combinations and noisier audio, 5-15 dB SNR instead of 20-35 dB). Every speaker (voice + pitch)
occurs in one split only, as in LibriSpeech.

``condition="hard"`` (:data:`CONDITIONS`) makes the audio and the test set harder, like a first
small real corpus: a third of the speakers child-like (high pitch and every frequency scaled up
1.15-1.35x, as a shorter vocal tract), speaking rates of 100-260 words per minute that change
within half of the utterances (the second half 0.6-1.5x the first's rate), reverberation in 70%
of the utterances (an exponentially decaying noise response, RT60 0.2-0.9 s), noise at 0, 5, 10,
15 or 20 dB SNR (+-2.5 dB), and 10% of the content words (:func:`~asr_zoo.data.sentences.word_families`)
never spoken in train or dev while every test sentence holds at least one of them.

Everything is a function of ``seed``: each utterance draws its rate, padding and noise from
its own RNG and espeak-ng renders it in a fresh process state, so a corpus is byte-identical
whatever the number of workers or the order of work. Preparation is resumable: FLACs are
written under a temporary name and renamed, existing ones are kept, and a split with a
``.done`` marker is skipped; temporaries of a killed run are removed by the next one.

Usage::

    from asr_zoo.data.synth import prepare_synth
    summary = prepare_synth("data/synth", num_train=2000, num_dev=200, num_test=200)
"""

from __future__ import annotations

import json
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf
from fractions import Fraction

from scipy.signal import fftconvolve, lfilter, resample_poly

from asr_zoo.data import espeak
from asr_zoo.data.sentences import GENERATOR_VERSION, generate_sentences, word_families
from asr_zoo.utils import atomic_replace, atomic_write_text, remove_stale_temps

__all__ = [
    "SAMPLE_RATE", "SPLITS", "LAYOUTS", "CONDITIONS", "Condition", "SplitSpec", "held_out_words", "room_response", "VOICES", "VARIANTS", "UTTERANCES_PER_CHAPTER",
    "CHAPTERS_PER_SPEAKER", "SynthSpeaker", "SynthUtterance", "plan_synth", "render_utterance",
    "prepare_synth",
]

Pathlike = Union[str, Path]

SAMPLE_RATE = 16000
SYNTH_VERSION = 1  # bump when rendering changes (with GENERATOR_VERSION, recorded in synth_info)
SPLITS = ("train", "dev", "test")  # the default layout's splits
VOICES = ("en-us", "en-us-nyc", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd", "en-029")
"""espeak-ng English dialects (``en`` is British English)."""
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
UTTERANCES_PER_CHAPTER = 10
CHAPTERS_PER_SPEAKER = 2

_RATE_WPM = (140, 210)  # speaking rate range, words per minute
_PITCH = (30, 70)  # espeak-ng base pitch, 0-100
_PITCH_RANGE = (30, 80)  # espeak-ng intonation range, 0-100
_SNR_DB = (20.0, 35.0)
_OTHER_SNR_DB = (5.0, 15.0)  # the noisier "other" splits of the librispeech layout
_PAD_SECONDS = (0.05, 0.3)  # silence added before and after the speech
_PEAK = 0.9


@dataclass(frozen=True)
class Condition:
    """How the audio is rendered and what the test set holds (:data:`CONDITIONS`)."""

    name: str
    rate_wpm: tuple[int, int] = _RATE_WPM  # speaking rates, words per minute
    rate_jitter: int = 10  # an utterance's rate: its speaker's +- this
    child_share: float = 0.0  # share of speakers with child-like voices
    child_pitch: tuple[int, int] = (75, 99)  # their espeak-ng base pitch
    child_scale: tuple[float, float] = (1.15, 1.35)  # their frequency scale (pitch and formants)
    rate_change_share: float = 0.0  # share of utterances whose second half has another rate
    rate_change: tuple[float, float] = (0.6, 1.5)  # that rate as a multiple of the first half's
    reverb_share: float = 0.0  # share of reverberant utterances
    rt60: tuple[float, float] = (0.2, 0.9)  # their reverberation time, seconds
    snr_levels_db: tuple[float, ...] = ()  # noise at one of these (+-2.5 dB); () = the split's range
    unseen_word_share: float = 0.0  # share of word families held out of train and dev, in every test sentence


CONDITIONS: dict[str, Condition] = {
    "clean": Condition("clean"),
    "hard": Condition("hard", rate_wpm=(100, 260), rate_jitter=30, child_share=1 / 3, rate_change_share=0.5,
                      reverb_share=0.7, snr_levels_db=(0.0, 5.0, 10.0, 15.0, 20.0), unseen_word_share=0.1),
}
"""Conditions of :func:`prepare_synth`: ``clean`` (the default corpus) and ``hard``."""


@dataclass(frozen=True)
class SplitSpec:
    """One split of a layout: its directory name, the size argument that sets its length
    (``train``: ``num_train``, ``dev``: ``num_dev``, ``test``: ``num_test``), its voice pool
    (``train``: the dialect+variant combinations the training split draws from, ``held_out``: those
    reserved for unseen-voice splits) and its noise (SNR range in dB)."""

    name: str
    size: str
    voices: str
    snr_db: tuple[float, float] = _SNR_DB


LAYOUTS: dict[str, tuple[SplitSpec, ...]] = {
    "synth": (SplitSpec("train", "train", "train"), SplitSpec("dev", "dev", "train"),
              SplitSpec("test", "test", "held_out")),
    "librispeech": (SplitSpec("train-clean-100", "train", "train"), SplitSpec("dev-clean", "dev", "train"),
                    SplitSpec("dev-other", "dev", "held_out", _OTHER_SNR_DB),
                    SplitSpec("test-clean", "test", "train"),
                    SplitSpec("test-other", "test", "held_out", _OTHER_SNR_DB)),
}
"""Split layouts of :func:`prepare_synth`, in rendering order (the position seeds each split)."""


@dataclass(frozen=True)
class SynthSpeaker:
    """One voice setting; ``voice`` is the espeak-ng name with its variant (``en-us+m3``)."""

    id: int
    voice: str
    pitch: int
    pitch_range: int
    rate: int  # the speaker's typical rate (words per minute); utterances vary around it
    scale: float = 1.0  # frequency scale of the voice (> 1: child-like, a shorter vocal tract)


@dataclass(frozen=True)
class SynthUtterance:
    """One utterance to render: what to say, who says it and where it goes."""

    split: str
    index: int  # position in the split; seeds this utterance's RNG
    utt_id: str  # <spk>-<chapter>-<NNNN>
    chapter: int
    text: str  # upper-case transcript
    speaker: SynthSpeaker
    rate: int  # words per minute
    seed: int  # corpus seed
    split_index: int  # position of the split in its layout; seeds this utterance's RNG
    snr_db: tuple[float, float]  # noise level range of the split (or of this utterance's level)
    second_rate: int = 0  # words per minute of the second half of the words; 0: one rate throughout
    rt60: float = 0.0  # reverberation time in seconds; 0: dry

    @property
    def relative_path(self) -> str:
        """Path of the FLAC relative to ``<out>/LibriSpeech``."""
        return f"{self.split}/{self.speaker.id}/{self.chapter}/{self.utt_id}.flac"


def _held_out_voices(seed: int) -> set[str]:
    """One male and one female variant of every dialect, reserved for the test split."""
    rng = np.random.default_rng([seed, 7001])
    males = [v for v in VARIANTS if v.startswith("m")]
    females = [v for v in VARIANTS if v.startswith("f")]
    return {f"{d}+{rng.choice(group)}" for d in VOICES for group in (males, females)}


def plan_synth(
    num_train: int = 2000, num_dev: int = 200, num_test: int = 200, seed: int = 0,
    seconds: Optional[tuple[float, float]] = None, layout: str = "synth", condition: str = "clean",
) -> dict[str, list[SynthUtterance]]:
    """Decide every utterance of the corpus (text, speaker, rate, path) without rendering.

    Args:
        num_train, num_dev, num_test (int): utterances per split.
        seed (int): corpus seed.
        seconds ((float, float), optional): long utterances: each draws a target duration
            uniformly from this range and speaks consecutive sentences until their estimated
            duration (words at its speaking rate) reaches it. Default: one sentence each.
        layout (str): split names and conditions, a key of :data:`LAYOUTS`.
        condition (str): a key of :data:`CONDITIONS`; ``clean`` plans exactly as before it existed.

    Returns:
        plan (dict[str, list[SynthUtterance]]): per split, its utterances in order. Speaker
        ids run from 1 over train, dev, test; chapter ids are ``10 * speaker + k``, k >= 1.

    Raises:
        ValueError: a split needs more speakers than its voices x pitches allow (about 2900
            train speakers, i.e. ~59k train utterances); an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic corpus layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if condition not in CONDITIONS:
        raise ValueError(f"unknown synthetic corpus condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    cond, specs = CONDITIONS[condition], LAYOUTS[layout]
    sizes = {"train": num_train, "dev": num_dev, "test": num_test}
    total = sum(sizes[spec.size] for spec in specs)
    size = total if seconds is None else int(total * seconds[1] / 2.5) + 64
    unseen = held_out_words(seed, cond.unseen_word_share)
    texts = _SentencePool(seed, size, accept=(lambda t: unseen.isdisjoint(t.split())) if unseen else None)
    test_texts = _SentencePool(seed, size, accept=lambda t: not unseen.isdisjoint(t.split())) if unseen else texts
    held_out = _held_out_voices(seed)
    pools = {
        "train": sorted(f"{d}+{v}" for d in VOICES for v in VARIANTS if f"{d}+{v}" not in held_out),
        "held_out": sorted(held_out),
    }
    per_speaker = UTTERANCES_PER_CHAPTER * CHAPTERS_PER_SPEAKER
    used: set[tuple[str, int]] = set()  # (voice, pitch): a speaker's identity
    plan: dict[str, list[SynthUtterance]] = {}
    next_speaker = 1
    for split_index, spec in enumerate(specs):
        split, size = spec.name, sizes[spec.size]
        rng = np.random.default_rng([seed, 7002, split_index])
        pool = list(pools[spec.voices])
        rng.shuffle(pool)
        speakers = []
        for k in range(math.ceil(size / per_speaker)):
            voice = pool[k % len(pool)]
            child = cond.child_share > 0 and np.random.default_rng([seed, 7005, split_index, k]).random() < cond.child_share
            lo, hi = cond.child_pitch if child else _PITCH
            if sum(v == voice and lo <= p <= hi for v, p in used) > hi - lo:
                raise ValueError(f"too many speakers for {split}: every pitch of {voice} is taken")
            pitch = int(rng.integers(lo, hi + 1))
            while (voice, pitch) in used:
                pitch = int(rng.integers(lo, hi + 1))
            used.add((voice, pitch))
            speakers.append(SynthSpeaker(
                id=next_speaker + k, voice=voice, pitch=pitch,
                pitch_range=int(rng.integers(_PITCH_RANGE[0], _PITCH_RANGE[1] + 1)),
                rate=int(rng.integers(cond.rate_wpm[0] + 10, cond.rate_wpm[1] - 10 + 1)),
                scale=float(np.random.default_rng([seed, 7006, split_index, k]).uniform(*cond.child_scale))
                if child else 1.0,
            ))
        next_speaker += len(speakers)
        utterances = []
        for i in range(size):
            speaker = speakers[i // per_speaker]
            chapter = 10 * speaker.id + (i % per_speaker) // UTTERANCES_PER_CHAPTER + 1
            number = i % UTTERANCES_PER_CHAPTER
            jitter = int(np.random.default_rng([seed, 7003, split_index, i]).integers(-cond.rate_jitter,
                                                                                     cond.rate_jitter + 1))
            rate = int(np.clip(speaker.rate + jitter, *cond.rate_wpm))
            pool_texts = test_texts if spec.size == "test" else texts
            if seconds is None:
                text = pool_texts.take(1)
            else:
                target = np.random.default_rng([seed, 7004, split_index, i]).uniform(*seconds)
                text = pool_texts.take_until(lambda words: words * 60 / rate >= target)
            utterances.append(SynthUtterance(
                split=split, index=i, utt_id=f"{speaker.id}-{chapter}-{number:04d}",
                chapter=chapter, text=text, speaker=speaker, rate=rate, seed=seed,
                split_index=split_index, **_utterance_condition(cond, spec, rate, [seed, 7008, split_index, i]),
            ))
        plan[split] = utterances
    return plan


def held_out_words(seed: int, share: float) -> set[str]:
    """Every form of ``share`` of the :func:`~asr_zoo.data.sentences.word_families` (at least one
    family when ``share`` > 0), drawn with ``seed``: the words a hard corpus never says in train or dev."""
    if share <= 0:
        return set()
    families = word_families()
    rng = np.random.default_rng([seed, 7007])
    chosen = rng.choice(len(families), size=max(1, round(share * len(families))), replace=False)
    return {word for k in chosen for word in families[k]}


def _utterance_condition(cond: Condition, spec: SplitSpec, rate: int, rng_key: list[int]) -> dict:
    """An utterance's share of ``cond``: its noise range, second-half rate and reverberation
    (nothing but the split's noise range for ``clean``, so its plan is unchanged)."""
    if cond.name == "clean":
        return {"snr_db": spec.snr_db}
    rng = np.random.default_rng(rng_key)
    second = int(np.clip(rate * rng.uniform(*cond.rate_change), 80, 400)) if rng.random() < cond.rate_change_share else 0
    rt60 = float(rng.uniform(*cond.rt60)) if rng.random() < cond.reverb_share else 0.0
    snr = spec.snr_db
    if cond.snr_levels_db:
        level = float(cond.snr_levels_db[int(rng.integers(len(cond.snr_levels_db)))])
        snr = (level - 2.5, level + 2.5)
    return {"snr_db": snr, "second_rate": second, "rt60": rt60}


class _SentencePool:
    """Consecutive sentences of :func:`generate_sentences` for ``seed`` that ``accept`` (all when
    None), handed out in order (the list is a prefix of any longer one, so it grows by regenerating)."""

    def __init__(self, seed: int, size: int, accept=None):
        self.seed, self.sentences, self.next, self.accept = seed, generate_sentences(size, seed), 0, accept

    def _sentence(self) -> str:
        while True:
            if self.next == len(self.sentences):
                self.sentences = generate_sentences(2 * len(self.sentences), self.seed)
            self.next += 1
            if self.accept is None or self.accept(self.sentences[self.next - 1]):
                return self.sentences[self.next - 1]

    def take(self, n: int) -> str:
        return " ".join(self._sentence() for _ in range(n))

    def take_until(self, enough) -> str:
        """Sentences joined until ``enough(number of words)`` holds (at least one)."""
        words: list[str] = []
        while not words or not enough(len(words)):
            words += self._sentence().split()
        return " ".join(words)


def render_utterance(utt: SynthUtterance) -> np.ndarray:
    """Speak, pad, add noise, resample to 16 kHz and peak-normalise one utterance.

    Args:
        utt (SynthUtterance): what to render.

    Returns:
        audio (ndarray): shape `(N,)`, int16 samples at :data:`SAMPLE_RATE` Hz with the peak
        at 0.9 of full scale; a function of ``utt`` only.

    Raises:
        espeak.EspeakError: espeak-ng could not speak the text.
    """
    speaker = utt.speaker
    words = utt.text.lower().split()
    half = len(words) // 2 if utt.second_rate and len(words) > 1 else len(words)
    parts = [(words[:half], utt.rate), (words[half:], utt.second_rate)]
    # A voice scaled by `scale` is played `scale` times faster: espeak speaks it that much slower.
    speech = np.concatenate([espeak.synthesize(
        " ".join(part), speaker.voice, int(np.clip(round(rate / speaker.scale), 80, 450)), speaker.pitch,
        speaker.pitch_range).astype(np.float64) for part, rate in parts if part])
    ratio = (Fraction(SAMPLE_RATE, espeak.sample_rate()) / Fraction(speaker.scale)).limit_denominator(1000)
    speech = resample_poly(speech, ratio.numerator, ratio.denominator)
    rng = np.random.default_rng([utt.seed, 7004, utt.split_index, utt.index])
    lead, trail = (int(rng.uniform(*_PAD_SECONDS) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    if utt.rt60 > 0:
        audio = fftconvolve(audio, room_response(utt.rt60, [utt.seed, 7009, utt.split_index, utt.index]))[: len(audio)]
    # Coloured noise: white noise through a one-pole low-pass (pole 0 = white, 0.95 = dark).
    noise = lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], rng.standard_normal(audio.shape[0]))
    snr_db = rng.uniform(*utt.snr_db)
    speech_power = np.mean(speech**2)
    noise *= np.sqrt(speech_power / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    audio += noise
    audio *= _PEAK / np.max(np.abs(audio))
    return np.round(audio * 32767).astype(np.int16)


def room_response(rt60: float, rng_key: list[int]) -> np.ndarray:
    """A synthetic room impulse response: a direct path, then Gaussian noise decaying by 60 dB
    over ``rt60`` seconds from 2.5 ms on, at a direct-to-reverberant ratio of 0-10 dB; unit energy.

    Returns:
        rir (ndarray): shape `(round(rt60 * 16000),)`, float64.
    """
    rng = np.random.default_rng(rng_key)
    n = max(2, round(rt60 * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-3 * math.log(10) * t / rt60) * (t >= 0.0025)
    tail *= math.sqrt(10 ** (-rng.uniform(0.0, 10.0) / 10) / max(np.sum(tail**2), 1e-12))
    tail[0] = 1.0
    return tail / math.sqrt(np.sum(tail**2))


def _render_to_file(job: tuple[SynthUtterance, str]) -> tuple[str, Optional[int], Optional[str]]:
    """Render one utterance to ``path`` atomically; return (utt_id, samples, drop reason)."""
    utt, path = job
    try:
        audio = render_utterance(utt)
    except espeak.EspeakError as e:
        return utt.utt_id, None, f"espeak-ng: {e}"
    atomic_replace(Path(path), lambda tmp: sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16"))
    return utt.utt_id, audio.shape[0], None


def _init_worker() -> None:
    espeak.sample_rate()  # initialise libespeak-ng once in this worker


def _duration_stats(seconds: list[float]) -> dict:
    if not seconds:
        return {"hours": 0.0, "min_duration": 0.0, "mean_duration": 0.0, "max_duration": 0.0}
    return {
        "hours": round(sum(seconds) / 3600, 4),
        "min_duration": round(min(seconds), 3),
        "mean_duration": round(sum(seconds) / len(seconds), 3),
        "max_duration": round(max(seconds), 3),
    }


def _prepare_split(
    split_dir: Path, utterances: list[SynthUtterance], pool, progress: bool
) -> tuple[dict, dict]:
    """Render the missing utterances of one split, write its trans.txt files and marker.

    Returns the split's statistics (also the marker's content) and what this call rendered.
    """
    from tqdm import tqdm

    remove_stale_temps(split_dir, recursive=True)  # left by an interrupted run
    samples: dict[str, int] = {}
    jobs = []
    for utt in utterances:
        path = split_dir.parent / utt.relative_path
        if path.exists():
            samples[utt.utt_id] = sf.info(str(path)).frames
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((utt, str(path)))
    dropped: dict[str, str] = {}
    results = pool.imap_unordered(_render_to_file, jobs, chunksize=4) if pool else map(
        _render_to_file, jobs)
    for utt_id, num_samples, reason in tqdm(
        results, total=len(jobs), desc=split_dir.name, unit="utt", disable=not progress
    ):
        if reason is None:
            samples[utt_id] = num_samples
        else:
            dropped[utt_id] = reason
    chapters: dict[tuple[int, int], list[str]] = {}
    for utt in utterances:
        if utt.utt_id in samples:
            chapters.setdefault((utt.speaker.id, utt.chapter), []).append(
                f"{utt.utt_id} {utt.text}\n")
    for (speaker, chapter), lines in chapters.items():
        atomic_write_text(split_dir / str(speaker) / str(chapter) / f"{speaker}-{chapter}.trans.txt",
                      "".join(sorted(lines)))
    seconds = [n / SAMPLE_RATE for n in samples.values()]
    stats = {
        "utterances": len(samples),
        "speakers": len({s for s, _ in chapters}),
        **_duration_stats(seconds),
        "voices": sorted({u.speaker.voice for u in utterances}),
        "dropped": len(dropped),
        "dropped_reasons": dict(sorted(dropped.items())),
    }
    atomic_write_text(split_dir / ".done", json.dumps(stats, indent=1) + "\n")
    rendered = [samples[u.utt_id] for u, _ in jobs if u.utt_id in samples]
    return stats, {"utterances": len(rendered), "seconds": round(sum(rendered) / SAMPLE_RATE, 3)}


def prepare_synth(
    out_dir: Pathlike,
    num_train: int = 2000,
    num_dev: int = 200,
    num_test: int = 200,
    seed: int = 0,
    num_workers: int = 2,
    progress: bool = True,
    seconds: Optional[tuple[float, float]] = None,
    layout: str = "synth",
    condition: str = "clean",
) -> dict:
    """Render the synthetic corpus into ``<out_dir>/LibriSpeech`` (see the module docstring).

    Args:
        out_dir (Pathlike): output directory; ``LibriSpeech/`` and ``synth_info.json`` go in it.
        num_train, num_dev, num_test (int): utterances per split.
        seed (int): corpus seed; the same seed gives a byte-identical corpus.
        num_workers (int): rendering processes (each initialises espeak-ng once); <= 1 renders
            in this process.
        progress (bool): show a tqdm progress bar per split.
        seconds ((float, float), optional): long utterances of about this many seconds, several
            sentences each (see :func:`plan_synth`); e.g. ``(15, 35)`` as in LibriSpeech.
        layout (str): ``synth`` (train / dev / test) or ``librispeech`` (train-clean-100,
            dev-clean, dev-other, test-clean, test-other; see the module docstring).
        condition (str): ``clean`` (the default corpus) or ``hard`` (:data:`CONDITIONS`, the
            module docstring).

    Returns:
        summary (dict): the content of ``synth_info.json``: the configuration and, per split,
        ``utterances``, ``speakers``, ``hours``, ``min/mean/max_duration`` (seconds),
        ``voices``, ``dropped`` (count) and ``dropped_reasons`` (utt_id -> reason); plus
        ``rendered``: per split, the ``utterances`` and audio ``seconds`` this call rendered
        (0 for work found done). Only ``rendered`` is left out of ``synth_info.json``, so the
        files on disk do not depend on how often preparation was resumed.

    Raises:
        ValueError: ``out_dir`` holds a corpus prepared with a different configuration; an
            unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic corpus layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if condition not in CONDITIONS:
        raise ValueError(f"unknown synthetic corpus condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    out_dir = Path(out_dir)
    root = out_dir / "LibriSpeech"
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "seed": seed, "num_train": num_train, "num_dev": num_dev, "num_test": num_test,
        "generator_version": GENERATOR_VERSION, "synth_version": SYNTH_VERSION,
        "sample_rate": SAMPLE_RATE,
    }
    if seconds is not None:  # only then: the default corpus keeps its config (and its bytes)
        if not 0 < seconds[0] <= seconds[1]:
            raise ValueError(f"utterance seconds must satisfy 0 < min <= max, got {seconds}")
        config["seconds"] = [float(seconds[0]), float(seconds[1])]
    if layout != "synth":  # likewise
        config["layout"] = layout
    if condition != "clean":  # likewise
        config["condition"] = condition
    info_path = out_dir / "synth_info.json"
    remove_stale_temps(out_dir, info_path.name)  # left by a run killed while writing it
    if info_path.exists():
        previous = json.loads(info_path.read_text())["config"]
        if previous != config:
            raise ValueError(
                f"{out_dir} holds a synthetic corpus made with {previous}, not {config}; "
                "use another directory or delete it")
    else:
        atomic_write_text(info_path, json.dumps({"config": config, "complete": False}, indent=1))
    plan = plan_synth(num_train, num_dev, num_test, seed, seconds, layout, condition)
    splits, rendered = {}, {}
    todo = [s for s in plan if not (root / s / ".done").exists()]
    pool = None
    if todo and num_workers > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(num_workers, initializer=_init_worker)
    try:
        for split in plan:
            marker = root / split / ".done"
            if split in todo:
                (root / split).mkdir(exist_ok=True)
                splits[split], rendered[split] = _prepare_split(
                    root / split, plan[split], pool, progress)
            else:
                splits[split] = json.loads(marker.read_text())
                rendered[split] = {"utterances": 0, "seconds": 0.0}
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    info = {
        "config": config,
        "complete": True,
        "total_hours": round(sum(s["hours"] for s in splits.values()), 4),
        "splits": splits,
    }
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    return {**info, "rendered": rendered}
