"""Objectives (LightningModules): CTC, RNN-T, seq2seq, Imputer-IM / Imputer-DP."""

from .registry import OBJECTIVES
from . import ctc  # noqa: F401  (registers itself)

__all__ = ["OBJECTIVES"]
