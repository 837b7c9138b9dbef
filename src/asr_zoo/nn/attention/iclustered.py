"""Improved clustered attention, "i-clustered" (thesis §5.5.2, eqs 5.31-5.33).

Legend: B batch, H heads, N sequence length, E head dim, C clusters, G = B·H, k = top keys per
cluster, S = query slots of s rows each (see :func:`topk_attention`).

Queries are clustered as in :mod:`.clustered` and each centroid attends to all valid keys, giving
A_c `(C, N)`. For cluster j, the k keys with the largest centroid attention get exact attention
from each member query i, rescaled to the centroid's mass on them::

    A_il = m_j · exp(q_i·k_l/√E) / Σ_{r ∈ top(j)} exp(q_i·k_r/√E)   for l ∈ top(j),
    A_il = A_c[j, l]                                                  otherwise,
    m_j  = Σ_{l ∈ top(j)} A_c[j, l].

Each row still sums to one; with k >= N it is exact softmax attention. The other keys' share,
Σ_{l ∉ top(j)} A_c[j, l] V_l, is computed once per cluster. The top-k part is a sparse product:
queries are sorted by cluster and cut into slots of s rows (about the mean cluster size, 4 to 32)
that all belong to one cluster,
so it is one batched matmul against that cluster's k keys: O(N·k·E) time and memory.
The whole kernel runs in float32 (float64 for float64 inputs), also under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .clustered import (
    ClusteredAttention, ClusteredAttentionConfig, broadcast_to_members, cluster_means, cluster_queries,
    gather_rows,
)
from .registry import ATTENTION

__all__ = [
    "ImprovedClusteredAttention",
    "ImprovedClusteredAttentionConfig",
    "improved_clustered_attention",
    "topk_attention",
]

_MAX_SLOT = 32  # most queries per slot of the sparse top-k product


def topk_attention(
    q: Tensor, k: Tensor, v: Tensor, assign: Tensor, top_idx: Tensor, key_valid: Tensor, mass: Tensor,
    dropout: float = 0.0,
) -> Tensor:
    """For each query, mass[j] · softmax over the top keys of its cluster j, times their values.

    Args:
        q (Tensor): shape `(G, N, E)`.
        k (Tensor): shape `(G, N, E)`.
        v (Tensor): shape `(G, N, M)`.
        assign (Tensor): int64, shape `(G, N)`, the cluster of each query in ``[0, C]``
            (``C`` = none: the query gets zeros).
        top_idx (Tensor): int64, shape `(G, C, k)`, key indices per cluster.
        key_valid (Tensor): bool, shape `(G, N)`, False = padding key (gets weight 0).
        mass (Tensor): shape `(G, C)`, the attention mass to spread over each cluster's top keys.
        dropout (float): dropout on the top-k weights.

    Returns:
        Tensor: shape `(G, N, M)`.
    """
    G, N, E = q.shape
    C, K = top_idx.shape[1:]
    dev = q.device
    s = min(_MAX_SLOT, 1 << max(2, (-(-N // C) - 1).bit_length()))  # ~ mean cluster size, pow. of 2
    order = torch.argsort(assign, dim=-1, stable=True)  # (G, N): queries sorted by cluster
    sorted_assign = assign.gather(1, order)
    counts = torch.zeros(G, C + 1, dtype=torch.long, device=dev).scatter_add_(
        1, assign, torch.ones_like(assign))  # (G, C+1)
    counts[:, C] = 0  # queries of no cluster get no slot
    first = counts.cumsum(-1) - counts  # (G, C+1): sorted position of each cluster's first query
    rank = torch.arange(N, device=dev) - first.gather(1, sorted_assign)  # (G, N): rank in cluster
    slots = -(-counts // s)  # (G, C+1)
    S = max(1, int(slots.sum(-1).max()))  # slots of the fullest group (one host sync)
    first_slot = slots.cumsum(-1) - slots  # (G, C+1)
    slot = first_slot.gather(1, sorted_assign) + rank // s  # (G, N), for sorted queries
    member = sorted_assign < C  # (G, N): sorted queries that have a cluster
    row = torch.where(member, slot * s + rank % s, S * s)  # (G, N): row in the slot buffer
    # empty rows read query 0 and slots without queries cluster 0: their outputs are never read
    source = torch.zeros(G, S * s + 1, dtype=torch.long, device=dev).scatter_(1, row, order)
    q_rows = gather_rows(q, source[:, :-1]).view(G, S, s, E)
    slot_cluster = torch.zeros(G, S + 1, dtype=torch.long, device=dev).scatter_(
        1, torch.where(member, slot, S), sorted_assign)[:, :-1]  # (G, S)
    keys = gather_rows(top_idx, slot_cluster).view(G, S * K)  # (G, S·K): key index per slot entry
    k_top = gather_rows(k, keys).view(G, S, K, E)
    v_top = gather_rows(v, keys).view(G, S, K, -1)
    ok = key_valid.gather(1, keys).view(G, S, 1, K)

    scores = (q_rows @ k_top.transpose(-1, -2)).mul_(E**-0.5)  # (G, S, s, K)
    weights = scores.masked_fill_(~ok, torch.finfo(scores.dtype).min).softmax(-1)
    weights = weights * mass.gather(1, slot_cluster)[..., None, None]
    weights = F.dropout(weights, dropout) if dropout > 0 else weights
    out_rows = F.pad((weights @ v_top).view(G, S * s, -1), (0, 0, 0, 1))  # (G, S·s + 1, M), last 0
    query_row = torch.empty_like(row).scatter_(1, order, row)  # (G, N): row of each query
    return gather_rows(out_rows, query_row)


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
    G = B * H
    assign = cluster_queries(q, pad_mask, clusters, bits, iterations, generator).view(G, N)
    with torch.autocast(q.device.type, enabled=False):
        dtype = torch.promote_types(v.dtype, torch.float32)
        qf, kf, vf = (t.reshape(G, N, -1).to(dtype) for t in (q, k, v))
        key_pad = (torch.zeros(B, N, dtype=torch.bool, device=q.device) if pad_mask is None
                   else pad_mask)[:, None].expand(B, H, N).reshape(G, N)
        q_c, _ = cluster_means(qf, assign, clusters)  # (G, C, E)
        key_bias = torch.zeros(G, 1, N, device=q.device, dtype=dtype)
        key_bias.masked_fill_(key_pad[:, None], float("-inf"))  # (G, 1, N)
        a_c = torch.baddbmm(key_bias, q_c, kf.transpose(1, 2), alpha=E**-0.5).softmax(-1)  # (G, C, N)
        top_idx = a_c.topk(min(topk, N), dim=-1, sorted=False).indices  # (G, C, k)
        mass = a_c.gather(-1, top_idx).sum(-1)  # (G, C)
        a_c = F.dropout(a_c, dropout) if dropout > 0 else a_c
        # the other keys' share, once per cluster: all keys minus the top ones
        v_keys = gather_rows(vf, top_idx.view(G, -1)).view(*top_idx.shape, -1)  # (G, C, k, M)
        v_c = a_c @ vf - (a_c.gather(-1, top_idx).unsqueeze(-2) @ v_keys).squeeze(-2)  # (G, C, M)
        v_rest = broadcast_to_members(v_c, assign)  # (G, N, M)
        v_top = topk_attention(qf, kf, vf, assign, top_idx, ~key_pad, mass, dropout)
        out = v_rest + v_top
    return out.view(B, H, N, -1).to(v.dtype)


@dataclass
class ImprovedClusteredAttentionConfig(ClusteredAttentionConfig):
    """``conf/attention/iclustered.yaml``."""

    name: str = "iclustered"
    topk: int = 32  # keys per cluster that get exact per-query attention


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
