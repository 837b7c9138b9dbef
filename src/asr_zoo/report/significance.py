"""Paired significance of WER differences: bootstrap CI + permutation p-value over matched utterances.

Inputs are per-utterance word edit counts and reference word counts
(``results/<tag>.utt_errors.tsv``: ``utt_id``, ``word_errors``, ``ref_words``). WER difference in percent points =
``100 * (sum(e_sys) - sum(e_base)) / sum(words)`` over the utterances both systems decoded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import stats

from .metrics import utterance_word_errors

__all__ = ["utterance_errors", "pool_seeds", "paired_difference"]


def utterance_errors(run_dir: Path, tag: str) -> dict[str, tuple[float, int]]:
    """``{utt_id: (word edits, reference words)}`` from ``results/<tag>.utt_errors.tsv``, or,
    for results written before that file existed, scored from ``<tag>.hyps.tsv``."""
    results = Path(run_dir) / "results"
    counts = results / f"{tag}.utt_errors.tsv"
    if counts.exists():
        with open(counts, newline="") as f:
            return {r["utt_id"]: (float(r["word_errors"]), int(r["ref_words"]))
                    for r in csv.DictReader(f, delimiter="\t")}
    with open(results / f"{tag}.hyps.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    scored = utterance_word_errors([r["reference"] or "" for r in rows], [r["hypothesis"] or "" for r in rows])
    return {r["utt_id"]: c for r, c in zip(rows, scored)}


def pool_seeds(per_seed: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    """Mean edits per utterance over seeds (utterances every seed decoded).

    >>> pool_seeds([{"a": (2, 4), "b": (0, 1)}, {"a": (1, 4)}])
    {'a': (1.5, 4)}
    """
    common = set.intersection(*(set(d) for d in per_seed))
    return {u: (float(np.mean([d[u][0] for d in per_seed])), per_seed[0][u][1]) for u in sorted(common)}


def paired_difference(system: dict, baseline: dict, n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """WER(system) - WER(baseline) in points, with a paired bootstrap CI (utterances resampled
    together, ``scipy.stats.bootstrap``, percentile method) and a paired permutation p-value
    (each utterance's two error counts swapped at random, ``scipy.stats.permutation_test``).

    Returns ``{delta, low, high, p, n_utts, significant}``; significant = the CI excludes 0.
    """
    utts = sorted(set(system) & set(baseline))
    if not utts:
        raise ValueError("no utterances in common: compare runs evaluated on the same split")
    e_sys = np.array([system[u][0] for u in utts], dtype=float)
    e_base = np.array([baseline[u][0] for u in utts], dtype=float)
    words = np.array([baseline[u][1] for u in utts], dtype=float)
    scale = 100.0 / max(words.sum(), 1.0)

    def diff(a, b, axis=-1):
        return scale * (np.sum(a, axis=axis) - np.sum(b, axis=axis))

    delta = float(diff(e_sys, e_base))
    rng = np.random.default_rng(seed)
    if np.all(e_sys == e_base):  # identical systems: every resample is 0
        low = high = 0.0
        p = 1.0
    else:
        ci = stats.bootstrap((e_sys, e_base), diff, paired=True, vectorized=True, n_resamples=n_resamples,
                             confidence_level=confidence, method="percentile", random_state=rng).confidence_interval
        low, high = float(ci.low), float(ci.high)
        p = float(stats.permutation_test((e_sys, e_base), diff, permutation_type="samples", vectorized=True,
                                         n_resamples=n_resamples, random_state=rng).pvalue)
    return {"delta": round(delta, 3), "low": round(low, 3), "high": round(high, 3), "p": round(p, 4),
            "n_utts": len(utts), "significant": bool(low > 0 or high < 0)}
