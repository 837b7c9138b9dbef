"""Paired bootstrap / permutation significance on synthetic per-utterance error counts."""

import numpy as np

from asr_zoo.report.significance import paired_difference, pool_seeds


def _system(errors, words):
    return {f"u{i:03d}": (float(e), int(w)) for i, (e, w) in enumerate(zip(errors, words))}


def test_known_difference_is_found():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 15, size=300)
    base = rng.binomial(words, 0.2)
    worse = base + (rng.random(300) < 0.5)  # one more error on about half the utterances
    d = paired_difference(_system(worse, words), _system(base, words), n_resamples=2000)
    true = 100 * (worse.sum() - base.sum()) / words.sum()
    assert abs(d["delta"] - true) < 1e-2
    assert d["low"] < true < d["high"] and d["low"] > 0
    assert d["significant"] and d["p"] < 0.01 and d["n_utts"] == 300
    # the other way round: the same interval, negated
    r = paired_difference(_system(base, words), _system(worse, words), n_resamples=2000)
    assert r["significant"] and r["high"] < 0 and abs(r["delta"] + d["delta"]) < 1e-2


def test_identical_or_balanced_systems_are_not_significant():
    words = np.full(200, 10)
    base = np.random.default_rng(1).binomial(words, 0.3)
    same = paired_difference(_system(base, words), _system(base, words))
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0, "p": 1.0, "n_utts": 200, "significant": False}
    shuffled = base + np.where(np.arange(200) % 2 == 0, 1, -1) * (base > 0)  # +1 / -1 in equal measure
    d = paired_difference(_system(shuffled, words), _system(base, words))
    assert not d["significant"] and d["low"] <= d["delta"] <= d["high"] and d["p"] > 0.05


def test_only_matched_utterances_are_paired_and_seeds_pool():
    a = {"x": (1.0, 4), "y": (0.0, 3), "z": (9.0, 9)}
    b = {"x": (0.0, 4), "y": (0.0, 3)}
    assert paired_difference(a, b)["n_utts"] == 2
    pooled = pool_seeds([{"x": (2, 4), "y": (1, 3)}, {"x": (0, 4), "y": (1, 3)}])
    assert pooled == {"x": (1.0, 4), "y": (1.0, 3)}
