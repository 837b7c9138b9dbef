"""Objectives (LightningModules): CTC, RNN-T, seq2seq, Imputer-IM / Imputer-DP."""

from .registry import OBJECTIVES
from . import ctc, imputer, rnnt, seq2seq  # noqa: F401  (each registers itself)
from .build import build_module, load_run

__all__ = ["OBJECTIVES", "build_module", "load_run"]
