"""Word and character error rates (percent), via torchmetrics' edit distance."""

from __future__ import annotations

from torchmetrics.functional.text import char_error_rate, word_error_rate

__all__ = ["error_rates"]


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """Corpus-level WER and CER in percent (total edits / total reference words or chars).

    >>> error_rates(["A B C D"], ["A X C"])
    (50.0, 42.857...)
    """
    return float(word_error_rate(hyps, refs)) * 100, float(char_error_rate(hyps, refs)) * 100
