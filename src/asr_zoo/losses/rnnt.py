"""RNN-T (transducer) loss in pure PyTorch: fast, memory-lean, device-agnostic.

Legend: B batch, T frames (encoder steps), U target length, V vocabulary (blank included).

The joint network scores every lattice node ``(t, u)``: ``logits[b, t, u]`` is the unnormalised
distribution over the next symbol after ``t`` frames have been consumed and the first ``u``
target tokens emitted, for ``0 <= t < T`` and ``0 <= u <= U`` (hence the ``U + 1`` axis). From
``(t, u)`` a blank moves to ``(t + 1, u)`` and the label ``y[u]`` (0-based) moves to ``(t, u + 1)``.
With ``lpb(t, u) = log p(blank | t, u)`` and ``lpy(t, u) = log p(y[u] | t, u)`` (Graves 2012):

    alpha(0, 0) = 0
    alpha(t, u) = logaddexp(alpha(t - 1, u) + lpb(t - 1, u), alpha(t, u - 1) + lpy(t, u - 1))
    beta(T_b - 1, U_b) = lpb(T_b - 1, U_b)
    beta(t, u)  = logaddexp(lpb(t, u) + beta(t + 1, u), lpy(t, u) + beta(t, u + 1))
    loss_b = -log P(y | x) = -(alpha(T_b - 1, U_b) + lpb(T_b - 1, U_b)) = -beta(0, 0)

where ``T_b = logit_lengths[b]`` and ``U_b = target_lengths[b]``: every alignment ends with a
blank emitted from the last frame. The gradient w.r.t. the logits (fused log-softmax) is

    d loss / d logits[t, u, k] = occ(t, u) * softmax(logits[t, u])[k]
                                 - gb(t, u) * [k == blank] - gy(t, u) * [k == y[u]]

with the blank and label transition occupancies ``gb = exp(alpha + lpb + beta(t + 1, u) - logP)``
and ``gy = exp(alpha + lpy + beta(t, u + 1) - logP)`` and the node occupancy ``occ = gb + gy``.

Implementation (:func:`rnnt_loss`): the forward pass reads the logits once in cache-sized row
chunks to get the log-normaliser, gathers only the blank and label logits, and runs the alpha
recursion along anti-diagonals ``t + u = n`` (one vectorised step per diagonal). The backward pass
runs the beta recursion the same way and writes ``exp(logits - lse + log occ)`` straight into the
gradient buffer, then scatters the two sparse terms. Only ``(B, T, U + 1)``-sized tensors and a
reference to the logits are kept between forward and backward; no second ``(B, T, U + 1, V)``
tensor besides the gradient is ever allocated (non-contiguous logits are first made contiguous).

:func:`rnnt_loss_reference` is the plain-autograd version (``log_softmax`` + a per-frame alpha
recursion) used by tests and benchmarks. ``rnnt_loss(..., backend="torchaudio")`` computes the
same loss with torchaudio's C++/CUDA kernel where torchaudio imports (parity-tested there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tensors import lengths_to_valid_mask
from .ctc import reduce_losses

__all__ = ["reduce_losses", "rnnt_loss", "rnnt_loss_reference"]

_REDUCTIONS = ("none", "sum", "mean", "mean_per_token")
BACKENDS = ("asr_zoo", "torchaudio")
_CHUNK_ELEMENTS = 1 << 20  # CPU row chunk of the (B*T*(U+1), V) view: 4 MiB in float32, so the
# passes over one chunk hit the cache (2**16..2**22 measured alike on 1 thread; larger chunks
# mean fewer thread-pool launches, which matters on an oversubscribed CPU)


def rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
    clamp: float = -1.0,
    fused_log_softmax: bool = True,
    backend: str = "asr_zoo",
) -> Tensor:
    """RNN-T loss (negative log-likelihood over all alignments), torchaudio's argument order.

    Args:
        logits (Tensor): shape `(B, T, U + 1, V)`, joint-network output. Unnormalised scores when
            ``fused_log_softmax`` is True (the loss applies log-softmax over V), log-probabilities
            otherwise. float32, float64, float16 or bfloat16; the lattice and the log-normaliser are
            computed in float32 (float64 for float64 input).
        targets (Tensor): shape `(B, U)`, int. Token ids; entries at ``u >= target_lengths[b]`` are
            ignored (any value, e.g. -1 padding). Targets must not contain ``blank``.
        logit_lengths (Tensor): shape `(B,)`, int. Valid frames per utterance, ``1 <= T_b <= T``.
        target_lengths (Tensor): shape `(B,)`, int. Valid targets per utterance, ``0 <= U_b <= U``.
        blank (int): blank index in ``[0, V)``. (Default: 0)
        reduction (str): ``"none"`` -> per-utterance losses `(B,)`; ``"sum"``; ``"mean"`` (mean
            over the batch, as torchaudio); ``"mean_per_token"`` (sum of losses divided by the sum
            of target lengths, at least 1). (Default: ``"mean"``)
        clamp (float): if > 0, each utterance's gradient w.r.t. ``logits`` is clamped elementwise
            to ``[-clamp, clamp]`` before it is scaled by the incoming gradient (torchaudio's
            semantics). (Default: -1, no clamping)
        fused_log_softmax (bool): apply log-softmax over V inside the loss. (Default: True)
        backend (str): ``"asr_zoo"`` (this module, pure PyTorch) or ``"torchaudio"`` (its C++/CUDA
            kernel; needs an importable torchaudio, else ``RuntimeError``). (Default: ``"asr_zoo"``)

    Returns:
        Tensor: shape `(B,)` for ``"none"``, else a scalar; float32 (float64 for float64 input).
        The gradient w.r.t. ``logits`` has the logits' dtype and is exactly zero outside each
        utterance's ``t < T_b, u <= U_b`` region.

    Example:
        >>> logits = torch.randn(2, 5, 3, 4, requires_grad=True)
        >>> targets = torch.tensor([[1, 2], [3, -1]])
        >>> loss = rnnt_loss(logits, targets, torch.tensor([5, 4]), torch.tensor([2, 1]))
        >>> loss.backward()
        >>> loss.shape, logits.grad.shape
        (torch.Size([]), torch.Size([2, 5, 3, 4]))
    """
    _check_inputs(logits, targets, logit_lengths, target_lengths, blank, reduction)
    if backend == "torchaudio":
        losses = _torchaudio_losses(logits, targets, logit_lengths, target_lengths, blank, clamp,
                                    fused_log_softmax)
    elif backend == "asr_zoo":
        losses = _RNNTLoss.apply(
            logits, targets, logit_lengths, target_lengths, blank, float(clamp), fused_log_softmax
        )
    else:
        raise ValueError(f"backend={backend!r}; valid choices: {', '.join(BACKENDS)}")
    return reduce_losses(losses, target_lengths, reduction)


def _torchaudio_losses(logits, targets, logit_lengths, target_lengths, blank, clamp, fused_log_softmax):
    """Per-utterance losses `(B,)` from ``torchaudio.functional.rnnt_loss``. bf16/fp16 logits are
    cast to float32 (its CPU kernel takes float32 only); padding targets are set to blank and
    targets/lengths made int32, as it requires."""
    try:
        import torchaudio.functional as taf
    except Exception as e:  # ImportError, or OSError from a wheel linked against a missing CUDA
        raise RuntimeError(f"rnnt_loss(backend='torchaudio') needs an importable torchaudio ({e}); "
                           "use backend='asr_zoo'") from e
    valid = lengths_to_valid_mask(target_lengths, targets.shape[1])
    targets = torch.where(valid, targets, blank).int()  # torchaudio checks every entry
    logits = logits if logits.dtype == torch.float32 else logits.float()
    return taf.rnnt_loss(logits, targets, logit_lengths.int(), target_lengths.int(), blank=blank,
                         clamp=clamp, reduction="none", fused_log_softmax=fused_log_softmax)


def rnnt_loss_reference(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    """Plain-autograd RNN-T loss: ``log_softmax`` then the alpha recursion one frame at a time.

    Within a frame the label moves form a prefix sum, so with ``c(t, u) = sum_{j<u} lpy(t, j)``
    one row of the lattice is ``alpha(t, u) = c(t, u) + logcumsumexp_k(alpha(t-1, k) + lpb(t-1, k)
    - c(t, k))``. ``alpha(t, u)`` only depends on nodes ``t' <= t, u' <= u``, so padding never
    leaks in and lengths only matter when reading off ``alpha(T_b - 1, U_b)``. Memory and speed
    are those of ordinary autograd (several full-size copies of the logits).

    Args:
        logits (Tensor): shape `(B, T, U + 1, V)`, unnormalised joint-network output.
        targets (Tensor): shape `(B, U)`, int; entries past ``target_lengths`` are ignored.
        logit_lengths (Tensor): shape `(B,)`, int.
        target_lengths (Tensor): shape `(B,)`, int.
        blank (int): blank index. (Default: 0)
        reduction (str): as in :func:`rnnt_loss`. (Default: ``"mean"``)

    Returns:
        Tensor: shape `(B,)` for ``"none"``, else a scalar, in the dtype used for the lattice
        (float32, or float64 for float64 input).
    """
    _check_inputs(logits, targets, logit_lengths, target_lengths, blank, reduction)
    B, T, U1, V = logits.shape
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = logits.to(acc).log_softmax(-1)  # (B, T, U+1, V)
    lpb = log_probs[..., blank]  # (B, T, U+1)
    labels = _padded_labels(targets, target_lengths, blank, U1)  # (B, U+1)
    lpy = log_probs.gather(3, labels[:, None, :, None].expand(B, T, U1, 1)).squeeze(3)
    prefix = torch.cat([lpy.new_zeros(B, T, 1), lpy[..., :-1].cumsum(-1)], -1)  # (B, T, U+1)
    rows = [prefix[:, 0]]  # alpha(0, u): emit u labels in frame 0
    for t in range(1, T):
        into_row = rows[-1] + lpb[:, t - 1] - prefix[:, t]  # (B, U+1)
        rows.append(prefix[:, t] + torch.logcumsumexp(into_row, -1))
    alpha = torch.stack(rows, 1)  # (B, T, U+1)
    b = torch.arange(B, device=logits.device)
    t_last, u_last = logit_lengths.long() - 1, target_lengths.long()
    losses = -(alpha[b, t_last, u_last] + lpb[b, t_last, u_last])
    return reduce_losses(losses, target_lengths, reduction)


class _RNNTLoss(torch.autograd.Function):
    """Per-utterance RNN-T losses `(B,)` with the fused log-softmax gradient (see module doc)."""

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, clamp, fused):
        B, T, U1, V = logits.shape
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        logits = logits.contiguous()
        if fused:
            lse = _log_normaliser(logits, acc)  # (B, T, U+1)
        else:
            lse = logits.new_zeros((B, T, U1), dtype=acc)
        labels = _padded_labels(targets, target_lengths, blank, U1)  # (B, U+1)
        label_index = labels[:, None, :, None].expand(B, T, U1, 1)  # (B, T, U+1, 1)
        lpb = logits[..., blank].to(acc) - lse  # (B, T, U+1)
        lpy = logits.gather(3, label_index).squeeze(3).to(acc) - lse  # (B, T, U+1)
        lpb_skew, lpy_skew = _lattice_on_diagonals(lpb, lpy, logit_lengths, target_lengths)
        alpha = _alpha_on_diagonals(lpb_skew, lpy_skew)  # (B, T+U+1, U+1)
        # The last diagonal holds the terminal node (see _lattice_on_diagonals) at u = U_b.
        log_like = alpha[:, -1].gather(1, target_lengths.long()[:, None]).squeeze(1)  # (B,)
        ctx.save_for_backward(logits, labels, lse, lpb_skew, lpy_skew, alpha, log_like)
        ctx.lengths = (logit_lengths, target_lengths)
        ctx.blank, ctx.clamp, ctx.fused = blank, clamp, fused
        return -log_like

    @staticmethod
    def backward(ctx, grad_losses):
        logits, labels, lse, lpb_skew, lpy_skew, alpha, log_like = ctx.saved_tensors
        logit_lengths, target_lengths = ctx.lengths
        B, T, U1, V = logits.shape
        beta = _beta_on_diagonals(lpb_skew, lpy_skew)  # (B, T+U+2, U+2)
        norm = log_like[:, None, None]  # (B, 1, 1)
        # Transition occupancies on the diagonal layout; beta of the node each transition enters.
        to_blank = (alpha + lpb_skew + beta[:, 1:, :-1] - norm).exp_()  # (B, T+U+1, U+1)
        to_label = (alpha + lpy_skew + beta[:, 1:, 1:] - norm).exp_()  # (B, T+U+1, U+1)
        valid = _valid_nodes(T, U1, logit_lengths, target_lengths)  # (B, T, U+1)
        scale = grad_losses.to(alpha.dtype)[:, None, None]  # (B, 1, 1)
        gb = _diagonal_view(to_blank, T) * valid * scale  # (B, T, U+1)
        gy = _diagonal_view(to_label, T) * valid * scale  # (B, T, U+1)
        del beta, to_blank, to_label  # free the lattice before the full-size allocation

        grad = torch.empty_like(logits)  # (B, T, U+1, V): the only full-size allocation
        if ctx.fused:
            occ = gb + gy  # (B, T, U+1), signed by the incoming gradient
            _scaled_softmax_into(grad, logits, lse - occ.abs().log())
            if (occ < 0).any():
                grad.mul_(occ.sign().unsqueeze(3).to(grad.dtype))
        else:
            grad.zero_()
        index = torch.stack([torch.full_like(labels, ctx.blank), labels], 2)  # (B, U+1, 2)
        index = index[:, None].expand(B, T, U1, 2)  # (B, T, U+1, 2)
        grad.scatter_add_(3, index, -torch.stack([gb, gy], 3).to(grad.dtype))
        if ctx.clamp > 0:
            bound = (ctx.clamp * scale.abs()).to(grad.dtype)[..., None]  # (B, 1, 1, 1)
            torch.clamp(grad, -bound, bound, out=grad)
        return grad, None, None, None, None, None, None


def _check_inputs(logits, targets, logit_lengths, target_lengths, blank, reduction):
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got shape {tuple(logits.shape)}")
    B, T, U1, V = logits.shape
    if targets.shape != (B, U1 - 1):
        raise ValueError(f"targets must be (B, U) = {(B, U1 - 1)}, got {tuple(targets.shape)}")
    if logit_lengths.shape != (B,) or target_lengths.shape != (B,):
        raise ValueError("logit_lengths and target_lengths must both have shape (B,)")
    if targets.is_floating_point() or logit_lengths.is_floating_point():
        raise TypeError("targets and lengths must be integer tensors")
    if not 0 <= blank < V:
        raise ValueError(f"blank must be in [0, {V}), got {blank}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    bad_t = (logit_lengths < 1) | (logit_lengths > T)
    bad_u = (target_lengths < 0) | (target_lengths > U1 - 1)
    if bool((bad_t | bad_u).any()):
        raise ValueError(f"lengths out of range: need 1 <= logit_lengths <= {T} "
                         f"and 0 <= target_lengths <= {U1 - 1}")


def _padded_labels(targets: Tensor, target_lengths: Tensor, blank: int, U1: int) -> Tensor:
    """Labels per lattice column: `(B, U)` targets -> `(B, U + 1)` int64, ``blank`` past ``U_b``."""
    B = targets.shape[0]
    labels = torch.full((B, U1), blank, dtype=torch.long, device=targets.device)
    u = torch.arange(U1 - 1, device=targets.device)
    labels[:, :-1] = torch.where(u < target_lengths[:, None], targets.long(), blank)
    return labels


def _row_chunks(rows: int, V: int, device: torch.device):
    """`(start, stop)` row ranges of the `(B*T*(U+1), V)` view, each at most 1/16 of it.

    On CPU chunks are also capped at ``_CHUNK_ELEMENTS`` so that the passes over one chunk hit
    the cache; elsewhere (CUDA) fewer, larger chunks only save kernel launches.
    """
    budget = rows * V // 16
    if device.type == "cpu":
        budget = min(budget, _CHUNK_ELEMENTS)
    step = max(1, budget // V)
    return ((start, min(start + step, rows)) for start in range(0, rows, step))


def _log_normaliser(logits: Tensor, acc: torch.dtype) -> Tensor:
    """logsumexp over V: `(B, T, U+1, V)` -> `(B, T, U+1)` in ``acc``; chunk-sized temporaries."""
    V = logits.shape[-1]
    rows = logits.reshape(-1, V)  # (B*T*(U+1), V), a view of contiguous logits
    lse = torch.empty(rows.shape[0], dtype=acc, device=logits.device)
    for start, stop in _row_chunks(rows.shape[0], V, logits.device):
        torch.logsumexp(rows[start:stop].to(acc), 1, out=lse[start:stop])  # chunk: (R, V)
    return lse.view(logits.shape[:-1])


def _scaled_softmax_into(out: Tensor, logits: Tensor, shift: Tensor) -> None:
    """``out = exp(logits - shift[..., None])`` in place, chunk by chunk; `(B, T, U+1, V)`."""
    V = logits.shape[-1]
    out_rows, rows = out.view(-1, V), logits.reshape(-1, V)
    shift_rows = shift.reshape(-1, 1)  # (B*T*(U+1), 1)
    for start, stop in _row_chunks(rows.shape[0], V, logits.device):
        if out.dtype == shift.dtype:
            dest = out_rows[start:stop]
            torch.sub(rows[start:stop], shift_rows[start:stop], out=dest).exp_()
        else:  # low-precision logits: exponentiate in the accumulation dtype, then store
            chunk = rows[start:stop].to(shift.dtype)  # (R, V)
            out_rows[start:stop] = (chunk - shift_rows[start:stop]).exp_()


def _diagonal_view(skewed: Tensor, T: int) -> Tensor:
    """`(B, N, U+1)` diagonal layout viewed as `(B, T, U+1)`: ``[b, t, u]`` is ``[b, t+u, u]``."""
    B, N, U1 = skewed.shape
    return skewed.as_strided((B, T, U1), (N * U1, U1, U1 + 1))


def _lattice_on_diagonals(lpb, lpy, logit_lengths, target_lengths):
    """Blank/label log-probs `(B, T, U+1)` -> diagonal layout `(B, T+U+1, U+1)`, row n = t + u.

    Transitions that leave an utterance's lattice are -inf, except that its final blank, from
    ``(T_b - 1, U_b)``, enters a terminal node ``(T_b, U_b)`` that a chain of zero-cost blanks
    carries along column ``U_b`` to the last diagonal. So every utterance's log-likelihood is read
    at the same row, and both recursions need no per-utterance special cases.
    """
    B, T, U1 = lpb.shape
    N = T + U1
    lpb_skew = lpb.new_full((B, N, U1), float("-inf"))
    lpy_skew = lpy.new_full((B, N, U1), float("-inf"))
    _diagonal_view(lpb_skew, T).copy_(lpb)
    _diagonal_view(lpy_skew, T).copy_(lpy)
    n = torch.arange(N, device=lpb.device)[:, None]
    u = torch.arange(U1, device=lpb.device)[None, :]
    t = (n - u)[None]  # (1, N, U+1)
    T_b = logit_lengths.long()[:, None, None]  # (B, 1, 1)
    U_b = target_lengths.long()[:, None, None]
    keep_blank = ((t < T_b - 1) & (u <= U_b)) | ((t == T_b - 1) & (u == U_b))
    chain = (t >= T_b) & (u == U_b)
    lpb_skew = lpb_skew.masked_fill_(~keep_blank, float("-inf")).masked_fill_(chain, 0.0)
    lpy_skew = lpy_skew.masked_fill_((t >= T_b) | (u >= U_b), float("-inf"))
    return lpb_skew, lpy_skew


def _alpha_on_diagonals(lpb_skew: Tensor, lpy_skew: Tensor) -> Tensor:
    """Forward variables on the diagonal layout: `(B, N, U+1)` each -> alpha `(B, N, U+1)`."""
    B, N, U1 = lpb_skew.shape
    # Column 0 is a -inf pad so that "from u - 1" is a plain slice: alpha[b, n, u] sits at u + 1,
    # and likewise lpy_shifted[b, n, u + 1] = lpy_skew[b, n, u].
    alpha = lpb_skew.new_full((B, N, U1 + 1), float("-inf"))
    alpha[:, 0, 1] = 0.0
    lpy_shifted = torch.nn.functional.pad(lpy_skew, (1, 0), value=float("-inf"))  # (B, N, U+2)
    for n in range(1, N):
        prev = alpha[:, n - 1]  # (B, U+2)
        from_blank = prev[:, 1:] + lpb_skew[:, n - 1]  # (t-1, u) -> (t, u)
        from_label = prev[:, :-1] + lpy_shifted[:, n - 1, :-1]  # (t, u-1) -> (t, u)
        torch.logaddexp(from_blank, from_label, out=alpha[:, n, 1:])
    return alpha[:, :, 1:]


def _beta_on_diagonals(lpb_skew: Tensor, lpy_skew: Tensor) -> Tensor:
    """Backward variables: `(B, N, U+1)` each -> beta `(B, N+1, U+2)`.

    ``beta[:, n, u]`` is beta on diagonal n at column u. Row N and column U+1 are -inf pads, so
    the successors of every node are plain slices. On the last diagonal only the end of the
    zero-cost chain (u = U_b, the one finite ``lpb_skew`` there) is alive, with beta = 0.
    """
    B, N, U1 = lpb_skew.shape
    beta = lpb_skew.new_full((B, N + 1, U1 + 1), float("-inf"))
    beta[:, N - 1, :U1].masked_fill_(torch.isfinite(lpb_skew[:, N - 1]), 0.0)
    for n in range(N - 2, -1, -1):
        nxt = beta[:, n + 1]  # (B, U+2)
        via_blank = lpb_skew[:, n] + nxt[:, :-1]  # (t, u) -> (t+1, u)
        via_label = lpy_skew[:, n] + nxt[:, 1:]  # (t, u) -> (t, u+1)
        torch.logaddexp(via_blank, via_label, out=beta[:, n, :-1])
    return beta


def _valid_nodes(T: int, U1: int, logit_lengths: Tensor, target_lengths: Tensor) -> Tensor:
    """`(B, T, U+1)` bool: lattice nodes inside each utterance (``t < T_b`` and ``u <= U_b``)."""
    t = torch.arange(T, device=logit_lengths.device)[None, :, None]
    u = torch.arange(U1, device=logit_lengths.device)[None, None, :]
    return (t < logit_lengths[:, None, None]) & (u <= target_lengths[:, None, None])
