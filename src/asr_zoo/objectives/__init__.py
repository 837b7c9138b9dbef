"""Objectives (LightningModules): CTC, RNN-T, seq2seq, Imputer-IM / Imputer-DP."""

from .registry import OBJECTIVES
from . import ctc, imputer, rnnt, seq2seq  # noqa: F401  (each registers itself)

__all__ = ["OBJECTIVES"]
