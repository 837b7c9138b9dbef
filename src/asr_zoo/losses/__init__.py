"""Losses as pure functions (no Lightning): the transducer loss and the Imputer-DP loss."""

from .imputer_dp import imputer_dp_loss
from .rnnt import rnnt_loss

__all__ = ["imputer_dp_loss", "rnnt_loss"]
