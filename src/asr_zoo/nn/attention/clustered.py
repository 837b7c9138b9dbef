"""Clustered attention (Vyas et al. 2020; thesis §5.5.1): one softmax row per cluster of queries.

Legend: B batch, H heads, N sequence length, E head dim, C clusters, G = B·H independent groups.

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

All of it is batched tensor code. With ±1 codes the number of equal bits is a matmul; the
assignment is one exact int8 matmul (tie-break folded into the keys) and one max per Lloyd step,
and each step recomputes only what changed: keys of changed centroids, votes of moved queries.
Padding queries join no cluster, and an utterance with L <= C valid frames gets one cluster per
frame, which is exact softmax attention (no K-means is run for it). The centroid attention is an
autograd Function with a hand-written backward (:func:`centroid_attention`, shared with
i-clustered). The whole kernel runs in float32 (float64 for float64 inputs), also under autocast.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from ...hardware import cpu_fast_int8_mm, cpu_int8_mm_runs
from ...schemas import ClusteredAttentionConfig
from .base import SelfAttention
from .registry import ATTENTION
from .softmax import softmax_attention

__all__ = [
    "ClusteredAttention",
    "broadcast_to_members",
    "centroid_attention",
    "cluster_means",
    "cluster_queries",
    "clustered_attention",
    "drop_mask",
    "gather_rows",
    "grouped_inputs",
    "hash_queries",
    "index_add_rows",
    "key_bias",
]


def hash_queries(q: Tensor, planes: Tensor, width: int | None = None) -> Tensor:
    """Signs of random projections with bias, as ±1 codes, padded with constant +1 columns.

    Args:
        q (Tensor): shape `(G, N, E)`.
        planes (Tensor): shape `(bits, E + 1)`; column E is the threshold of each hyperplane.
        width (int or None): W >= bits, the number of columns; None = bits.

    Returns:
        Tensor: float32, shape `(G, N, W)`: ``+1 if q·planes[b, :E] > planes[b, E] else -1``
        for b < bits, +1 in the columns beyond.
    """
    bits, E = planes.shape[0], planes.shape[1] - 1
    W = bits if width is None else width
    weight = planes.new_zeros(E, W)
    weight[:, :bits] = planes[:, :E].T
    threshold = planes.new_full((W,), -1.0)  # pad columns: 0 > -1, they read +1
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
        raise ValueError(f"bits must be in [1, 63], got {bits}")
    if clusters < 1 or iterations < 1:
        raise ValueError(f"need clusters >= 1 and iterations >= 1, got {clusters}, {iterations}")
    B, H, N, E = q.shape
    G, C, dev = B * H, clusters, q.device
    with torch.no_grad(), torch.autocast(dev.type, enabled=False):
        planes = torch.randn(bits, E + 1, device=dev, generator=generator)
        valid = torch.ones(B, N, dtype=torch.bool, device=dev) if pad_mask is None else ~pad_mask
        valid = valid[:, None].expand(B, H, N).reshape(G, N)
        lengths = valid.sum(-1)  # (G,)
        rank = valid.cumsum(-1) - 1  # (G, N): index of a valid frame among valid frames
        short = lengths <= C  # (G,): one cluster per valid frame, exact; no K-means needed
        assign = rank.clamp(min=0)
        if not bool(short.all()):
            # code columns: the bits, one +1 column (member counts, key tie-break), more +1 columns
            # for the tie-break if C > 128, up to a multiple of 16; padding rows all zero
            width = -(-(bits + _tie_columns(C)) // 16) * 16
            codes = hash_queries(q.reshape(G, N, E), planes, width)
            if pad_mask is not None:
                codes.masked_fill_(~valid[..., None], 0.0)
            kmeans = _lloyd(codes, bits, valid, lengths, C, iterations)
            assign = torch.where(short[:, None], assign, kmeans)
        assign = assign.masked_fill(~valid, C)
    return assign.view(B, H, N)


def _lloyd(codes: Tensor, bits: int, valid: Tensor, lengths: Tensor, C: int, iterations: int
           ) -> Tensor:
    """Hamming K-means -> assignment `(G, N)` int64, meaningful for the groups with more than C
    valid frames (``lengths`` `(G,)`), in which all C centroids are active.

    ``codes`` `(G, N, W)`: ±1 bits in the first ``bits`` columns, +1 beyond, padding rows zero
    (so that the sum of a cluster's rows is its bit votes followed by its member count). Each step
    updates what changed since the previous one: the votes only for the queries that moved, the
    similarity keys only for the centroids that changed.
    """
    G, N, W = codes.shape
    dev = codes.device
    # initial centroids: the codes of C evenly spaced valid frames
    slot = torch.arange(C, device=dev)
    valid_first = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)  # (G, N)
    init = valid_first.gather(1, (slot * lengths[:, None] // C).clamp(max=N - 1))
    cent = gather_rows(codes, init)[..., :bits]  # (G, C, bits)
    nearest = _NearestCentroid(codes, bits, C)
    rows = codes.view(G * N, W)
    long_ = lengths > C  # (G,)
    votes = torch.zeros(G * C, W, device=dev)  # Σ member rows: bit votes, then member counts
    assign, old_flat, reseeded = None, None, False
    for it in range(iterations):
        new = nearest(cent)
        flat = _flat_index(new, C)
        if assign is None:
            votes.index_add_(0, flat, rows)
        else:
            moved = (new != assign).view(-1).nonzero().squeeze(1)  # flat (g, n) of moved queries
            if not reseeded and len(moved) == 0:
                break  # fixed point: further steps change nothing
            moved_rows = rows.index_select(0, moved)
            votes.index_add_(0, flat[moved], moved_rows)
            votes.index_add_(0, old_flat[moved], moved_rows, alpha=-1)
        assign, old_flat = new, flat
        if it == iterations - 1:
            break
        bit_votes = votes.view(G, C, W)[..., :bits]
        cent = torch.where(bit_votes == 0, cent, bit_votes.sign())  # majority; ties keep the bit
        empty = long_[:, None] & (votes.view(G, C, W)[..., bits] == 0)  # (G, C)
        reseeded = bool(empty.any())
        if reseeded:  # empty clusters restart at the farthest valid queries (ties: lowest index)
            position = torch.arange(N, device=dev)
            far = (bits - nearest.best_dot()) * N + (N - 1 - position)  # (G, N), larger = farther
            far_idx = far.masked_fill(~valid, -1).topk(min(C, N), -1).indices  # (G, min(C, N))
            nth = (empty.cumsum(-1) - 1).clamp(0, far_idx.shape[1] - 1)  # rank among empties
            seed = gather_rows(codes, far_idx.gather(1, nth))[..., :bits]  # (G, C, bits)
            cent = torch.where(empty[..., None], seed, cent)
    return assign


def _tie_columns(clusters: int) -> int:
    """T, the code columns that hold the key tie-break C-1-c in pieces of at most 127."""
    return max(1, -(-(clusters - 1) // 127))


class _NearestCentroid:
    """Most similar centroid of every code (ties: lowest index) by one exact integer matmul and
    one max over the centroids.

    With h = ⌈C/2⌉ the matmul of ``[h·cent, tie, 0]`` `(C, W)` with the codes gives
    ``key[c, n] = h·(cent_c·code_n) + (C-1-c)``: the tie-break sits in T columns (at most 127
    each) where every code reads +1. Dot products of ±1 codes share the parity of ``bits``, so
    keys of unequal dot products differ by at least 2h > C-1: the largest key is the most similar
    centroid, the lowest index among equals. Two exact backends give the same keys:

    - ``integer`` (default on CPU when C <= 254 and int8 matmuls are faster than float32 there,
      see :func:`asr_zoo.hardware.cpu_fast_int8_mm`: VNNI, not AVX2's emulation): int8 operands,
      ``torch._int_mm`` with int32 out, one call per group; from the second call on, a group in which fewer than
      half of the centroids changed recomputes only their rows.
    - otherwise one float32 ``bmm`` (exact: integers below 2^24 from operands below 2^11, so also
      under TF32).
    """

    def __init__(self, codes: Tensor, bits: int, clusters: int, integer: bool | None = None):
        """codes `(G, N, W)`: ±1 in the first ``bits`` columns, +1 in the next T (0 in padding
        rows, which then get arbitrary assignments)."""
        G, N, W = codes.shape
        C, dev = clusters, codes.device
        T = _tie_columns(C)
        if W < bits + T:
            raise ValueError(f"codes need {bits} bit columns and {T} tie-break columns, got {W}")
        self.C, self.bits, self.h = C, bits, -(-C // 2)
        can = self.h <= 127 and cpu_int8_mm_runs()
        self.integer = (dev.type == "cpu" and can and cpu_fast_int8_mm()) if integer is None else integer
        if self.integer and not can:
            raise ValueError(f"int8 keys need clusters <= 254 and torch._int_mm on CPU, got {C} clusters")
        dtype = torch.int8 if self.integer else torch.float32
        self.codes_t = torch.empty(G, W, N, device=dev, dtype=dtype).copy_(codes.transpose(1, 2))
        tie = (C - 1 - torch.arange(C, device=dev))[:, None] - 127 * torch.arange(T, device=dev)
        self.lhs = torch.zeros(G, C, W, device=dev, dtype=dtype)  # [h·cent, tie, 0]
        self.lhs[..., bits:bits + T] = tie.clamp(0, 127).to(dtype)  # rows sum to C-1-c
        self.cent = None  # centroids of the previous call
        self.key = torch.empty(G, C, N, device=dev, dtype=torch.int32 if self.integer else dtype)
        self.best = None

    def __call__(self, cent: Tensor) -> Tensor:
        """cent `(G, C, bits)` ±1 -> assignment `(G, N)` int64."""
        changed = None if self.cent is None or not self.integer else (cent != self.cent).any(-1)
        self.cent = cent
        self.lhs[..., :self.bits] = cent * self.h
        if not self.integer:
            torch.bmm(self.lhs, self.codes_t, out=self.key)
        elif changed is None:
            for g in range(self.lhs.shape[0]):
                torch._int_mm(self.lhs[g], self.codes_t[g], out=self.key[g])
        else:
            for g, n_changed in enumerate(changed.sum(-1).tolist()):
                if 2 * n_changed >= self.C:  # as fast as the rows alone plus their copy
                    torch._int_mm(self.lhs[g], self.codes_t[g], out=self.key[g])
                elif n_changed:
                    rows = changed[g].nonzero().squeeze(1)
                    self.key[g].index_copy_(0, rows, torch._int_mm(self.lhs[g, rows], self.codes_t[g]))
        # shifted keys 2h·agreements + (C-1-c) >= 0: the centroid is C-1 minus the remainder
        # (all-zero padding rows decode to anything: clamped into range, they are masked later)
        self.best = self.key.amax(1).long() + self.h * self.bits  # (G, N)
        return ((self.C - 1) - self.best.remainder(2 * self.h)).clamp_(min=0)

    def best_dot(self) -> Tensor:
        """The best dot product `(G, N)` of the last call (= bits - 2·Hamming distance)."""
        return 2 * torch.div(self.best, 2 * self.h, rounding_mode="floor") - self.bits


def cluster_means(x: Tensor, assign: Tensor, clusters: int) -> tuple[Tensor, Tensor]:
    """Mean of the rows of each cluster (differentiable in ``x``).

    Args:
        x (Tensor): shape `(G, N, E)`.
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, clusters]`` (``clusters`` = none).
        clusters (int): C.

    Returns:
        tuple: means `(G, C, E)` (zero for empty clusters) and counts `(G, C)` (int64).
    """
    G, C = x.shape[0], clusters
    sums = index_add_rows(x, assign, C + 1)[:, :C]  # row C: the queries of no cluster
    counts = torch.bincount(_flat_index(assign, C + 1), minlength=G * (C + 1)).view(G, C + 1)[:, :C]
    return sums / counts.clamp(min=1)[..., None].to(x.dtype), counts


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``out[g, i] = x[g, index[g, i]]`` as one row copy (much faster than ``gather`` on CPU).

    Args:
        x (Tensor): shape `(G, N, M)`.
        index (Tensor): int64, shape `(G, R)`, values in ``[0, N)``.

    Returns:
        Tensor: shape `(G, R, M)`.
    """
    G, N, M = x.shape
    return x.reshape(G * N, M).index_select(0, _flat_index(index, N)).view(G, -1, M)


def broadcast_to_members(y: Tensor, assign: Tensor) -> Tensor:
    """Give every query its cluster's row; queries with ``assign == C`` get zeros.

    Args:
        y (Tensor): shape `(G, C, M)`.
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, C]``.

    Returns:
        Tensor: shape `(G, N, M)`.
    """
    return gather_rows(F.pad(y, (0, 0, 0, 1)), assign)  # row C of the padded y is 0


def drop_mask(like: Tensor, p: float) -> Tensor | None:
    """Inverted-dropout multipliers (0 or 1/(1-p)) shaped like ``like``, or None for p = 0."""
    return None if p <= 0 else torch.rand_like(like).ge_(p).to(like.dtype).div_(1 - p)


def index_add_rows(rows: Tensor, index: Tensor, N: int, out: Tensor | None = None) -> Tensor:
    """``out[g, index[g, r]] += rows[g, r]``: rows `(G, R, M)`, index `(G, R)` -> ``out``
    `(G, N, M)` (zeros if None; else added to in place). The inverse of :func:`gather_rows`."""
    G, R, M = rows.shape
    out = rows.new_zeros(G, N, M) if out is None else out
    out.view(G * N, M).index_add_(0, _flat_index(index, N), rows.reshape(G * R, M))
    return out


def _flat_index(index: Tensor, N: int) -> Tensor:
    """Row ``index[g, r]`` of group g as a row of the flattened `(G·N, ...)` tensor: `(G·R,)`."""
    return (index + torch.arange(index.shape[0], device=index.device)[:, None] * N).view(-1)


def _softmax_backward_(d_p: Tensor, p: Tensor, scale: Tensor | float) -> Tensor:
    """Softmax backward over the last dim, in place in ``d_p`` and without temporaries of its
    size: ``scale · p ⊙ (d_p - Σ d_p ⊙ p)`` (``scale`` broadcasts, e.g. per row)."""
    t = d_p.mul_(p)
    return t.addcmul_(p, t.sum(-1, keepdim=True), value=-1).mul_(scale)


def _centroid_forward(q_c: Tensor, k: Tensor, v: Tensor, key_bias: Tensor, K: int, dropout: float
                      ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple]:
    """The forward of :func:`centroid_attention` (key_bias `(G, 1, N)`: 0 or -inf); returns its
    outputs and what :func:`_centroid_backward` needs."""
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


def _centroid_backward(saved: tuple, d_v_c: Tensor, d_mass: Tensor, d_k: Tensor | None = None,
                       d_v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of q_c, k and v from those of ``v_c`` and ``mass``; those of k and v are added
    into ``d_k`` / ``d_v`` `(G, N, ·)` when given (else fresh)."""
    q_c, k, v, a, top_idx, drop = saved
    E = q_c.shape[-1]
    d_a = torch.bmm(d_v_c, v.transpose(1, 2))  # (G, C, N): through v_c
    if drop is not None:
        d_a.mul_(drop)
    # top keys do not enter v_c, only the mass
    d_a.scatter_(-1, top_idx, d_mass.unsqueeze(-1).expand_as(top_idx))
    d_s = _softmax_backward_(d_a, a, E**-0.5)
    d_q_c = torch.bmm(d_s, k)
    d_k = torch.bmm(d_s.transpose(1, 2), q_c) if d_k is None else d_k.baddbmm_(d_s.transpose(1, 2), q_c)
    # the weights that made v_c (top keys left out), in d_s's buffer, which is done with
    a_rest = a
    if drop is not None or top_idx.shape[-1]:
        a_rest = d_s.copy_(a) if drop is None else torch.mul(a, drop, out=d_s)
        a_rest.scatter_(-1, top_idx, 0.0)
    d_v = torch.bmm(a_rest.transpose(1, 2), d_v_c) if d_v is None else \
        d_v.baddbmm_(a_rest.transpose(1, 2), d_v_c)  # (G, N, M)
    return d_q_c, d_k, d_v


class _CentroidAttention(torch.autograd.Function):
    """Centroid attention split at each centroid's top keys; see :func:`centroid_attention`.

    Saves A `(G, C, N)`; the backward is four matmuls and two passes over A.
    """

    @staticmethod
    def forward(ctx, q_c, k, v, key_bias, K, dropout):
        outputs, saved = _centroid_forward(q_c, k, v, key_bias, K, dropout)
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(outputs[2])
        return outputs

    @staticmethod
    def backward(ctx, d_v_c, d_mass, _):
        return (*_centroid_backward(ctx.saved_tensors, d_v_c, d_mass), None, None, None)


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
    return _CentroidAttention.apply(q_c, k, v, key_bias(key_pad, q_c.dtype), topk, dropout)


def key_bias(key_pad: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive score bias `(G, 1, N)` from a key padding mask `(G, N)`: 0, or -inf at padding."""
    return torch.zeros_like(key_pad, dtype=dtype).masked_fill_(key_pad, float("-inf")).unsqueeze(1)


def grouped_inputs(q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q, k, v `(B, H, N, ·)` as `(G, N, ·)` in float32 (float64 stays), and the key padding
    `(G, N)` (True = padding): the working form of the clustered kernels."""
    B, H, N, _ = q.shape
    dtype = torch.promote_types(v.dtype, torch.float32)
    qf, kf, vf = (t.reshape(B * H, N, -1).to(dtype) for t in (q, k, v))
    pad = torch.zeros(B, N, dtype=torch.bool, device=q.device) if pad_mask is None else pad_mask
    return qf, kf, vf, pad[:, None].expand(B, H, N).reshape(B * H, N)


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
