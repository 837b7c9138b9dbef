"""Centroid attention (thesis eqs 5.26-5.27, split for eq. 5.31): an autograd Function with a
hand-written backward, shared by clustered and i-clustered attention.

Legend: G independent groups (batch x heads), C centroids, N keys, E head dim, M value dim,
K top keys per centroid.

The backward is four matmuls and two passes over the saved weights A `(G, C, N)`, in place where
possible (autograd through the composition would keep several `(G, C, N)` temporaries). It is
checked by gradcheck and against the plain definition in ``tests/test_attention.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rows import gather_rows

__all__ = [
    "CentroidAttention",
    "centroid_attention",
    "centroid_backward",
    "centroid_scores_backward",
    "centroid_forward",
    "drop_mask",
    "grouped_inputs",
    "key_bias",
    "softmax_backward_",
]


def centroid_attention(q_c: Tensor, k: Tensor, v: Tensor, key_pad: Tensor, topk: int,
                       dropout: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Each centroid's softmax attention over the valid keys, split at its ``topk`` largest weights
    (``topk = 0``: plain centroid attention, ``rest`` = A V).

    Args:
        q_c (Tensor): centroids, shape `(G, C, E)`.
        k (Tensor): shape `(G, N, E)`.
        v (Tensor): shape `(G, N, M)`.
        key_pad (Tensor): bool, shape `(G, N)`, True = padding key (weight 0).
        topk (int): K, 0 <= K <= N.
        dropout (float): dropout on the weights of the non-top keys.

    Returns:
        tuple: ``rest`` `(G, C, M)` = Σ_{l ∉ top} A_l v_l, ``mass`` `(G, C)` = Σ_{l ∈ top} A_l and
        ``top_idx`` `(G, C, K)` (int64), with A = softmax(q_c kᵀ/√E) over the valid keys.
    """
    return CentroidAttention.apply(q_c, k, v, key_bias(key_pad, q_c.dtype), topk, dropout)


class CentroidAttention(torch.autograd.Function):
    """Centroid attention split at each centroid's top keys; see :func:`centroid_attention`.

    Saves A `(G, C, N)`; the backward is four matmuls and two passes over A.
    """

    @staticmethod
    def forward(ctx, q_c, k, v, key_bias, K, dropout):
        outputs, saved = centroid_forward(q_c, k, v, key_bias, K, dropout)
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(outputs[2])
        return outputs

    @staticmethod
    def backward(ctx, d_v_c, d_mass, _):
        return (*centroid_backward(ctx.saved_tensors, d_v_c, d_mass), None, None, None)


def centroid_forward(q_c: Tensor, k: Tensor, v: Tensor, key_bias: Tensor, K: int, dropout: float
                      ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple]:
    """The forward of :func:`centroid_attention`, for Functions that fuse it with more.

    Args:
        q_c (Tensor): centroids, shape `(G, C, E)`.
        k (Tensor): shape `(G, N, E)`.
        v (Tensor): shape `(G, N, M)`.
        key_bias (Tensor): shape `(G, 1, N)`: 0, or -inf at padding keys (:func:`key_bias`).
        K (int): top keys per centroid, 0 <= K <= N.
        dropout (float): dropout on the weights of the non-top keys.

    Returns:
        tuple: the outputs ``(rest, mass, top_idx)`` of :func:`centroid_attention` and the tensors
        :func:`centroid_backward` needs (A `(G, C, N)` among them).
    """
    E = q_c.shape[-1]
    a = torch.baddbmm(key_bias, q_c, k.transpose(1, 2), alpha=E**-0.5)  # (G, C, N) scores
    torch.softmax(a, -1, out=a)  # in place: A
    top_idx = a.topk(K, dim=-1, sorted=False).indices  # (G, C, K)
    mass = a.gather(-1, top_idx).sum(-1)  # (G, C)
    drop = drop_mask(a, dropout)
    a_drop = a if drop is None else a * drop
    v_c = torch.bmm(a_drop, v)  # (G, C, M)
    if K:  # less the top keys' share
        v_top = gather_rows(v, top_idx.flatten(1)).view(*top_idx.shape, v.shape[-1])
        v_c -= (a_drop.gather(-1, top_idx).unsqueeze(-2) @ v_top).squeeze(-2)
    return (v_c, mass, top_idx), (q_c, k, v, a, top_idx, drop)


def centroid_backward(saved: tuple, d_v_c: Tensor, d_mass: Tensor, d_k: Tensor | None = None,
                       d_v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`centroid_forward`.

    Args:
        saved (tuple): the second output of :func:`centroid_forward`; its A is overwritten.
        d_v_c (Tensor): gradient of ``rest``, shape `(G, C, M)`.
        d_mass (Tensor): gradient of ``mass``, shape `(G, C)`.
        d_k, d_v (Tensor or None): shapes `(G, N, E)`, `(G, N, M)`: gradients to add into in
            place (e.g. from another part of a fused kernel); None = fresh tensors.

    Returns:
        tuple: gradients of q_c `(G, C, E)`, k and v.
    """
    q_c, k, v, a, top_idx, drop = saved
    d_s, d_q_c = centroid_scores_backward(saved, d_v_c, d_mass)
    d_k = torch.bmm(d_s.transpose(1, 2), q_c) if d_k is None else d_k.baddbmm_(d_s.transpose(1, 2), q_c)
    # the weights that made v_c (top keys left out), in d_s's buffer, which is done with
    a_rest = a
    if drop is not None or top_idx.shape[-1]:
        a_rest = d_s.copy_(a) if drop is None else torch.mul(a, drop, out=d_s)
        a_rest.scatter_(-1, top_idx, 0.0)
    d_v = torch.bmm(a_rest.transpose(1, 2), d_v_c) if d_v is None else \
        d_v.baddbmm_(a_rest.transpose(1, 2), d_v_c)  # (G, N, M)
    return d_q_c, d_k, d_v


def centroid_scores_backward(saved: tuple, d_v_c: Tensor, d_mass: Tensor) -> tuple[Tensor, Tensor]:
    """The part of :func:`centroid_backward` shared with i-clustered's: the gradient of the
    centroid scores d_s `(G, C, N)` (pre-softmax, scaled; A's buffer) and of q_c `(G, C, E)`.
    Top keys enter only the mass, not v_c."""
    q_c, k, v, a, top_idx, drop = saved
    d_a = torch.bmm(d_v_c, v.transpose(1, 2))  # (G, C, N): through v_c
    if drop is not None:
        d_a.mul_(drop)
    d_a.scatter_(-1, top_idx, d_mass.unsqueeze(-1).expand_as(top_idx))
    d_s = softmax_backward_(d_a, a, q_c.shape[-1] ** -0.5)
    return d_s, torch.bmm(d_s, k)


def softmax_backward_(d_p: Tensor, p: Tensor, scale: Tensor | float) -> Tensor:
    """Softmax backward over the last dim, in place in ``d_p`` and without temporaries of its
    size: ``scale · p ⊙ (d_p - Σ d_p ⊙ p)``.

    Args:
        d_p (Tensor): gradient of the softmax output ``p``, any shape `(..., L)`; overwritten.
        p (Tensor): the softmax output, same shape.
        scale (Tensor or float): multiplies the result (broadcasts, e.g. one per row: the score
            scale 1/√E times a row weight).

    Returns:
        Tensor: ``d_p``, now the gradient of the softmax input (the scores).
    """
    t = d_p.mul_(p)
    return t.addcmul_(p, t.sum(-1, keepdim=True), value=-1).mul_(scale)


def key_bias(key_pad: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive score bias from a key padding mask.

    Args:
        key_pad (Tensor): bool, shape `(G, N)`, True = padding.
        dtype (torch.dtype): of the result.

    Returns:
        Tensor: shape `(G, 1, N)`: 0, or -inf at padding.
    """
    return torch.zeros_like(key_pad, dtype=dtype).masked_fill_(key_pad, float("-inf")).unsqueeze(1)


def drop_mask(like: Tensor, p: float) -> Tensor | None:
    """Inverted-dropout multipliers (0 or 1/(1-p)) shaped and typed like ``like`` (global RNG),
    or None for p = 0."""
    return None if p <= 0 else torch.rand_like(like).ge_(p).to(like.dtype).div_(1 - p)


def grouped_inputs(q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The working form of the clustered kernels.

    Args:
        q, k, v (Tensor): shape `(B, H, N, ·)`.
        pad_mask (Tensor or None): bool, shape `(B, N)`, True = padding.

    Returns:
        tuple: q, k, v as `(G, N, ·)` with G = B·H, in float32 (float64 stays), and the key
        padding `(G, N)` (True = padding).
    """
    B, H, N, _ = q.shape
    dtype = torch.promote_types(v.dtype, torch.float32)
    qf, kf, vf = (t.reshape(B * H, N, -1).to(dtype) for t in (q, k, v))
    pad = torch.zeros(B, N, dtype=torch.bool, device=q.device) if pad_mask is None else pad_mask
    return qf, kf, vf, pad[:, None].expand(B, H, N).reshape(B * H, N)
