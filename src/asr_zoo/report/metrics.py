"""Word and character error rates (percent), via torchmetrics' edit distance."""

from __future__ import annotations

from torchmetrics.functional.text import char_error_rate, word_error_rate
from torchmetrics.functional.text.wer import _wer_update

__all__ = ["error_rates", "utterance_word_errors"]


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """Corpus-level WER and CER in percent (total edits / total reference words or chars).

    >>> error_rates(["A B C D"], ["A X C"])
    (50.0, 42.857...)
    """
    return float(word_error_rate(hyps, refs)) * 100, float(char_error_rate(hyps, refs)) * 100


def utterance_word_errors(refs: list[str], hyps: list[str]) -> list[tuple[int, int]]:
    """Per utterance ``(word edits, reference words)``: the counts the corpus WER sums
    (WER = 100 * sum(edits) / sum(words)); paired significance tests resample these.

    >>> utterance_word_errors(["A B C D", "A"], ["A X C", "A"])
    [(2, 4), (0, 1)]
    """
    out = []
    for ref, hyp in zip(refs, hyps):
        errors, words = _wer_update([hyp], [ref])
        out.append((int(errors), int(words)))
    return out
