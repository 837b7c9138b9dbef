"""CTC loss pieces shared by every objective: the frames a label sequence needs, the negative
log-likelihood on the native kernels, and the batch reductions all losses follow.

Legend: B batch, T' encoder frames, U target length, V vocabulary incl. blank (id 0).
"""

from __future__ import annotations

import torch  # noqa: F401  (the doctests use it)
import torch.nn.functional as F
from torch import Tensor

from ..tensors import lengths_to_valid_mask

__all__ = ["ctc_min_frames", "ctc_nll", "reduce_losses", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "mean_per_token", "none")


def ctc_min_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Fewest frames a CTC alignment of each target needs: U + number of adjacent repeats
    (a blank must separate repeated labels).

    Args:
        targets (Tensor): shape `(B, U)`.
        target_lengths (Tensor): shape `(B,)`.

    Returns:
        Tensor: shape `(B,)`, int64.

    >>> ctc_min_frames(torch.tensor([[3, 3, 4], [5, 5, 0]]), torch.tensor([3, 1])).tolist()
    [4, 1]
    """
    pairs = max(targets.shape[1] - 1, 0)  # adjacent label pairs (u-1, u) of the padded targets
    repeat = (targets[:, 1:] == targets[:, :-1]) & lengths_to_valid_mask(target_lengths - 1, pairs)
    return target_lengths + repeat.sum(1)


def reduce_losses(losses: Tensor, target_lengths: Tensor, reduction: str) -> Tensor:
    """Per-utterance losses `(B,)` -> ``sum``, ``mean`` (per utterance), ``mean_per_token``
    (sum / total target tokens) or ``none`` `(B,)`: the reductions every loss here follows."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    if reduction == "mean_per_token":
        return losses.sum() / target_lengths.sum().clamp(min=1).to(losses.dtype)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def ctc_nll(log_probs: Tensor, lengths: Tensor, tokens: Tensor, token_lens: Tensor,
            reduction: str = "sum", blank: int = 0) -> Tensor:
    """CTC negative log-likelihood (the main CTC loss and every auxiliary one).

    Args:
        log_probs (Tensor): shape `(B, T', V)`, per-frame log-probabilities (blank = ``blank``).
        lengths (Tensor): shape `(B,)`, valid frames.
        tokens (Tensor): shape `(B, U)`, padded labels.
        token_lens (Tensor): shape `(B,)`, valid labels.
        reduction (str): see :func:`reduce_losses` (default ``"sum"`` over the batch).

    Returns:
        Tensor: float32; infeasible utterances (too few frames) contribute 0.
    """
    losses = F.ctc_loss(log_probs.transpose(0, 1).float(), tokens, lengths, token_lens,
                        blank=blank, reduction="none", zero_infinity=True)  # (B,)
    return reduce_losses(losses, token_lens, reduction)
