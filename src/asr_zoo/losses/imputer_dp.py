"""Imputer dynamic-programming (DP) loss on the native CTC kernels.

Legend: B batch, T frames, V vocabulary incl. blank, U padded target length.

The Imputer-DP loss of Chan et al. (2020, Eq. 11) for one utterance is

    DP = -log Σ_{a' ∈ β'(ã)} Π_t p(a'_t | ã, x)

where β'(ã) holds the CTC alignments of the target y whose token equals ã_t at every
*unmasked* (observed) frame t. At an observed frame every compatible alignment emits the
same token, so its factor p(ã_t) leaves the sum, and the remaining sum is an ordinary CTC
sum in which the observed frames allow one token only:

    DP = ctc_loss(lp') + Σ_{t observed} -lp[t, ã_t]

with ``lp'`` equal to ``lp`` except that every observed frame is a one-hot in log space
(0 at ã_t, -inf elsewhere). ``torch.nn.functional.ctc_loss`` then does all the work on
every device. Gradients: masked frames get the CTC gradient; observed frames get exactly
``-1`` at ã_t (times the upstream gradient) and zero elsewhere, since their replaced values
are constants that block the CTC gradient. Convention: like ``F.ctc_loss`` (whose gradient
with respect to ``log_probs`` is ``exp(lp) - posterior``, not ``-posterior``), the gradient
is exact with respect to the logits of a ``log_softmax``; with respect to ``log_probs``
themselves it may differ by ``c·exp(lp[t])`` per frame, which ``log_softmax``'s backward
removes. Tests check gradients with respect to the logits.

Speed: on CPU the CTC kernels run faster on ``lp'`` than on ``lp`` (the -inf entries are
cheap), so the DP loss is no slower than plain CTC (see docs/imputer.md).

An observed pattern that no alignment of y can match (e.g. a token that y does not contain,
a forced blank between two copies of a repeated label that the frames cannot fit
otherwise, or T too short for y) makes the sum empty: the loss is +inf. Such utterances
are *infeasible*; they are found exactly (see ``_ONE_HOT_LOG``) and, with
``zero_infinity=True``, get zero loss and zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .ctc import ctc_min_frames

__all__ = ["imputer_dp_loss", "MASKED"]

MASKED = -1
"""Value of ``observed`` at masked (imputed) frames."""

# Log-value written at ã_t on observed frames inside the CTC call. Using -1 instead of 0
# adds exactly +1 per observed frame to the CTC loss (added back below), so a feasible
# utterance with at least one observed frame has a CTC value >= 1 > 0, while an infeasible
# one has +inf, which ``zero_infinity`` turns into exactly 0: infeasible <=> value == 0.
_ONE_HOT_LOG = -1.0


class _ForceObserved(torch.autograd.Function):
    """``log_probs`` -> (``lp'``, ``lp[t, ã_t]``), with one fused pass in backward.

    Forward: ``lp'`` is ``log_probs`` with every observed frame replaced by the one-hot
    (``_ONE_HOT_LOG`` at ã_t, -inf elsewhere); ``emitted[b, t] = log_probs[b, t, ã_t]``.
    Backward: the gradient of ``lp'`` passes through at masked frames and is dropped at
    observed ones (their values are constants), and the gradient of ``emitted`` is added at
    ã_t. Autograd would get the same with masked_fill/scatter/gather, in several more full
    `(B, T, V)` passes.

    Args (forward):
        log_probs (Tensor): shape `(B, T, V)`.
        is_observed (Tensor): shape `(B, T)`, bool.
        token (Tensor): shape `(B, T)`, int64 in ``[0, V)``.
    """

    @staticmethod
    def forward(ctx, log_probs: Tensor, is_observed: Tensor, token: Tensor):
        index = token[..., None]  # (B, T, 1)
        emitted = log_probs.gather(2, index).squeeze(2)  # (B, T)
        forced = torch.where(is_observed[..., None], float("-inf"), log_probs)  # (B, T, V)
        forced.scatter_(2, index, torch.where(is_observed, _ONE_HOT_LOG, emitted)[..., None])
        ctx.save_for_backward(is_observed, index)
        return forced, emitted

    @staticmethod
    def backward(ctx, grad_forced: Tensor, grad_emitted: Tensor):
        is_observed, index = ctx.saved_tensors
        grad = torch.where(is_observed[..., None], 0.0, grad_forced)  # (B, T, V)
        grad.scatter_add_(2, index, grad_emitted[..., None])
        return grad, None, None


def imputer_dp_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    observed: Tensor,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = True,
    return_infeasible: bool = False,
    observed_weight: float = 1.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """Imputer-DP loss: -log of the total probability of the CTC alignments of ``targets``
    that agree with ``observed`` at every unmasked frame.

    Args:
        log_probs (Tensor): shape `(B, T, V)`, log-softmax outputs, batch-first. float32 or
            float64 (other float dtypes are computed in float32).
        targets (Tensor): shape `(B, U)`, int64 label ids in ``[0, V)``, ``blank`` excluded;
            entries past ``target_lengths`` are ignored.
        input_lengths (Tensor): shape `(B,)`, valid frames per utterance (<= T).
        target_lengths (Tensor): shape `(B,)`, valid labels per utterance (<= U).
        observed (Tensor): shape `(B, T)`, int64: the alignment token ã_t (``blank``
            allowed) at unmasked frames, ``MASKED`` (-1) at masked frames. Frames at or past
            ``input_lengths`` are ignored whatever they hold.
        blank (int): blank class id.
        reduction (str): ``"none"`` -> `(B,)` per-utterance losses; ``"sum"`` -> their sum;
            ``"mean"`` -> as ``F.ctc_loss``: each loss divided by its target length
            (clamped to >= 1), then averaged over the batch (infeasible utterances count as
            zero in the average).
        zero_infinity (bool): give infeasible utterances zero loss and zero gradient. If
            False their loss is +inf, but their gradient is still zero (never NaN).
        return_infeasible (bool): also return the infeasibility mask.
        observed_weight (float): w in ``ctc_loss(lp') + w Σ_{t observed} -lp[t, ã_t]``. 1 is Eq. 11,
            -log p(a | ã, x), which also teaches the model to repeat the tokens it is given; 0 is
            -log p(a at masked frames | ã, x), the masked frames only (decoding never re-predicts a
            committed frame).

    Returns:
        Tensor: the loss (shape `(B,)` for ``reduction="none"``, else a scalar), and with
        ``return_infeasible=True`` also a bool Tensor of shape `(B,)`, True where no
        alignment of the target matches ``observed`` (count them with ``.sum()``).

    With nothing observed the loss equals ``F.ctc_loss`` on the same inputs; with every
    frame observed by a valid alignment of the target it is the per-frame cross-entropy sum.

    >>> lp = torch.randn(1, 4, 3).log_softmax(-1)
    >>> y, T, U = torch.tensor([[1, 2]]), torch.tensor([4]), torch.tensor([2])
    >>> none = torch.full((1, 4), MASKED)
    >>> ctc = F.ctc_loss(lp.transpose(0, 1), y, T, U, reduction="sum")
    >>> torch.allclose(imputer_dp_loss(lp, y, T, U, none, reduction="sum"), ctc)
    True
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    assert log_probs.ndim == 3, log_probs.shape
    assert observed.shape == log_probs.shape[:2], (observed.shape, log_probs.shape)
    if log_probs.dtype not in (torch.float32, torch.float64):
        log_probs = log_probs.float()
    num_frames, num_classes = log_probs.shape[1], log_probs.shape[2]
    frames = torch.arange(num_frames, device=observed.device)
    is_observed = (observed != MASKED) & (frames < input_lengths[:, None])  # (B, T)
    token = observed.clamp(0, num_classes - 1)  # (B, T), any valid id at masked frames

    lp_forced, emitted = _ForceObserved.apply(log_probs, is_observed, token)

    ctc = F.ctc_loss(
        lp_forced.transpose(0, 1),  # (T, B, V), the layout F.ctc_loss wants
        targets, input_lengths, target_lengths,
        blank=blank, reduction="none", zero_infinity=True,
    )  # (B,)
    num_observed = is_observed.sum(1)  # (B,)
    too_short = input_lengths < ctc_min_frames(targets, target_lengths)
    infeasible = torch.where(num_observed > 0, ctc == 0, too_short)  # (B,)

    # ctc == ctc_loss(lp') - num_observed * _ONE_HOT_LOG; fold the correction in here.
    observed_nll = torch.where(is_observed, _ONE_HOT_LOG - observed_weight * emitted, 0.0).sum(1)  # (B,)
    loss = ctc + observed_nll
    loss = torch.where(infeasible, 0.0 if zero_infinity else float("inf"), loss)

    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = (loss / target_lengths.clamp(min=1).to(loss.dtype)).mean()
    return (loss, infeasible) if return_infeasible else loss
