"""Pruned RNN-T loss (Kuang et al. 2022, "Pruned RNN-T for fast, memory-efficient ASR training"),
re-implemented in pure PyTorch from the paper's math; runs on any device PyTorch runs on.

Legend: B batch, T frames, U target length, S prune range (``s_range``), J joint dim,
V vocabulary incl. blank (id 0).

The full transducer loss needs the joint network on every lattice node: a `(B, T, U+1, V)`
tensor. The pruned loss needs it on only ``S`` nodes per frame, `(B, T, S, V)`:

1. **Simple loss** (:func:`simple_rnnt_loss`) of a trivial additive joiner,
   ``logits[t, u] = am[t] + lm[u]`` with ``am`` `(B, T, V)` and ``lm`` `(B, U+1, V)` (linear
   projections of the encoder and predictor outputs). Its log-normaliser is a matrix product
   over the vocabulary, so no `(B, T, U+1, V)` tensor is ever built::

       lse[t, u] = log sum_v exp(am[t, v] + lm[u, v])
                 = am_max[t] + lm_max[u] + log( exp(am - am_max) @ exp(lm - lm_max)^T )[t, u]

   and only the blank and label scores are gathered: ``lpb[t, u] = am[t, 0] + lm[u, 0] - lse``,
   ``lpy[t, u] = am[t, y_u] + lm[u, y_u] - lse``: two `(B, T, U+1)` tensors, on which the RNN-T
   recursion of :mod:`asr_zoo.losses.rnnt` runs.
2. **Pruning bounds** (:func:`prune_ranges`): the gradient of the simple loss w.r.t. ``lpb`` and
   ``lpy`` is minus the occupancy of each transition (the posterior probability that an alignment
   takes it). Each frame keeps the ``S`` consecutive label positions ``start[t] .. start[t]+S-1``
   with the most node occupancy, then the starts are made a valid band: monotone non-decreasing in
   t, ``0 <= start <= max(0, U_b + 1 - S)``, ``start[0] = 0``, the last frame's band holds
   ``U_b``, and consecutive starts differ by at most ``S - 1`` (so a path through the band exists
   whenever ``U_b <= (T_b - 1)(S - 1) + S - 1``).
3. The **full joiner** on those nodes only: ``join(enc_proj[:, :, None], pred_proj gathered at
   ranges)`` -> `(B, T, S, V)` (:func:`gather_pruned`, done by the caller's joiner).
4. **Pruned loss** (:func:`pruned_rnnt_loss`): the RNN-T recursion restricted to the band. The
   band's blank and label log-probs are scattered into `(B, T, U+1)` lattices that are ``-inf``
   outside it, and the diagonal recursion runs on those; nothing of size V leaves the band.

With ``S >= U + 1`` the band is the whole lattice and the pruned loss equals the full loss
(tested, values and gradients); with smaller ``S`` it sums a subset of the alignments of the same
joint network, so it is never below the full loss.

Training combines the two with icefall's warm-up (:func:`pruned_loss_scales`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rnnt import (_alpha_on_diagonals, _beta_on_diagonals, _check_inputs, _diagonal_view,
                   _lattice_on_diagonals, _padded_labels, reduce_losses)

__all__ = ["simple_rnnt_loss", "prune_ranges", "gather_pruned", "pruned_rnnt_loss", "pruned_loss_scales",
           "lattice_rnnt_loss", "simple_rnnt_loss_reference"]


def lattice_rnnt_loss(lpb: Tensor, lpy: Tensor, logit_lengths: Tensor, target_lengths: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """RNN-T losses from the lattice's blank / label log-probs, and the transition occupancies.

    Args:
        lpb (Tensor): shape `(B, T, U+1)`, ``log p(blank | t, u)``; ``-inf`` removes a transition.
        lpy (Tensor): shape `(B, T, U+1)`, ``log p(y_u | t, u)`` (entries at ``u >= U_b`` ignored).
        logit_lengths (Tensor): shape `(B,)`, int, ``T_b``.
        target_lengths (Tensor): shape `(B,)`, int, ``U_b``.

    Returns:
        (losses `(B,)`, occ_blank `(B, T, U+1)`, occ_label `(B, T, U+1)`): ``-log P(y | x)`` (a
        differentiable function of ``lpb`` and ``lpy``, gradients ``-occ``) and the posterior
        occupancy of every blank / label transition (no gradient), zero outside the lattice.
    """
    return _LatticeLoss.apply(lpb, lpy, logit_lengths, target_lengths)


class _LatticeLoss(torch.autograd.Function):
    """alpha and beta on anti-diagonals (see :mod:`asr_zoo.losses.rnnt`); d loss / d lp = -occupancy."""

    @staticmethod
    def forward(ctx, lpb, lpy, logit_lengths, target_lengths):
        B, T, U1 = lpb.shape
        lpb_skew, lpy_skew = _lattice_on_diagonals(lpb.detach(), lpy.detach(), logit_lengths, target_lengths)
        alpha = _alpha_on_diagonals(lpb_skew, lpy_skew)  # (B, T+U+1, U+1)
        log_like = alpha[:, -1].gather(1, target_lengths.long()[:, None]).squeeze(1)  # (B,)
        beta = _beta_on_diagonals(lpb_skew, lpy_skew)  # (B, T+U+2, U+2)
        norm = torch.where(torch.isfinite(log_like), log_like, 0.0)[:, None, None]  # infeasible: occ 0
        to_blank = (alpha + lpb_skew + beta[:, 1:, :-1] - norm).exp_()  # (B, T+U+1, U+1)
        to_label = (alpha + lpy_skew + beta[:, 1:, 1:] - norm).exp_()
        t = torch.arange(T, device=lpb.device)[None, :, None]
        u = torch.arange(U1, device=lpb.device)[None, None, :]
        valid = (t < logit_lengths[:, None, None]) & (u <= target_lengths[:, None, None])  # (B, T, U+1)
        occ_blank = _diagonal_view(to_blank, T) * valid  # (B, T, U+1), a new tensor
        occ_label = _diagonal_view(to_label, T) * valid
        ctx.save_for_backward(occ_blank, occ_label)
        ctx.mark_non_differentiable(occ_blank, occ_label)
        return -log_like, occ_blank, occ_label

    @staticmethod
    def backward(ctx, grad_losses, _grad_occ_blank, _grad_occ_label):
        occ_blank, occ_label = ctx.saved_tensors
        scale = -grad_losses.to(occ_blank.dtype)[:, None, None]  # (B, 1, 1)
        return occ_blank * scale, occ_label * scale, None, None


def simple_rnnt_loss(am: Tensor, lm: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
                     blank: int = 0, reduction: str = "mean", return_occupancy: bool = False):
    """RNN-T loss of the additive joiner ``logits[t, u] = am[t] + lm[u]``, log-softmax over V.

    The log-normaliser is ``am_max + lm_max + log(exp(am - am_max) @ exp(lm - lm_max)^T)`` (one
    batched matrix product over V), so memory is `O(B T (U+1))`, not `O(B T (U+1) V)`.

    Args:
        am (Tensor): shape `(B, T, V)`, encoder-side scores.
        lm (Tensor): shape `(B, U+1, V)`, predictor-side scores (row u: after u labels).
        targets (Tensor): shape `(B, U)`, int; entries past ``target_lengths`` ignored.
        logit_lengths (Tensor): shape `(B,)`, int. target_lengths (Tensor): shape `(B,)`, int.
        blank (int): blank id. (Default: 0)
        reduction (str): as :func:`asr_zoo.losses.rnnt.rnnt_loss`. (Default: ``"mean"``)
        return_occupancy (bool): also return the node occupancy `(B, T, U+1)` (no gradient) that
            :func:`prune_ranges` takes. (Default: False)

    Returns:
        Tensor: `(B,)` for ``"none"`` else a scalar, float32 (float64 for float64 input); with
        ``return_occupancy`` a tuple ``(loss, occupancy)``.
    """
    B, T, V = am.shape
    U1 = lm.shape[1]
    _check_inputs(torch.empty((B, T, U1, V), device="meta"), targets, logit_lengths, target_lengths, blank, reduction)
    acc = torch.float64 if am.dtype == torch.float64 else torch.float32
    am, lm = am.to(acc), lm.to(acc)
    am_max = am.detach().amax(-1, keepdim=True)  # (B, T, 1); constants: lse is shift-invariant
    lm_max = lm.detach().amax(-1, keepdim=True)  # (B, U+1, 1)
    prod = torch.bmm((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U+1)
    lse = prod.clamp_min(torch.finfo(acc).tiny).log() + am_max + lm_max.transpose(1, 2)  # (B, T, U+1)
    labels = _padded_labels(targets, target_lengths, blank, U1)  # (B, U+1)
    lm_label = lm.gather(2, labels[:, :, None]).squeeze(2)  # (B, U+1): lm[u, y_u]
    am_label = am.gather(2, labels[:, None, :].expand(B, T, U1))  # (B, T, U+1): am[t, y_u]
    lpb = am[:, :, blank, None] + lm[:, None, :, blank] - lse  # (B, T, U+1)
    lpy = am_label + lm_label[:, None, :] - lse  # (B, T, U+1)
    losses, occ_blank, occ_label = lattice_rnnt_loss(lpb, lpy, logit_lengths, target_lengths)
    loss = reduce_losses(losses, target_lengths, reduction)
    return (loss, occ_blank + occ_label) if return_occupancy else loss


def simple_rnnt_loss_reference(am: Tensor, lm: Tensor, targets: Tensor, logit_lengths: Tensor,
                               target_lengths: Tensor, blank: int = 0, reduction: str = "mean") -> Tensor:
    """The same loss the obvious way: the full `(B, T, U+1, V)` sum ``am[t] + lm[u]`` into
    :func:`asr_zoo.losses.rnnt.rnnt_loss_reference`. For tests."""
    from .rnnt import rnnt_loss_reference

    return rnnt_loss_reference(am[:, :, None] + lm[:, None], targets, logit_lengths, target_lengths, blank,
                               reduction)


def prune_ranges(occupancy: Tensor, logit_lengths: Tensor, target_lengths: Tensor, s_range: int) -> Tensor:
    """Label positions kept per frame: the band of width ``S`` holding the most occupancy.

    Args:
        occupancy (Tensor): shape `(B, T, U+1)`, node occupancy of the simple loss (any
            non-negative score of the nodes works).
        logit_lengths (Tensor): shape `(B,)`, int, ``T_b``. target_lengths (Tensor): `(B,)`, ``U_b``.
        s_range (int): ``S >= 2``; taken as ``min(S, U + 1)``.

    Returns:
        Tensor: ranges `(B, T, S)` int64, ``ranges[b, t, k] = start[b, t] + k`` with ``start``
        monotone non-decreasing in t, ``start[b, 0] = 0``, ``0 <= start <= max(0, U_b + 1 - S)``
        (so ``start <= U + 1 - S`` at every frame, padding frames included), the band of frame
        ``T_b - 1`` containing ``U_b``, and ``start[t+1] - start[t] <= S - 1``. Positions above
        ``U_b`` (when ``U_b + 1 < S``) lie outside the utterance and the loss ignores them.
    """
    if s_range < 2:
        raise ValueError(f"s_range must be >= 2 (a band of 1 allows no label), got {s_range}")
    B, T, U1 = occupancy.shape
    S = min(s_range, U1)
    device = occupancy.device
    csum = torch.nn.functional.pad(occupancy.detach().float().cumsum(2), (1, 0))  # (B, T, U+2)
    window = csum[:, :, S:] - csum[:, :, :-S]  # (B, T, U+2-S): mass of the band starting at s
    s = torch.arange(U1 + 1 - S, device=device)
    highest = (target_lengths.long() + 1 - S).clamp(min=0)  # (B,) last valid start per utterance
    window = window.masked_fill(s[None, None] > highest[:, None, None], -1.0)
    start = window.argmax(2)  # (B, T)
    t = torch.arange(T, device=device)[None]  # (1, T)
    last = (logit_lengths.long() - 1)[:, None]  # (B, 1)
    start = torch.where(t >= last, highest[:, None], start)  # the last frame's band holds U_b
    start[:, 0] = 0  # every path starts at (0, 0)
    start = start.cummax(1).values  # monotone
    # reachable from (0, 0), at most S - 1 labels per frame: start[t] <= start[t'] + (t - t')(S - 1)
    start = (start - t * (S - 1)).cummin(1).values + t * (S - 1)
    start = torch.where(t >= last, highest[:, None], start)
    # can still reach U_b: raise earlier starts, start[t] >= start[t'] - (t' - t)(S - 1), t' > t
    start = (start - t * (S - 1)).flip(1).cummax(1).values.flip(1) + t * (S - 1)
    start = torch.minimum(start, highest[:, None]).clamp(min=0)  # only binds when no path fits the band
    return start[:, :, None] + torch.arange(S, device=device)  # (B, T, S)


def gather_pruned(pred: Tensor, ranges: Tensor) -> Tensor:
    """Predictor-side rows of the band: pred `(B, U+1, J)`, ranges `(B, T, S)` -> `(B, T, S, J)`."""
    B, T, S = ranges.shape
    J = pred.shape[-1]
    index = ranges.clamp(max=pred.shape[1] - 1).reshape(B, T * S, 1).expand(B, T * S, J)
    return pred.gather(1, index).view(B, T, S, J)


def pruned_rnnt_loss(logits: Tensor, ranges: Tensor, targets: Tensor, logit_lengths: Tensor,
                     target_lengths: Tensor, blank: int = 0, reduction: str = "mean") -> Tensor:
    """RNN-T loss restricted to the band: lattice nodes ``(t, ranges[b, t, k])`` only.

    Args:
        logits (Tensor): shape `(B, T, S, V)`, the joint network at the band's nodes
            (unnormalised; log-softmax over V here). Any float dtype; the lattice is float32
            (float64 for float64 input).
        ranges (Tensor): shape `(B, T, S)`, int64, from :func:`prune_ranges` (distinct
            positions ``< U + 1`` per frame).
        targets (Tensor): shape `(B, U)`, int. logit_lengths, target_lengths (Tensor): `(B,)`.
        blank (int): blank id. (Default: 0)
        reduction (str): as :func:`asr_zoo.losses.rnnt.rnnt_loss`. (Default: ``"mean"``)

    Returns:
        Tensor: `(B,)` for ``"none"`` else a scalar. ``+inf`` for an utterance whose band admits
        no alignment (more than ``S - 1`` labels per frame needed).
    """
    B, T, S, V = logits.shape
    U1 = targets.shape[1] + 1
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    labels = _padded_labels(targets, target_lengths, blank, U1)  # (B, U+1)
    band_labels = labels.gather(1, ranges.reshape(B, T * S)).view(B, T, S, 1)
    lpb_band, lpy_band = _BandLogProbs.apply(logits, band_labels, blank, acc)  # (B, T, S) each
    neg_inf = logits.new_full((B, T, U1), float("-inf"), dtype=acc)
    lpb = neg_inf.scatter(2, ranges, lpb_band)  # (B, T, U+1), -inf outside the band
    lpy = neg_inf.scatter(2, ranges, lpy_band)
    losses, _, _ = lattice_rnnt_loss(lpb, lpy, logit_lengths, target_lengths)
    return reduce_losses(losses, target_lengths, reduction)


class _BandLogProbs(torch.autograd.Function):
    """logits `(B, T, S, V)`, labels `(B, T, S, 1)` -> ``log_softmax`` at blank and at the label,
    `(B, T, S)` each, with the fused gradient ``g_b onehot(blank) + g_y onehot(y) - (g_b + g_y)
    softmax``: no log-probability tensor is kept, the gradient is the one full-size allocation."""

    @staticmethod
    def forward(ctx, logits, labels, blank, acc):
        lse = torch.logsumexp(logits.to(acc), -1)  # (B, T, S)
        lpb = logits[..., blank].to(acc) - lse
        lpy = logits.gather(3, labels).squeeze(3).to(acc) - lse
        ctx.save_for_backward(logits, labels, lse)
        ctx.blank = blank
        return lpb, lpy

    @staticmethod
    def backward(ctx, grad_b, grad_y):
        logits, labels, lse = ctx.saved_tensors
        total = grad_b + grad_y  # (B, T, S)
        grad = (logits.to(lse.dtype) - lse[..., None]).exp_().mul_(-total[..., None])  # (B, T, S, V)
        grad[..., ctx.blank] += grad_b
        grad.scatter_add_(3, labels, grad_y[..., None])
        return grad.to(logits.dtype), None, None, None


def pruned_loss_scales(step: int, warm_step: int, simple_loss_scale: float = 0.5) -> tuple[float, float]:
    """Weights ``(simple, pruned)`` of the two losses at optimizer step ``step`` (icefall).

    As in icefall's ``egs/librispeech/ASR/zipformer/train.py`` (``compute_loss``; there
    ``warm_step = 2000`` and ``--simple-loss-scale 0.5`` by default)::

        simple = s                      if step >= warm_step else 1.0 - (step / warm_step) * (1.0 - s)
        pruned = 1.0                    if step >= warm_step else 0.1 + 0.9 * (step / warm_step)
        loss   = simple * simple_loss + pruned * pruned_loss

    The simple loss leads while the pruning bounds are still poor; the pruned loss takes over.
    """
    if warm_step <= 0 or step >= warm_step:
        return simple_loss_scale, 1.0
    frac = step / warm_step
    return 1.0 - frac * (1.0 - simple_loss_scale), 0.1 + 0.9 * frac
