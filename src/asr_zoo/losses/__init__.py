"""Losses as pure functions (no Lightning): the transducer loss and the Imputer-DP and -IM losses."""

from .imputer_dp import imputer_dp_loss
from .imputer_im import imputer_im_loss
from .rnnt import rnnt_loss

__all__ = ["imputer_dp_loss", "imputer_im_loss", "rnnt_loss"]
