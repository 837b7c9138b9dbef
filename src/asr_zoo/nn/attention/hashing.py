"""Query hashing and K-means in Hamming space: the clustering of (improved) clustered attention.

Legend: B batch, H heads, N sequence length, E head dim, C clusters, G = B·H independent groups,
W code columns (the hash bits, then constant +1 columns).

1. :func:`hash_queries`: ``bits`` random hyperplanes with bias: bit b is +1 if q·a_b > a_b[E]
   else -1 (Hamming distance then tracks Euclidean distance).
2. :func:`hamming_kmeans`, per (utterance, head): centroids start at ``C`` evenly spaced valid
   queries; each Lloyd step assigns every query to the centroid with the fewest differing bits
   (ties: lowest index; :class:`NearestCentroid`) and sets each centroid bit to its members'
   majority (ties keep the old bit); an empty cluster restarts at the code of a query far from its
   centroid (the farthest queries in order, ties: lowest position). ``iterations`` assignments in
   all; the loop stops early once assignments repeat without a restart, which is exact (a fixed
   point).
3. :func:`cluster_queries`: both, batched, with padding and short utterances.

With ±1 codes the number of equal bits is a matmul, so an assignment is one exact matmul (the
tie-break folded into the keys) and one max; each step updates only what changed: the keys of
changed centroids, the votes of moved queries. Not differentiable (runs under ``no_grad``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...hardware import cpu_fast_int8_mm, cpu_int8_mm_runs
from .rows import flat_index, gather_rows

__all__ = ["NearestCentroid", "cluster_queries", "hamming_kmeans", "hash_queries", "tie_columns"]


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
            width = -(-(bits + tie_columns(C)) // 16) * 16
            codes = hash_queries(q.reshape(G, N, E), planes, width)
            if pad_mask is not None:
                codes.masked_fill_(~valid[..., None], 0.0)
            kmeans = hamming_kmeans(codes, bits, valid, lengths, C, iterations)
            assign = torch.where(short[:, None], assign, kmeans)
        assign = assign.masked_fill(~valid, C)
    return assign.view(B, H, N)


def hamming_kmeans(codes: Tensor, bits: int, valid: Tensor, lengths: Tensor, C: int,
                   iterations: int) -> Tensor:
    """Lloyd's K-means in Hamming space, all groups at once.

    Each step updates what changed since the previous one: the votes only for the queries that
    moved, the similarity keys only for the centroids that changed (see :class:`NearestCentroid`).

    Args:
        codes (Tensor): float32, shape `(G, N, W)`: ±1 bits in the first ``bits`` columns, +1 in
            the next :func:`tie_columns` ones and beyond, padding rows all zero (so that the sum of
            a cluster's rows is its bit votes followed by its member count).
        bits (int): hash bits.
        valid (Tensor): bool, shape `(G, N)`, False = padding.
        lengths (Tensor): int64, shape `(G,)`, valid frames per group.
        C (int): clusters.
        iterations (int): Lloyd assignments (>= 1).

    Returns:
        Tensor: int64, shape `(G, N)`, the cluster of each query; meaningful for valid queries of
        the groups with more than C valid frames (in which all C centroids are active).
    """
    G, N, W = codes.shape
    dev = codes.device
    # initial centroids: the codes of C evenly spaced valid frames
    slot = torch.arange(C, device=dev)
    valid_first = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)  # (G, N)
    init = valid_first.gather(1, (slot * lengths[:, None] // C).clamp(max=N - 1))
    cent = gather_rows(codes, init)[..., :bits]  # (G, C, bits)
    nearest = NearestCentroid(codes, bits, C)
    rows = codes.view(G * N, W)
    long_ = lengths > C  # (G,)
    votes = torch.zeros(G * C, W, device=dev)  # Σ member rows: bit votes, then member counts
    assign, old_flat, reseeded = None, None, False
    for it in range(iterations):
        new = nearest(cent)
        flat = flat_index(new, C)
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


def tie_columns(clusters: int) -> int:
    """T, the code columns that hold the key tie-break C-1-c in pieces of at most 127."""
    return max(1, -(-(clusters - 1) // 127))


class NearestCentroid:
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
    - otherwise float32 keys (exact: integers below 2^24 from operands below 2^11, so also under
      TF32): one ``bmm`` on the first call; from then on the keys are updated by the flipped
      centroid bits alone (``index_add_`` of ±2h times those bits' code rows), which is far less
      work than the matmul (AVX2 CPUs, GPUs).
    """

    def __init__(self, codes: Tensor, bits: int, clusters: int, integer: bool | None = None):
        """codes `(G, N, W)`: ±1 in the first ``bits`` columns, +1 in the next T (0 in padding
        rows, which then get arbitrary assignments)."""
        G, N, W = codes.shape
        C, dev = clusters, codes.device
        T = tie_columns(C)
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
        first = self.cent is None
        if not self.integer and not first:
            self._add_flips(cent)
            self.cent = cent
        else:
            changed = None if first else (cent != self.cent).any(-1)
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

    def _add_flips(self, cent: Tensor) -> None:
        """Float keys from the previous ones and the flipped centroid bits: a flip of bit b of
        centroid c to ±1 adds ±2h·codes[:, b] to key row c (exact: integers in float32). A Lloyd
        step flips a few bits per centroid (2.7, 1.2, 0.7, ... on average at C = 100, 63 bits),
        so this is far less work than the matmul, which is used when more than 1/8 of all bits
        flipped (e.g. many restarts)."""
        G, C, bits = cent.shape
        W, N = self.codes_t.shape[1:]
        flips = (cent != self.cent).view(-1).nonzero().squeeze(1)  # flat (g, c, b)
        if 8 * len(flips) > cent.numel():
            self.lhs[..., :bits] = cent * self.h
            torch.bmm(self.lhs, self.codes_t, out=self.key)
            return
        key, codes = self.key.view(G * C, N), self.codes_t.view(G * W, N)
        g, cb = flips.div(C * bits, rounding_mode="floor"), flips.remainder(C * bits)
        key_row, code_row = g * C + cb.div(bits, rounding_mode="floor"), g * W + cb.remainder(bits)
        up = cent.view(-1)[flips] > 0  # flipped to +1: add 2h·code, to -1: subtract it
        for sign in (True, False):
            pick = (up == sign).nonzero().squeeze(1)
            for chunk in pick.split(512):  # temporaries of at most 512 code rows
                key.index_add_(0, key_row[chunk], codes.index_select(0, code_row[chunk]),
                               alpha=2 * self.h if sign else -2 * self.h)

    def best_dot(self) -> Tensor:
        """The best dot product `(G, N)` of the last call (= bits - 2·Hamming distance)."""
        return 2 * torch.div(self.best, 2 * self.h, rounding_mode="floor") - self.bits
