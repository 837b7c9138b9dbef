"""Clustered attention (Vyas et al. 2020; thesis §5.5.1): one softmax row per cluster of queries.

Legend: B batch, H heads, N sequence length, E head dim, C clusters, G = B·H independent groups.

1. Cluster the queries of each (utterance, head): LSH codes and K-means in Hamming space
   (:func:`.hashing.cluster_queries`).
2. Real-valued centroid = mean of the member queries (:func:`.rows.cluster_means`, eq. 5.25).
3. softmax(Q_c Kᵀ/√E) V over the valid keys (:func:`.clustered_kernels.centroid_attention`,
   eqs 5.26-5.27), and every query takes its cluster's output
   (:func:`.rows.broadcast_to_members`, eq. 5.28).

Padding queries join no cluster, and an utterance with L <= C valid frames gets one cluster per
frame, which is exact softmax attention. The kernel runs in float32 (float64 for float64
inputs), also under autocast. :func:`clustered_attention_reference` is the same computation
written straight from the equations with autograd (the tests compare both).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...schemas import ClusteredAttentionConfig
from .base import SelfAttention
from .clustered_kernels import centroid_attention, grouped_inputs
from .hashing import cluster_queries
from .registry import ATTENTION
from .rows import broadcast_to_members, cluster_means
from .softmax import softmax_attention

__all__ = ["ClusteredAttention", "cluster_queries", "clustered_attention", "clustered_attention_reference"]


def clustered_attention(
    q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None, clusters: int = 100,
    bits: int = 63, iterations: int = 10, generator: torch.Generator | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """Clustered attention: softmax(Q_c Kᵀ/√E) V per cluster centroid, broadcast to the members.

    Args:
        q, k, v (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        clusters, bits, iterations, generator: see :func:`cluster_queries`.
        dropout (float): attention dropout probability.

    Returns:
        Tensor: shape `(B, H, N, E)`; rows at padding positions are zero.
    """
    B, H, N, E = q.shape
    assign = cluster_queries(q, pad_mask, clusters, bits, iterations, generator).view(B * H, N)
    with torch.autocast(q.device.type, enabled=False):
        qf, kf, vf, key_pad = grouped_inputs(q, k, v, pad_mask)
        q_c, _ = cluster_means(qf, assign, clusters)  # (G, C, E)
        v_c, _, _ = centroid_attention(q_c, kf, vf, key_pad, 0, dropout)  # (G, C, M)
        out = broadcast_to_members(v_c, assign)  # (G, N, M)
    return out.view(B, H, N, -1).to(v.dtype)


def clustered_attention_reference(q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None,
                                  assign: Tensor, clusters: int) -> Tensor:
    """Clustered attention for given assignments, straight from eqs 5.25-5.28 (plain autograd,
    dense `(C, N)` matrices; for tests).

    Args:
        q, k, v (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        assign (Tensor): int64, shape `(B, H, N)`, values in ``[0, C]`` (C = no cluster), e.g.
            from :func:`cluster_queries`.
        clusters (int): C.

    Returns:
        Tensor: shape `(B, H, N, E)`; rows of queries in no cluster are zero.
    """
    E = q.shape[-1]
    S = torch.nn.functional.one_hot(assign, clusters + 1)[..., :clusters].to(q.dtype)  # (B, H, N, C)
    q_c = S.transpose(-1, -2) @ q / S.sum(-2).clamp(min=1).unsqueeze(-1)  # eq. 5.25: (B, H, C, E)
    scores = q_c @ k.transpose(-1, -2) / E**0.5  # (B, H, C, N)
    if pad_mask is not None:
        scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
    v_c = torch.softmax(scores, -1) @ v  # eqs 5.26-5.27: (B, H, C, M)
    return S @ v_c  # eq. 5.28


@ATTENTION.register("clustered", config=ClusteredAttentionConfig)
class ClusteredAttention(SelfAttention):
    """Clustered attention (non-causal: a cluster mixes queries from all time steps).

    In training each call draws fresh hyperplanes; in eval mode they come from a generator seeded
    with ``seed``, so evaluation repeats exactly. With ``short_exact`` a batch in which no
    utterance has more valid frames than ``clusters`` goes straight to exact softmax attention:
    clustering would give each of its frames a cluster of its own, i.e. the same result, after
    hashing and K-means.

    >>> att = ClusteredAttention(d_model=8, num_heads=2, clusters=4).eval()
    >>> att(torch.randn(2, 9, 8), torch.zeros(2, 9, dtype=torch.bool)).shape
    torch.Size([2, 9, 8])
    """

    name = "clustered"
    supports_causal = False

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, causal: bool = False,
                 clusters: int = 100, bits: int = 63, iterations: int = 10, seed: int = 0,
                 short_exact: bool = True):
        super().__init__(d_model, num_heads, dropout, causal)
        self.clusters, self.bits, self.iterations, self.seed = clusters, bits, iterations, seed
        self.short_exact = short_exact

    def generator(self, device: torch.device) -> torch.Generator | None:
        """None (fresh hyperplanes) in training, a generator seeded with ``seed`` in eval."""
        return None if self.training else torch.Generator(device=device).manual_seed(self.seed)

    def is_short(self, pad_mask: Tensor | None, N: int) -> bool:
        """True if ``short_exact`` is on and no utterance has more valid frames than clusters
        (a host sync when N > clusters and there is padding; clustering syncs more anyway)."""
        if not self.short_exact:
            return False
        longest = N if pad_mask is None or N <= self.clusters else int((~pad_mask).sum(-1).max())
        return longest <= self.clusters

    def attend(self, q, k, v, pad_mask):
        p = self.dropout if self.training else 0.0
        if self.is_short(pad_mask, q.shape[-2]):
            return softmax_attention(q, k, v, pad_mask, dropout=p)
        return self.clustered_kernel(q, k, v, pad_mask, p)

    def clustered_kernel(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None, p: float) -> Tensor:
        """The clustering kernel (subclasses swap it); `(B, H, N, E)` in and out."""
        return clustered_attention(q, k, v, pad_mask, self.clusters, self.bits, self.iterations,
                                   self.generator(q.device), p)
