"""Clustered attention (Vyas et al. 2020; thesis §5.5.1): one softmax row per cluster of queries.

Legend: B batch, H heads, N sequence length, E head dim, C clusters, G = B·H independent groups,
W = code width (hash bits rounded up to a multiple of 16).

1. Hash every query with ``bits`` random hyperplanes with bias: bit b is +1 if q·a_b > a_b[E]
   else -1 (Hamming distance then tracks Euclidean distance).
2. K-means in Hamming space, per (utterance, head): centroids start at ``C`` evenly spaced valid
   queries; each Lloyd step assigns every query to the centroid with the fewest differing bits
   (ties: lowest index) and sets each centroid bit to its members' majority (ties keep the old
   bit); an empty cluster restarts at the code of a query far from its centroid (the farthest
   queries in order, ties: lowest position). ``iterations`` assignments in all; the loop stops
   early once assignments repeat without a restart, which is exact (a fixed point).
3. Real-valued centroid = mean of the member queries; softmax(Q_c Kᵀ/√E) V over the valid keys;
   every query takes its cluster's output.

All of it is batched tensor code. With ±1 codes the number of equal bits is a matmul; it runs on
bfloat16 codes, which is exact (every score is a power of two times an integer below 256). Padding
queries join no cluster, and an utterance with L <= C valid frames gets one cluster per frame, which
is exact softmax attention. Hashing and clustering run in float32 under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import AttentionConfig, SelfAttention
from .registry import ATTENTION
from .softmax import softmax_attention

__all__ = [
    "ClusteredAttention",
    "ClusteredAttentionConfig",
    "broadcast_to_members",
    "cluster_means",
    "cluster_queries",
    "clustered_attention",
    "gather_rows",
    "hash_queries",
]

_CODE_DTYPE = torch.bfloat16  # ±1 codes: exact, and fast matmuls on CPUs and GPUs


def hash_queries(q: Tensor, planes: Tensor) -> Tensor:
    """Signs of random projections with bias, as ±1 codes padded with constant +1 columns.

    Args:
        q (Tensor): shape `(G, N, E)`.
        planes (Tensor): shape `(bits, E + 1)`; column E is the threshold of each hyperplane.

    Returns:
        Tensor: float32, shape `(G, N, W)`, W = bits rounded up to a multiple of 16 (>= bits + 1):
        ``[..., b] = +1 if q·planes[b, :E] > planes[b, E] else -1`` for b < bits, +1 beyond.
    """
    bits, E = planes.shape[0], planes.shape[1] - 1
    W = -(-(bits + 1) // 16) * 16
    weight = q.new_zeros(E, W, dtype=torch.float32)
    weight[:, :bits] = planes[:, :E].T
    threshold = q.new_full((W,), -1.0, dtype=torch.float32)  # pad columns: 0 > -1, they read +1
    threshold[:bits] = planes[:, E]
    above = torch.addmm(-threshold, q.reshape(-1, E).float(), weight)  # (G·N, W): q·a - a[E]
    codes = above.sign_().sub_(0.5).sign_()  # +1 where q·a > a[E], else -1 (ties too)
    return codes.view(*q.shape[:-1], W)


def cluster_queries(
    q: Tensor, pad_mask: Tensor | None, clusters: int = 100, bits: int = 63, iterations: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """LSH + Hamming K-means of each (utterance, head)'s valid queries.

    Args:
        q (Tensor): shape `(B, H, N, E)`; not differentiated through.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        clusters (int): C, centroids per (utterance, head); an utterance with L <= C valid frames
            gets one cluster per valid frame (cluster = rank of the frame among valid frames).
        bits (int): hash bits, 1..63.
        iterations (int): Lloyd assignments (>= 1).
        generator (torch.Generator or None): for the hyperplanes; None = global RNG.

    Returns:
        Tensor: int64, shape `(B, H, N)`, the cluster of each query in ``[0, C)``; padding
        queries get ``C`` (no cluster).
    """
    if not 1 <= bits <= 63:
        raise ValueError(f"bits must be in [1, 63] (codes must stay exact in bfloat16), got {bits}")
    if clusters < 1 or iterations < 1:
        raise ValueError(f"need clusters >= 1 and iterations >= 1, got {clusters}, {iterations}")
    B, H, N, E = q.shape
    G, C, dev = B * H, clusters, q.device
    with torch.no_grad(), torch.autocast(dev.type, enabled=False):
        planes = torch.randn(bits, E + 1, device=dev, generator=generator)
        codes = hash_queries(q.reshape(G, N, E).float(), planes)  # (G, N, W) float32, ±1
        valid = torch.ones(B, N, dtype=torch.bool, device=dev) if pad_mask is None else ~pad_mask
        valid = valid[:, None].expand(B, H, N).reshape(G, N)
        lengths = valid.sum(-1)  # (G,)
        rank = valid.cumsum(-1) - 1  # (G, N): index of a valid frame among valid frames

        # initial centroids: the codes of C evenly spaced valid frames
        c_eff = lengths.clamp(max=C, min=1)  # (G,)
        slot = torch.arange(C, device=dev)
        active = slot < c_eff[:, None]  # (G, C)
        valid_first = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)  # (G, N)
        init = valid_first.gather(1, (slot * lengths[:, None] // c_eff[:, None]).clamp(max=N - 1))
        cent = gather_rows(codes, init)  # (G, C, W)
        # columns >= bits: 0 for active centroids (no effect); inactive ones get a large negative
        # score through column ``bits`` (codes read +1 there), so nothing is ever assigned to them
        cent[..., bits:] = 0.0
        cent[..., bits] = torch.where(active, 0.0, -128.0)

        nearest = _NearestCentroid(codes, C)
        # member rows: the bits plus a count column; padding queries add nothing
        member = torch.cat([codes[..., :bits], codes[..., :1].abs()], -1) * valid[..., None]
        member = member.reshape(G * N, bits + 1)
        offset = torch.arange(G, device=dev)[:, None] * C
        position = torch.arange(N, device=dev)
        assign, reseeded = None, False
        for it in range(iterations):
            new, best = nearest(cent)
            if not reseeded and assign is not None and torch.equal(new, assign):
                break  # fixed point: further steps change nothing
            assign = new
            if it == iterations - 1:
                break
            votes = torch.zeros(G * C, bits + 1, device=dev)
            votes.index_add_(0, (assign + offset).view(-1), member)
            votes, counts = votes.view(G, C, bits + 1).split([bits, 1], -1)  # Σ member bits, members
            cent[..., :bits] = torch.where(votes == 0, cent[..., :bits], votes.sign())
            empty = active & (counts[..., 0] == 0)  # (G, C)
            reseeded = bool(empty.any())
            if reseeded:  # empty clusters restart at the farthest valid queries (ties: lowest index)
                far = (bits - best).long() * N + (N - 1 - position)  # (G, N), larger = farther
                far_idx = far.masked_fill(~valid, -1).topk(min(C, N), -1).indices  # (G, min(C, N))
                nth = (empty.cumsum(-1) - 1).clamp(0, far_idx.shape[1] - 1)  # rank among empties
                seed = gather_rows(codes[..., :bits], far_idx.gather(1, nth))  # (G, C, bits)
                cent[..., :bits] = torch.where(empty[..., None], seed, cent[..., :bits])

        short = (lengths <= C)[:, None]  # one cluster per valid frame: exact
        assign = torch.where(short, rank.clamp(min=0), assign)
        assign = assign.masked_fill(~valid, C)
    return assign.view(B, H, N)


class _NearestCentroid:
    """Most similar centroid of every code (ties: lowest index), in chunks of queries.

    The argmax is one max over exact float keys ``P·score + (P-1-c)``. Centroid codes are scaled
    by P (a power of two > C), so the bfloat16 matmul output ``P·score`` is still exact. Chunks
    keep the `(G, n, C)` scores cache-sized, and their buffers are reused by every Lloyd step.
    """

    def __init__(self, codes: Tensor, clusters: int, chunk_elements: int = 1 << 18):
        G, N, W = codes.shape
        self.P = 1 << (clusters - 1).bit_length()
        self.rows = max(1, min(N, chunk_elements // (G * clusters)))
        n_pad = -N % self.rows
        self.N = N
        self.codes = F.pad(codes, (0, 0, 0, n_pad)).to(_CODE_DTYPE)  # (G, N + n_pad, W)
        self.tie_break = (self.P - 1 - torch.arange(clusters, device=codes.device)).float()  # (C,)
        self.score = codes.new_empty(G, self.rows, clusters, dtype=_CODE_DTYPE)
        self.key = codes.new_empty(G, self.rows, clusters)
        self.best_key = codes.new_empty(G, N + n_pad)

    def __call__(self, cent: Tensor) -> tuple[Tensor, Tensor]:
        """cent `(G, C, W)` ±1 (plus bias columns) -> assignment `(G, N)` int64 and the best
        score `(G, N)` (float32, = bits - 2·Hamming distance for active centroids)."""
        cent_lp = (cent * self.P).to(_CODE_DTYPE).transpose(1, 2)  # (G, W, C)
        for i in range(0, self.codes.shape[1], self.rows):
            torch.bmm(self.codes[:, i:i + self.rows], cent_lp, out=self.score)
            torch.add(self.score, self.tie_break, out=self.key)
            torch.amax(self.key, -1, out=self.best_key[:, i:i + self.rows])
        key = self.best_key[:, :self.N]
        best = torch.floor(key / self.P)  # (G, N)
        return ((self.P - 1) - (key - best * self.P)).long(), best


def cluster_means(x: Tensor, assign: Tensor, clusters: int) -> tuple[Tensor, Tensor]:
    """Mean of the rows of each cluster (differentiable in ``x``).

    Args:
        x (Tensor): shape `(G, N, E)`.
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, clusters]`` (``clusters`` = none).
        clusters (int): C.

    Returns:
        tuple: means `(G, C, E)` (zero for empty clusters) and counts `(G, C)` (int64).
    """
    G, N, E = x.shape
    flat = (assign + torch.arange(G, device=x.device)[:, None] * (clusters + 1)).view(-1)  # (G·N,)
    sums = x.new_zeros(G * (clusters + 1), E).index_add(0, flat, x.reshape(G * N, E))
    counts = torch.bincount(flat, minlength=G * (clusters + 1)).view(G, clusters + 1)[:, :clusters]
    means = sums.view(G, clusters + 1, E)[:, :clusters] / counts.clamp(min=1)[..., None].to(x.dtype)
    return means, counts


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``out[g, i] = x[g, index[g, i]]`` as one row copy (much faster than ``gather`` on CPU).

    Args:
        x (Tensor): shape `(G, N, M)`.
        index (Tensor): int64, shape `(G, R)`, values in ``[0, N)``.

    Returns:
        Tensor: shape `(G, R, M)`.
    """
    G, N, M = x.shape
    flat = (index + torch.arange(G, device=x.device)[:, None] * N).view(-1)  # (G·R,)
    return x.reshape(G * N, M).index_select(0, flat).view(G, -1, M)


def broadcast_to_members(y: Tensor, assign: Tensor) -> Tensor:
    """Give every query its cluster's row; queries with ``assign == C`` get zeros.

    Args:
        y (Tensor): shape `(G, C, M)`.
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, C]``.

    Returns:
        Tensor: shape `(G, N, M)`.
    """
    return gather_rows(F.pad(y, (0, 0, 0, 1)), assign)  # row C of the padded y is 0


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
        qf = q.reshape(B * H, N, E).to(torch.promote_types(q.dtype, torch.float32))
        q_c, _ = cluster_means(qf, assign, clusters)  # (G, C, E)
    q_c = q_c.to(q.dtype).view(B, H, clusters, E)
    mask = None if pad_mask is None else ~pad_mask[:, None, None, :]  # (B, 1, 1, N), True = attend
    v_c = F.scaled_dot_product_attention(q_c, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, C, M)
    out = broadcast_to_members(v_c.reshape(B * H, clusters, -1), assign)  # (G, N, M)
    return out.view(B, H, N, -1)


@dataclass
class ClusteredAttentionConfig(AttentionConfig):
    """``conf/attention/clustered.yaml``."""

    name: str = "clustered"
    clusters: int = 100  # C: centroids per utterance and head (the thesis sweeps 100/200/300)
    bits: int = 63  # hash bits (random hyperplanes with bias), at most 63
    iterations: int = 10  # Lloyd assignments of the Hamming K-means
    seed: int = 0  # hyperplane seed in eval mode (training draws fresh hyperplanes every call)
    short_exact: bool = True  # a batch whose longest utterance has <= clusters frames takes exact
    # softmax (SDPA): what clustering gives it anyway (one cluster per frame), without the K-means


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
