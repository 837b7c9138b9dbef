"""The synthetic espeak-ng corpus: sentences, the libespeak-ng binding, layout, determinism, resume."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_zoo.data import espeak, synth
from asr_zoo.data.sentences import MAX_WORDS, MIN_WORDS, generate_sentences, vocabulary
from asr_zoo.data.synth import SAMPLE_RATE, plan_synth, prepare_synth

SIZES = dict(num_train=6, num_dev=2, num_test=2)


# ---------------------------------------------------------------- sentences
def test_sentences_are_deterministic():
    assert generate_sentences(300, seed=3) == generate_sentences(300, seed=3)
    assert generate_sentences(300, seed=3) != generate_sentences(300, seed=4)
    # A longer list starts with the shorter one: sizes can grow without reshuffling.
    assert generate_sentences(500, seed=3)[:300] == generate_sentences(300, seed=3)


def test_sentence_structure():
    sentences = generate_sentences(2000, seed=0)
    vocab = vocabulary()
    assert len(vocab) >= 300
    assert len(set(sentences)) == len(sentences)
    lengths = Counter(len(s.split()) for s in sentences)
    assert min(lengths) == MIN_WORDS and max(lengths) == MAX_WORDS
    assert all(lengths[n] > 40 for n in range(MIN_WORDS, MAX_WORDS + 1))  # spread over the range
    words = Counter(w for s in sentences for w in s.split())
    assert set(words) <= vocab
    assert len(words) >= 0.9 * len(vocab)  # nearly every word is reachable
    for s in sentences:
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", s), s
    for s in sentences:  # A / AN agreement
        for article, word in zip(s.split(), s.split()[1:]):
            if article == "A":
                assert word[0] not in "AEIOU", s
            if article == "AN":
                assert word[0] in "AEIOU", s
    starts = Counter(s.split()[0] for s in sentences)
    assert all(starts[w] > 0 for w in ("WHERE", "WHY", "DID", "WHO", "THERE", "PLEASE"))
    joined = sum(any(w in s.split() for w in ("AND", "BUT", "BECAUSE", "WHILE")) for s in sentences)
    assert joined > 100


# ---------------------------------------------------------------- espeak binding
def test_espeak_synthesis_is_a_function_of_its_arguments():
    first = espeak.synthesize("the old man found a red box", "en-us+m3", 170, 40, 60)
    espeak.synthesize("something else entirely", "en-gb-scotland+f2", 200, 70, 30)
    again = espeak.synthesize("the old man found a red box", "en-us+m3", 170, 40, 60)
    assert first.dtype == np.float32 and first.ndim == 1
    assert 0.5 < first.shape[0] / espeak.sample_rate() < 5.0
    assert 0.05 < np.abs(first).max() <= 1.0
    np.testing.assert_array_equal(first, again)
    slower = espeak.synthesize("the old man found a red box", "en-us+m3", 120, 40, 60)
    assert slower.shape[0] > first.shape[0] * 1.2


def test_espeak_errors_are_clear():
    with pytest.raises(espeak.EspeakError, match="voice"):
        espeak.synthesize("hello", "xx-no-such-voice")
    with pytest.raises(espeak.EspeakError, match="hello there|''"):
        espeak.synthesize("", "en-us")


# ---------------------------------------------------------------- corpus plan
def test_plan_speakers_and_held_out_voices():
    plan = plan_synth(num_train=400, num_dev=60, num_test=60, seed=0)
    voices = {split: {u.speaker.voice for u in utts} for split, utts in plan.items()}
    assert voices["test"].isdisjoint(voices["train"] | voices["dev"])
    assert voices["dev"] <= set(synth.VOICES[i] + "+" + v for i in range(len(synth.VOICES))
                                for v in synth.VARIANTS)
    speakers = {u.speaker for utts in plan.values() for u in utts}
    assert len({(s.voice, s.pitch) for s in speakers}) == len(speakers)  # one setting per speaker
    assert len({s.id for s in speakers}) == len(speakers)
    texts = [u.text for utts in plan.values() for u in utts]
    assert len(set(texts)) == len(texts)  # no sentence is shared between splits
    for utts in plan.values():
        for u in utts:
            spk, chapter, number = u.utt_id.split("-")
            assert int(spk) == u.speaker.id and int(chapter) == u.chapter and len(number) == 4
            assert 140 <= u.rate <= 210 and 30 <= u.speaker.pitch <= 70


# ---------------------------------------------------------------- rendered corpus
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_a")
    summary = prepare_synth(out, **SIZES, seed=0, num_workers=1, progress=False)
    return out, summary


def test_layout_transcripts_and_audio(corpus):
    out, summary = corpus
    plan = plan_synth(**SIZES, seed=0)
    root = out / "LibriSpeech"
    for split, utts in plan.items():
        assert (root / split / ".done").exists()
        assert summary["splits"][split]["utterances"] == len(utts)
        assert summary["splits"][split]["dropped"] == 0
        for u in utts:
            spk, chapter = u.speaker.id, u.chapter
            flac = root / split / str(spk) / str(chapter) / f"{u.utt_id}.flac"
            info = sf.info(str(flac))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (
                SAMPLE_RATE, 1, "FLAC", "PCM_16")
            audio, _ = sf.read(str(flac), dtype="float32")
            assert 1.0 < audio.shape[0] / SAMPLE_RATE < 10.0
            assert abs(np.abs(audio).max() - 0.9) < 1e-3  # peak-normalised
            trans = root / split / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt"
            assert f"{u.utt_id} {u.text}\n" in trans.read_text()
        lines = [line for t in (root / split).rglob("*.trans.txt") for line in t.read_text().splitlines()]
        assert len(lines) == len(utts) == len(list((root / split).rglob("*.flac")))
    info = json.loads((out / "synth_info.json").read_text())
    assert info == {k: v for k, v in json.loads(json.dumps(summary)).items() if k != "rendered"}
    assert info["complete"] and summary["rendered"]["train"]["utterances"] == SIZES["num_train"]
    assert info["config"]["seed"] == 0 and info["splits"]["test"]["voices"]
    assert set(info["splits"]["test"]["voices"]).isdisjoint(info["splits"]["train"]["voices"])


def test_same_seed_same_bytes_whatever_the_workers(corpus, tmp_path):
    out, _ = corpus
    prepare_synth(tmp_path, **SIZES, seed=0, num_workers=2, progress=False)
    assert _files(out / "LibriSpeech") == _files(tmp_path / "LibriSpeech")
    other = plan_synth(**SIZES, seed=1)["train"][0]
    assert other.text != plan_synth(**SIZES, seed=0)["train"][0].text


def test_resume_renders_only_what_is_missing(corpus, tmp_path):
    out, _ = corpus
    prepare_synth(tmp_path, **SIZES, seed=0, num_workers=1, progress=False)
    root = tmp_path / "LibriSpeech"
    victim = sorted((root / "train").rglob("*.flac"))[3]
    victim.unlink()
    (root / "train" / ".done").unlink()
    summary = prepare_synth(tmp_path, **SIZES, seed=0, num_workers=1, progress=False)
    assert summary["rendered"]["train"]["utterances"] == 1
    assert summary["rendered"]["dev"]["utterances"] == summary["rendered"]["test"]["utterances"] == 0
    assert _files(root) == _files(out / "LibriSpeech")
    with pytest.raises(ValueError, match="different|not"):
        prepare_synth(tmp_path, **SIZES, seed=1, num_workers=1, progress=False)


def test_failed_utterances_are_dropped_and_reported(tmp_path, monkeypatch):
    bad = plan_synth(**SIZES, seed=0)["train"][2]
    real = espeak.synthesize

    def failing(text, *args, **kwargs):
        if text == bad.text.lower():
            raise espeak.EspeakError(f"simulated failure for {text!r}")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(espeak, "synthesize", failing)
    summary = prepare_synth(tmp_path, **SIZES, seed=0, num_workers=1, progress=False)
    train = summary["splits"]["train"]
    assert train["dropped"] == 1 and train["utterances"] == SIZES["num_train"] - 1
    assert "simulated failure" in train["dropped_reasons"][bad.utt_id]
    transcripts = "".join(t.read_text() for t in (tmp_path / "LibriSpeech/train").rglob("*.trans.txt"))
    assert bad.utt_id not in transcripts and bad.text not in transcripts


def test_long_utterances_span_the_asked_durations(tmp_path):
    """`prepare synth --min-seconds 15 --max-seconds 35`: several sentences per utterance, rendered
    durations near the asked range; the default corpus' plan is not affected."""
    plan = plan_synth(40, 4, 4, seed=0, seconds=(15.0, 35.0))
    estimated = [len(u.text.split()) * 60 / u.rate for split in plan.values() for u in split]
    assert min(estimated) >= 15.0 and max(estimated) < 35.0 + MAX_WORDS * 60 / 140
    assert plan_synth(40, 4, 4, seed=0)["train"][0].text != plan["train"][0].text
    summary = prepare_synth(tmp_path / "long", num_train=2, num_dev=1, num_test=1, seed=0, num_workers=1,
                            progress=False, seconds=(15.0, 20.0))
    assert summary["config"]["seconds"] == [15.0, 20.0]
    for split in summary["splits"].values():
        assert 10.0 < split["min_duration"] and split["max_duration"] < 30.0  # espeak's pace varies
    with pytest.raises(ValueError, match="made with"):  # the corpus records its durations
        prepare_synth(tmp_path / "long", num_train=2, num_dev=1, num_test=1, seed=0, num_workers=1, progress=False)


# ---------------------------------------------------------------- the hard condition
def test_hard_condition_plan():
    """`prepare synth --condition hard`: held-out words only in test (every test sentence has one),
    child-like speakers, changing rates, reverberation and noise levels as documented."""
    plan = plan_synth(400, 40, 40, seed=0, condition="hard")
    held = synth.held_out_words(0, synth.CONDITIONS["hard"].unseen_word_share)
    assert len(held) >= 20 and held == synth.held_out_words(0, 0.1) != synth.held_out_words(1, 0.1)
    assert all(held.isdisjoint(u.text.split()) for u in plan["train"] + plan["dev"])
    assert all(not held.isdisjoint(u.text.split()) for u in plan["test"])
    speakers = {u.speaker for utts in plan.values() for u in utts}
    children = [s for s in speakers if s.scale > 1]
    assert 0 < len(children) < len(speakers)
    assert all(75 <= s.pitch <= 99 and 1.15 <= s.scale <= 1.35 for s in children)
    utts = [u for split in plan.values() for u in split]
    assert 0.3 < sum(u.second_rate > 0 for u in utts) / len(utts) < 0.7
    assert 0.5 < sum(u.rt60 > 0 for u in utts) / len(utts) < 0.9
    assert {u.snr_db for u in utts} == {(level - 2.5, level + 2.5) for level in (0.0, 5.0, 10.0, 15.0, 20.0)}
    assert all(100 <= u.rate <= 260 and 0.2 <= u.rt60 <= 0.9 for u in utts if u.rt60)
    assert plan_synth(400, 40, 40, seed=0, condition="hard")["test"] == plan["test"]  # a function of the seed
    with pytest.raises(ValueError, match="valid: clean, hard"):
        plan_synth(4, 1, 1, condition="noisy")


def test_room_response_decays_from_a_direct_path():
    rir = synth.room_response(0.5, [0, 1])
    assert rir.shape == (8000,) and abs(float(np.sum(rir**2)) - 1.0) < 1e-9
    assert np.argmax(np.abs(rir)) == 0 and np.all(rir[1:40] == 0)  # direct path, then 2.5 ms of nothing
    tail = rir[40:] ** 2
    assert tail[: len(tail) // 10].sum() > 100 * tail[-len(tail) // 10:].sum()  # about 60 dB down at the end
    assert np.array_equal(rir, synth.room_response(0.5, [0, 1]))


def test_child_voices_are_higher_and_keep_their_pace():
    """A frequency scale of 1.3 moves the spectrum up by about that much at about the same duration."""
    from dataclasses import replace

    utt = replace(plan_synth(6, 2, 2, seed=0)["train"][0], snr_db=(80.0, 80.0))

    def centroid_and_seconds(scale):
        audio = synth.render_utterance(replace(utt, speaker=replace(utt.speaker, scale=scale))).astype(np.float64)
        power = np.abs(np.fft.rfft(audio)) ** 2
        freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
        return float((power * freqs).sum() / power.sum()), len(audio) / SAMPLE_RATE

    (c1, s1), (c2, s2) = centroid_and_seconds(1.0), centroid_and_seconds(1.3)
    assert 1.15 < c2 / c1 < 1.45 and abs(s2 / s1 - 1) < 0.2


def test_hard_corpus_is_recorded_and_not_mixed_with_clean(tmp_path):
    summary = prepare_synth(tmp_path, num_train=2, num_dev=1, num_test=1, seed=0, num_workers=1, progress=False,
                            condition="hard")
    assert summary["config"]["condition"] == "hard" and summary["splits"]["test"]["utterances"] == 1
    with pytest.raises(ValueError, match="made with"):
        prepare_synth(tmp_path, num_train=2, num_dev=1, num_test=1, seed=0, num_workers=1, progress=False)
