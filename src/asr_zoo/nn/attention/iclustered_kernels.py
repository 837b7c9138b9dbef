"""The kernels of i-clustered attention (thesis eqs 5.31-5.33): the sparse top-K product and the
fused Function of the whole attention, both with hand-written backward passes.

Legend: G independent groups (batch x heads), N sequence length, E head dim, M value dim,
C clusters, K top keys per cluster, S query slots of s rows each (see :func:`slot_plan`), R rows.

The top-K part is a sparse product: queries are sorted by cluster and cut into slots of s rows
(about the mean cluster size, 4 to 32) that all belong to one cluster, so it is one batched
matmul against that cluster's K keys: O(N·K·E) time and memory. The backward passes make fewer
passes over `(G, C, N)` and fewer temporaries than autograd through the composition; the tests
check them by gradcheck and against plain autograd references.

Cost notes: each cluster's top keys come from :func:`top_keys`, an exact top-K of the centroid
weights that reads only the blocks of keys with the largest maxima (about 2x faster than
``topk`` on long rows); the slots' rows of q, k and v are gathered again in the backward instead
of being kept (less than half the memory between forward and backward); the backward sums a
cluster's slots before scattering its top keys' gradients, and no-grad calls free each part's
tensors as soon as they are used.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .clustered_kernels import centroid_scores_backward, drop_mask, key_bias
from .rows import cluster_means, gather_rows, index_add_rows

__all__ = [
    "ImprovedClusteredFunction",
    "SlotPlan",
    "TopKAttention",
    "centroid_topk_forward",
    "slot_plan",
    "top_keys",
    "topk_attention",
    "topk_backward",
    "topk_forward",
]

_MAX_SLOT = 32  # most queries per slot of the sparse top-K product
_MAX_BLOCK = 32  # most keys per block of the top-K prefilter (:func:`top_keys`)


class SlotPlan(NamedTuple):
    """Queries sorted by cluster in slots of ``s`` rows; every slot belongs to one cluster.

    Shapes: ``source`` `(G, S·s)` the query of each slot row (0 for empty rows), ``real``
    `(G, S·s)` bool, ``cluster`` `(G, S)` the cluster of each slot (0 for empty slots),
    ``row`` `(G, N)` the slot row of each query, ``member`` `(G, N)` bool (False: no cluster).
    """

    s: int
    S: int
    source: Tensor
    real: Tensor
    cluster: Tensor
    row: Tensor
    member: Tensor


def slot_plan(assign: Tensor, clusters: int) -> SlotPlan:
    """Cut the queries of each cluster into slots of s rows, s a power of two near the mean
    cluster size (4 to 32). S is the slot count of the fullest group (one host sync).

    Args:
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, C]`` (``C`` = no cluster).
        clusters (int): C.
    """
    G, N = assign.shape
    C, dev = clusters, assign.device
    s = min(_MAX_SLOT, 1 << max(2, (-(-N // C) - 1).bit_length()))
    order = torch.argsort(assign, dim=-1, stable=True)  # (G, N): queries sorted by cluster
    sorted_assign = assign.gather(1, order)
    counts = torch.zeros(G, C + 1, dtype=torch.long, device=dev).scatter_add_(
        1, assign, torch.ones_like(assign))  # (G, C+1)
    counts[:, C] = 0  # queries of no cluster get no slot
    first = counts.cumsum(-1) - counts  # (G, C+1): sorted position of each cluster's first query
    rank = torch.arange(N, device=dev) - first.gather(1, sorted_assign)  # (G, N): rank in cluster
    slots = -(-counts // s)  # (G, C+1)
    S = max(1, int(slots.sum(-1).max()))
    first_slot = slots.cumsum(-1) - slots  # (G, C+1)
    slot = first_slot.gather(1, sorted_assign) + rank // s  # (G, N), for sorted queries
    member = sorted_assign < C
    row = torch.where(member, slot * s + rank % s, S * s)  # (G, N); S·s = no row
    source = torch.zeros(G, S * s + 1, dtype=torch.long, device=dev).scatter_(1, row, order)
    real = torch.zeros(G, S * s + 1, dtype=torch.bool, device=dev).scatter_(1, row, member)
    cluster = torch.zeros(G, S + 1, dtype=torch.long, device=dev).scatter_(
        1, torch.where(member, slot, S), sorted_assign)
    query_row = torch.empty_like(row).scatter_(1, order, row.clamp(max=S * s - 1))
    return SlotPlan(s, S, source[:, :-1], real[:, :-1], cluster[:, :-1], query_row, assign < C)


def top_keys(a: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """The K largest entries of each row, as ``a.topk(K, sorted=False)`` (at a tie for the K-th
    value possibly other entries of that value; short rows: ``topk`` itself, long rows: largest
    first).

    Long rows (at least 4K blocks of b = 8 to 32 entries) are filtered first: the K-th largest
    block maximum t is a lower bound of the K-th largest entry (the K blocks with maxima >= t
    hold K entries >= t), so every top entry is >= t and lies in one of those K blocks (or in the
    tail past the last whole block). ``topk`` then runs over the few candidates >= t per row
    (1.1-1.2 K on average for centroid weights) instead of all N. Rows with NaN fall back to
    ``topk``.

    Args:
        a (Tensor): shape `(..., N)`.
        K (int): 0 <= K <= N.

    Returns:
        tuple: values and int64 indices, shape `(..., K)`.
    """
    *lead, N = a.shape
    b = min(_MAX_BLOCK, 1 << max(0, (N // max(4 * K, 1)).bit_length() - 1))
    if K == 0 or b < 8:
        return a.topk(K, -1, sorted=False)
    R, nb, dev = a.numel() // N, N // b, a.device
    x = a.reshape(R, N)
    blocks = x[:, :nb * b].unflatten(1, (nb, b))  # (R, nb, b)
    block_max, block = blocks.amax(-1).topk(K, -1, sorted=False)  # (R, K)
    low = block_max.amin(-1, keepdim=True)  # (R, 1): <= the K-th largest entry
    flat = (block + torch.arange(0, R * nb, nb, device=dev)[:, None]).view(-1)
    cand = blocks.reshape(R * nb, b).index_select(0, flat).view(R, K * b)  # the K blocks' entries
    if nb * b < N:  # and the tail
        cand = torch.cat([cand, x[:, nb * b:]], 1)
    W = cand.shape[1]
    nz = (cand >= low).view(-1).nonzero().squeeze(1)  # flat (row, j) of the candidates >= low
    row, j = nz.div(W, rounding_mode="floor"), nz.remainder(W)
    counts = torch.bincount(row, minlength=R)
    least, L = (int(c) for c in counts.aminmax())  # one host sync
    if least < K:  # NaN in the row: no entry compares >= low
        return a.topk(K, -1, sorted=False)
    # the candidates of each row packed into L columns (-inf after them), with their key index
    at = row * L + torch.arange(len(nz), device=dev) - (counts.cumsum(0) - counts).index_select(0, row)
    jb = j.clamp(max=K * b - 1)
    key = block.view(-1).index_select(0, row * K + jb.div(b, rounding_mode="floor")) * b + jb.remainder(b)
    if nb * b < N:
        key = torch.where(j < K * b, key, j + (nb * b - K * b))
    vals = x.new_full((R * L,), float("-inf")).index_copy_(0, at, cand.view(-1).index_select(0, nz))
    keys = torch.zeros(R * L, dtype=torch.long, device=dev).index_copy_(0, at, key)
    top_val, local = vals.view(R, L).topk(K, -1)
    return top_val.view(*lead, K), keys.view(R, L).gather(1, local).view(*lead, K)


def centroid_topk_forward(q_c: Tensor, k: Tensor, v: Tensor, key_bias: Tensor, K: int, dropout: float
                          ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], tuple]:
    """:func:`.clustered_kernels.centroid_forward` with the top keys from :func:`top_keys`, also
    returning the top keys' values (reused by the slots).

    Args:
        q_c (Tensor): centroids, shape `(G, C, E)`.
        k (Tensor): shape `(G, N, E)`.
        v (Tensor): shape `(G, N, M)`.
        key_bias (Tensor): shape `(G, 1, N)`: 0, or -inf at padding keys.
        K (int): top keys per centroid, 0 <= K <= N.
        dropout (float): dropout on the weights of the non-top keys.

    Returns:
        tuple: ``(rest, mass, top_idx, v_top)`` (``v_top`` `(G, C, K, M)`) and the tensors the
        backward needs (A `(G, C, N)` among them).
    """
    E = q_c.shape[-1]
    a = torch.baddbmm(key_bias, q_c, k.transpose(1, 2), alpha=E**-0.5)  # (G, C, N) scores
    torch.softmax(a, -1, out=a)  # in place: A
    a_top, top_idx = top_keys(a, K)  # (G, C, K)
    mass = a_top.sum(-1)  # (G, C)
    drop = drop_mask(a, dropout)
    a_drop = a if drop is None else a * drop
    v_c = torch.bmm(a_drop, v)  # (G, C, M)
    v_top = gather_rows(v, top_idx.flatten(1)).view(*top_idx.shape, v.shape[-1])  # (G, C, K, M)
    if K:  # less the top keys' share
        w_top = a_top if drop is None else a_drop.gather(-1, top_idx)
        v_c -= (w_top.unsqueeze(-2) @ v_top).squeeze(-2)
    return (v_c, mass, top_idx, v_top), (q_c, k, v, a, top_idx, drop)


def topk_forward(q: Tensor, k: Tensor, v: Tensor, mass: Tensor, rest: Tensor, top_idx: Tensor,
                  key_valid: Tensor, plan: SlotPlan, dropout: float, v_top: Tensor | None = None
                  ) -> tuple[Tensor, tuple]:
    """The forward of :func:`topk_attention` (arguments as there, ``plan`` required; ``v_top``
    `(G, C, K, M)`: the top keys' values per cluster if already gathered).

    Returns:
        tuple: the output `(G, N, M)` and what :func:`topk_backward` needs: q, k, v, the softmax
        weights `(G, S, s, K)`, ``mass``, the dropout multipliers and ``top_idx`` (the slot rows
        of q and the slots' keys and values are gathered again there rather than kept).
    """
    G, N, E = q.shape
    C, K = top_idx.shape[1:]
    M, S = v.shape[-1], plan.S
    q_rows, k_top, keys = _slot_rows(q, k, top_idx, plan)
    scores = torch.matmul(q_rows, k_top.transpose(-1, -2)).mul_(E**-0.5)  # (G, S, s, K)
    del q_rows, k_top
    if not bool(key_valid.all()):  # padding keys among the top ones get weight 0
        valid = key_valid.gather(1, keys).view(G, S, 1, K)
        scores.masked_fill_(~valid, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, -1, out=scores)
    if v_top is None:
        v_top = gather_rows(v, keys).view(G, S, K, M)
    else:  # one row of K·M values per slot
        v_top = gather_rows(v_top.reshape(G, C, K * M), plan.cluster).view(G, S, K, M)
    m = mass.gather(1, plan.cluster)[..., None, None]  # (G, S, 1, 1)
    drop = drop_mask(p, dropout)
    out_rows = torch.matmul(p if drop is None else p * drop, v_top).mul_(m)  # (G, S, s, M)
    del v_top
    out_rows.add_(gather_rows(rest, plan.cluster).unsqueeze(2))
    return _rows_to_queries(out_rows, plan), (q, k, v, p, mass, drop, top_idx)


def _slot_rows(q: Tensor, k: Tensor, top_idx: Tensor, plan: SlotPlan) -> tuple[Tensor, Tensor, Tensor]:
    """The slots' query rows `(G, S, s, E)`, keys `(G, S, K, E)` and key indices `(G, S·K)`."""
    G, E, K = q.shape[0], q.shape[-1], top_idx.shape[-1]
    keys = gather_rows(top_idx, plan.cluster).view(G, plan.S * K)  # key index per slot entry
    q_rows = gather_rows(q, plan.source).view(G, plan.S, plan.s, E)
    return q_rows, gather_rows(k, keys).view(G, plan.S, K, E), keys


def topk_backward(saved: tuple, plan: SlotPlan, C: int, d_out: Tensor) -> tuple[Tensor, ...]:
    """The backward of :func:`topk_forward`.

    Args:
        saved (tuple): the second output of :func:`topk_forward`.
        plan (SlotPlan): the forward's plan.
        C (int): clusters.
        d_out (Tensor): gradient of the output, shape `(G, N, M)`.

    Returns:
        tuple: gradients of q, k, v `(G, N, ·)`, of ``mass`` `(G, C)` and of ``rest`` `(G, C, M)`.
    """
    d_q_rows, d_k_top, d_v_top, d_mass, d_rest = _topk_backward_rows(saved, plan, C, d_out)
    N, top = d_out.shape[1], saved[-1].flatten(1)  # top_idx as `(G, C·K)`
    d_k = index_add_rows(d_k_top.flatten(1, 2), top, N)
    d_v = index_add_rows(d_v_top.flatten(1, 2), top, N)
    return _rows_to_queries(d_q_rows, plan), d_k, d_v, d_mass, d_rest


def _topk_backward_rows(saved: tuple, plan: SlotPlan, C: int, d_out: Tensor) -> tuple[Tensor, ...]:
    """:func:`topk_backward` with the gradient of q left in slot rows `(G, S, s, E)` and those of
    the top keys and values per cluster, `(G, C, K, ·)` (each summed over its cluster's slots)."""
    q, k, v, p, mass, drop, top_idx = saved
    G, S, s, K = p.shape
    E, M = q.shape[-1], v.shape[-1]
    m = mass.gather(1, plan.cluster)[..., None, None]  # (G, S, 1, 1)
    q_rows, k_top, keys = _slot_rows(q, k, top_idx, plan)
    v_top = gather_rows(v, keys).view(G, S, K, M)
    d_rows = gather_rows(d_out, plan.source)  # (G, S·s, M)
    empty = (~plan.real).view(-1).nonzero().squeeze(1)
    d_rows.view(-1, M).index_fill_(0, empty, 0.0)  # empty rows feed nothing back
    d_rows = d_rows.view(G, S, s, M)
    d_rest = index_add_rows(d_rows.sum(2), plan.cluster, C)  # (G, C, M)
    p_drop = p if drop is None else p * drop
    # of the top values: a cluster's slots share them (and its mass), so sum the slots first
    d_v_top = _per_cluster(torch.matmul(p_drop.transpose(-1, -2), d_rows), plan, C)
    d_v_top.mul_(mass[..., None, None])  # (G, C, K, M)
    d_w = torch.matmul(d_rows, v_top.transpose(-1, -2))  # (G, S, s, K): of the weights m·p
    del d_rows, p_drop, v_top
    if drop is not None:
        d_w.mul_(drop)
    # softmax backward in place (as softmax_backward_); its row sums also give the mass gradient
    t = d_w.mul_(p)
    row_sum = t.sum(-1, keepdim=True)  # (G, S, s, 1)
    d_mass = index_add_rows(row_sum.sum(2), plan.cluster, C).squeeze(-1)  # (G, C)
    d_s = t.addcmul_(p, row_sum, value=-1).mul_(m * E**-0.5)  # of the scores: weights m·softmax
    d_k_top = _per_cluster(torch.matmul(d_s.transpose(-1, -2), q_rows), plan, C)  # (G, C, K, E)
    del q_rows
    return torch.matmul(d_s, k_top), d_k_top, d_v_top, d_mass, d_rest


def _per_cluster(x: Tensor, plan: SlotPlan, C: int) -> Tensor:
    """Sum of the slots of each cluster: `(G, S, K, D)` -> `(G, C, K, D)` (one row per slot)."""
    G, S, K, D = x.shape
    return index_add_rows(x.view(G, S, K * D), plan.cluster, C).view(G, C, K, D)


def _centroid_topk_backward(saved: tuple, d_v_c: Tensor, d_mass: Tensor, d_k_top: Tensor,
                            d_v_top: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`centroid_topk_forward` (as :func:`.clustered_kernels.centroid_backward`)
    plus the top-K part's gradients of the top keys and values per cluster, ``d_k_top`` and
    ``d_v_top`` `(G, C, K, ·)`.

    The rest's weights A_rest (A with the top keys' entries 0) are not formed: the gradient of v
    is Aᵀ dv_c with, for each cluster's top keys, A_top·dv_c taken back out in the same
    `(G, C, K, M)` rows that add the top-K part (one ``index_add_``).

    Returns:
        tuple: gradients of q_c `(G, C, E)`, k `(G, N, E)` and v `(G, N, M)`.
    """
    q_c, k, v, a, top_idx, drop = saved
    G, C, K = top_idx.shape
    E, N, top = q_c.shape[-1], k.shape[1], top_idx.flatten(1)
    d_s, d_q_c = centroid_scores_backward(saved, d_v_c, d_mass)
    d_k = index_add_rows(d_k_top.view(G, C * K, E), top, N, out=torch.bmm(d_s.transpose(1, 2), q_c))
    w = a if drop is None else torch.mul(a, drop, out=d_s)  # the weights that made v_c (and top)
    d_v_top.addcmul_(w.gather(-1, top_idx).unsqueeze(-1), d_v_c.unsqueeze(2), value=-1)  # - A_top·dv_c
    d_v = index_add_rows(d_v_top.view(G, C * K, -1), top, N, out=torch.bmm(w.transpose(1, 2), d_v_c))
    return d_q_c, d_k, d_v


def _rows_to_queries(rows: Tensor, plan: SlotPlan) -> Tensor:
    """Slot rows `(G, S, s, M)` back in query order `(G, N, M)`; queries of no cluster get 0."""
    G, S, s, M = rows.shape
    out = gather_rows(rows.view(G, S * s, M), plan.row)  # (G, N, M)
    if not bool(plan.member.all()):  # queries of no cluster read some row: zero them
        out.masked_fill_(~plan.member.unsqueeze(-1), 0.0)
    return out


class TopKAttention(torch.autograd.Function):
    """The exact top-K part plus each cluster's rest; see :func:`topk_attention`."""

    @staticmethod
    def forward(ctx, q, k, v, mass, rest, top_idx, key_valid, plan, dropout):
        out, saved = topk_forward(q, k, v, mass, rest, top_idx, key_valid, plan, dropout)
        ctx.save_for_backward(*saved)
        ctx.plan, ctx.C = plan, mass.shape[1]
        return out

    @staticmethod
    def backward(ctx, d_out):
        d_q, d_k, d_v, d_mass, d_rest = topk_backward(ctx.saved_tensors, ctx.plan, ctx.C, d_out)
        return d_q, d_k, d_v, d_mass, d_rest, None, None, None, None


class ImprovedClusteredFunction(torch.autograd.Function):
    """Cluster means, :func:`centroid_topk_forward` and :func:`topk_forward` as one Function: the
    backward adds both parts' gradients of q, k and v into one buffer each (autograd would sum
    separate full-size tensors), q's in slot rows."""

    @staticmethod
    def forward(ctx, q, k, v, assign, key_pad, clusters, K, plan, dropout):
        save = any(ctx.needs_input_grad[:3])  # else (no-grad calls) free A before the slots
        q_c, counts = cluster_means(q, assign, clusters)  # (G, C, E)
        (rest, mass, top_idx, v_top), c_saved = centroid_topk_forward(
            q_c, k, v, key_bias(key_pad, q.dtype), K, dropout)
        c_saved = c_saved if save else ()
        out, t_saved = topk_forward(q, k, v, mass, rest, top_idx, ~key_pad, plan, dropout, v_top)
        if save:
            ctx.save_for_backward(counts, *c_saved, *t_saved)
            ctx.plan, ctx.C, ctx.n_c = plan, clusters, len(c_saved)
        return out

    @staticmethod
    def backward(ctx, d_out):
        counts, *saved = ctx.saved_tensors
        plan, C = ctx.plan, ctx.C
        # the top-K part's slot rows are reduced (and freed) first, to `(G, C, K, ·)` per cluster;
        # the centroid part then adds them into its k and v gradients
        d_q_rows, d_k_top, d_v_top, d_mass, d_rest = _topk_backward_rows(saved[ctx.n_c:], plan, C, d_out)
        d_q_c, d_k, d_v = _centroid_topk_backward(saved[:ctx.n_c], d_rest, d_mass, d_k_top, d_v_top)
        # a centroid is the mean of its members: each gets its gradient over the member count,
        # added to its slot row before the rows go back to query order
        d_q_c /= counts.clamp(min=1).unsqueeze(-1)
        d_q_rows += gather_rows(d_q_c, plan.cluster).unsqueeze(2)
        return _rows_to_queries(d_q_rows, plan), d_k, d_v, None, None, None, None, None, None


def topk_attention(
    q: Tensor, k: Tensor, v: Tensor, assign: Tensor, top_idx: Tensor, key_valid: Tensor, mass: Tensor,
    rest: Tensor | None = None, dropout: float = 0.0, plan: SlotPlan | None = None,
) -> Tensor:
    """For each query, mass[j] · softmax over the top keys of its cluster j, times their values,
    plus ``rest[j]``.

    Args:
        q (Tensor): shape `(G, N, E)`.
        k (Tensor): shape `(G, N, E)`.
        v (Tensor): shape `(G, N, M)`.
        assign (Tensor): int64, shape `(G, N)`, the cluster of each query in ``[0, C]``
            (``C`` = none: the query gets zeros).
        top_idx (Tensor): int64, shape `(G, C, K)`, key indices per cluster.
        key_valid (Tensor): bool, shape `(G, N)`, False = padding key (gets weight 0).
        mass (Tensor): shape `(G, C)`, the attention mass to spread over each cluster's top keys.
        rest (Tensor or None): shape `(G, C, M)`, added to every member of the cluster.
        dropout (float): dropout on the top-K weights.
        plan (SlotPlan or None): :func:`slot_plan` of ``assign`` (computed if None).

    Returns:
        Tensor: shape `(G, N, M)`.
    """
    G, C = mass.shape
    plan = slot_plan(assign, C) if plan is None else plan
    rest = mass.new_zeros(G, C, v.shape[-1]) if rest is None else rest
    return TopKAttention.apply(q, k, v, mass, rest, top_idx, key_valid, plan, dropout)
