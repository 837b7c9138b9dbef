"""Word and character error rates (percent), and the word-level error types behind the WER.

Corpus WER/CER come from torchmetrics. The error types come from one Levenshtein alignment
with backtrace (:func:`align_words`): substitutions + deletions + insertions of an utterance
equal its word edit distance, so their totals sum to the corpus WER's numerator.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from torchmetrics.functional.text import char_error_rate, word_error_rate

__all__ = ["error_rates", "align_words", "WordErrors", "word_errors", "utterance_word_errors",
           "error_type_rates", "ERROR_TYPES"]

ERROR_TYPES = ("sub", "del", "ins")
"""Keys of the error-type rates in results files (percent of reference words, sum = WER)."""


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """Corpus-level WER and CER in percent (total edits / total reference words or chars).

    >>> error_rates(["A B C D"], ["A X C"])
    (50.0, 42.857...)
    """
    return float(word_error_rate(hyps, refs)) * 100, float(char_error_rate(hyps, refs)) * 100


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, int | None, int | None]]:
    """Minimum-edit-distance alignment of two word sequences, with backtrace.

    Every edit costs 1 (Levenshtein). The backtrace walks from the end and, where several
    optimal predecessors exist, prefers a match/substitution, then a deletion, then an
    insertion (so ``A B`` vs ``B A`` is two substitutions, not deletion + match + insertion).

    Args:
        ref (Sequence[str]): reference words, length N.
        hyp (Sequence[str]): hypothesis words, length M.

    Returns:
        list of ``(op, i, j)`` in order, op one of ``"="`` (match), ``"S"`` (substitution),
        ``"D"`` (ref[i] deleted, j None), ``"I"`` (hyp[j] inserted, i None). The edit distance
        is the number of ops that are not ``"="``.

    >>> align_words("a b c d".split(), "a x c".split())
    [('=', 0, 0), ('S', 1, 1), ('=', 2, 2), ('D', 3, None)]
    """
    n, m = len(ref), len(hyp)
    # dist[i][j]: edit distance of ref[:i] and hyp[:j], (N+1, M+1)
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        dist[i][0] = i
    for j in range(m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        row, prev = dist[i], dist[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (ref[i - 1] != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    ops = []
    i, j = n, m
    while i or j:
        if i and j and dist[i][j] == dist[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            i, j = i - 1, j - 1
            ops.append(("=" if ref[i] == hyp[j] else "S", i, j))
        elif i and dist[i][j] == dist[i - 1][j] + 1:
            i -= 1
            ops.append(("D", i, None))
        else:
            j -= 1
            ops.append(("I", None, j))
    return ops[::-1]


class WordErrors(NamedTuple):
    """Word errors of one utterance: ``sub + dels + ins`` = the word edit distance."""

    sub: int
    dels: int  # "del" is a keyword
    ins: int
    ref_words: int

    @property
    def edits(self) -> int:
        return self.sub + self.dels + self.ins


def word_errors(ref: str, hyp: str) -> WordErrors:
    """Substitutions, deletions, insertions and reference words of one utterance (whitespace
    tokenisation, as the WER uses).

    >>> word_errors("a b c d", "a x c")
    WordErrors(sub=1, dels=1, ins=0, ref_words=4)
    """
    r, h = ref.split(), hyp.split()
    ops = [op for op, _, _ in align_words(r, h)]
    return WordErrors(ops.count("S"), ops.count("D"), ops.count("I"), len(r))


def utterance_word_errors(refs: list[str], hyps: list[str]) -> list[tuple[int, int]]:
    """Per utterance ``(word edits, reference words)``: the counts the corpus WER sums
    (WER = 100 * sum(edits) / sum(words)); paired significance tests resample these.

    >>> utterance_word_errors(["A B C D", "A"], ["A X C", "A"])
    [(2, 4), (0, 1)]
    """
    return [(e.edits, e.ref_words) for e in map(word_errors, refs, hyps)]


def error_type_rates(refs: list[str], hyps: list[str]) -> dict:
    """Corpus totals of each error type and their rates in percent of reference words:
    ``{sub, del, ins}`` (percent; sub + del + ins = WER up to rounding to 3 decimals) and
    ``{num_sub, num_del, num_ins, num_ref_words}`` (counts).

    >>> error_type_rates(["a b c d", "a"], ["a x c", "a y"])
    {'sub': 20.0, 'del': 20.0, 'ins': 20.0, 'num_sub': 1, 'num_del': 1, 'num_ins': 1, 'num_ref_words': 5}
    """
    counts = list(map(word_errors, refs, hyps))
    totals = dict(zip(ERROR_TYPES, (sum(c[k] for c in counts) for k in range(3))))
    words = sum(c.ref_words for c in counts)
    rates = {k: round(100 * v / max(words, 1), 3) for k, v in totals.items()}
    return rates | {f"num_{k}": v for k, v in totals.items()} | {"num_ref_words": words}
