"""Improved clustered attention, "i-clustered" (thesis §5.5.2, eqs 5.31-5.33).

Legend: B batch, H heads, N sequence length, E head dim, M value dim, C clusters, G = B·H,
K = top keys per cluster, S = query slots of s rows each (see :func:`slot_plan`).

Queries are clustered as in :mod:`.clustered` and each centroid attends to all valid keys, giving
A_c `(C, N)`. For cluster j, the K keys with the largest centroid attention get exact attention
from each member query i, rescaled to the centroid's mass on them::

    A_il = m_j · exp(q_i·k_l/√E) / Σ_{r ∈ top(j)} exp(q_i·k_r/√E)   for l ∈ top(j),
    A_il = A_c[j, l]                                                  otherwise,
    m_j  = Σ_{l ∈ top(j)} A_c[j, l].

Each row still sums to one; with K >= N it is exact softmax attention. The other keys' share,
Σ_{l ∉ top(j)} A_c[j, l] V_l, is computed once per cluster. The top-K part is a sparse product
over query slots and both parts are autograd Functions with hand-written backward passes (see
:mod:`.iclustered_kernels`); :func:`improved_clustered_attention_reference` is the same
computation written straight from the equations with autograd (the tests compare both). The whole kernel runs in float32 (float64
for float64 inputs), also under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...schemas import ImprovedClusteredAttentionConfig
from .clustered import ClusteredAttention
from .clustered_kernels import grouped_inputs
from .hashing import cluster_queries
from .iclustered_kernels import ImprovedClusteredFunction, slot_plan, topk_attention
from .registry import ATTENTION

__all__ = [
    "ImprovedClusteredAttention",
    "improved_clustered_attention",
    "improved_clustered_attention_reference",
    "topk_attention",
]


def improved_clustered_attention(
    q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None, clusters: int = 100,
    bits: int = 63, iterations: int = 10, topk: int = 32, generator: torch.Generator | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """i-clustered attention: centroid attention, with exact per-query attention on each cluster's
    ``topk`` keys rescaled to the centroid's mass on them.

    Args:
        q, k, v (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        clusters, bits, iterations, generator: see :func:`.clustered.cluster_queries`.
        topk (int): keys per cluster with exact attention (``min(topk, N)`` are used).
        dropout (float): dropout on both parts of the attention weights.

    Returns:
        Tensor: shape `(B, H, N, E)`, dtype of ``v``; rows at padding positions are zero.
    """
    B, H, N, E = q.shape
    assign = cluster_queries(q, pad_mask, clusters, bits, iterations, generator).view(B * H, N)
    with torch.autocast(q.device.type, enabled=False):
        qf, kf, vf, key_pad = grouped_inputs(q, k, v, pad_mask)
        with torch.no_grad():
            plan = slot_plan(assign, clusters)
        out = ImprovedClusteredFunction.apply(qf, kf, vf, assign, key_pad, clusters, min(topk, N), plan,
                                       dropout)
    return out.view(B, H, N, -1).to(v.dtype)


def improved_clustered_attention_reference(q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None,
                                           assign: Tensor, clusters: int, topk: int) -> Tensor:
    """i-clustered attention for given assignments, straight from eqs 5.25-5.26 and 5.31-5.33
    (plain autograd, dense `(N, N)` weights; for tests).

    Args:
        q, k, v (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        assign (Tensor): int64, shape `(B, H, N)`, values in ``[0, C]`` (C = no cluster).
        clusters (int): C.
        topk (int): top keys per cluster (``min(topk, N)``).

    Returns:
        Tensor: shape `(B, H, N, E)`; rows of queries in no cluster are zero.
    """
    E, N, C = q.shape[-1], q.shape[-2], clusters
    S = torch.nn.functional.one_hot(assign, C + 1)[..., :C].to(q.dtype)  # (B, H, N, C)
    q_c = S.transpose(-1, -2) @ q / S.sum(-2).clamp(min=1).unsqueeze(-1)  # eq. 5.25
    key_pad = torch.zeros(q.shape[0], N, dtype=torch.bool) if pad_mask is None else pad_mask
    key_pad = key_pad[:, None, None, :]
    a_c = torch.softmax((q_c @ k.transpose(-1, -2) / E**0.5).masked_fill(key_pad, float("-inf")), -1)
    top = torch.zeros_like(a_c, dtype=torch.bool).scatter_(  # T: (B, H, C, N)
        -1, a_c.topk(min(topk, N), -1).indices, True)
    mass = (a_c * top).sum(-1, keepdim=True)  # eq. 5.31: m_j, (B, H, C, 1)
    T_i, a_i, m_i = S @ top.to(q.dtype), S @ a_c, S @ mass  # each query's cluster's rows
    scores = (q @ k.transpose(-1, -2) / E**0.5).masked_fill(key_pad | (T_i == 0), float("-inf"))
    a_t = m_i * torch.softmax(scores, -1).nan_to_num(0.0)  # eq. 5.32, top keys (0 where no cluster)
    return torch.where(T_i > 0, a_t, a_i) @ v  # eq. 5.32 (other keys: A_c) and eq. 5.33


@ATTENTION.register("iclustered", config=ImprovedClusteredAttentionConfig)
class ImprovedClusteredAttention(ClusteredAttention):
    """i-clustered attention (non-causal). Eval mode uses seeded hyperplanes (see the parent).

    >>> att = ImprovedClusteredAttention(d_model=8, num_heads=2, clusters=4, topk=3).eval()
    >>> att(torch.randn(2, 9, 8), torch.zeros(2, 9, dtype=torch.bool)).shape
    torch.Size([2, 9, 8])
    """

    name = "iclustered"

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, causal: bool = False,
                 clusters: int = 100, bits: int = 63, iterations: int = 10, seed: int = 0,
                 short_exact: bool = True, topk: int = 32):
        super().__init__(d_model, num_heads, dropout, causal, clusters, bits, iterations, seed, short_exact)
        self.topk = topk

    def clustered_kernel(self, q, k, v, pad_mask, p):
        return improved_clustered_attention(q, k, v, pad_mask, self.clusters, self.bits,
                                            self.iterations, self.topk, self.generator(q.device), p)
