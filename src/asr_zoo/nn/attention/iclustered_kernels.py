"""The kernels of i-clustered attention (thesis eqs 5.31-5.33): the sparse top-K product and the
fused Function of the whole attention, both with hand-written backward passes.

Legend: G independent groups (batch x heads), N sequence length, E head dim, M value dim,
C clusters, K top keys per cluster, S query slots of s rows each (see :func:`slot_plan`).

The top-K part is a sparse product: queries are sorted by cluster and cut into slots of s rows
(about the mean cluster size, 4 to 32) that all belong to one cluster, so it is one batched
matmul against that cluster's K keys: O(N·K·E) time and memory. The backward passes make fewer
passes over `(G, C, N)` and fewer temporaries than autograd through the composition; the tests
check them by gradcheck and against plain autograd references.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .clustered_kernels import centroid_backward, centroid_forward, drop_mask, key_bias, softmax_backward_
from .rows import broadcast_to_members, cluster_means, gather_rows, index_add_rows

__all__ = [
    "ImprovedClusteredFunction",
    "SlotPlan",
    "TopKAttention",
    "slot_plan",
    "topk_attention",
    "topk_backward",
    "topk_forward",
]

_MAX_SLOT = 32  # most queries per slot of the sparse top-K product


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


def topk_forward(q: Tensor, k: Tensor, v: Tensor, mass: Tensor, rest: Tensor, top_idx: Tensor,
                  key_valid: Tensor, plan: SlotPlan, dropout: float) -> tuple[Tensor, tuple]:
    """The forward of :func:`topk_attention` (arguments as there, ``plan`` required).

    Returns:
        tuple: the output `(G, N, M)` and what :func:`topk_backward` needs (the slot rows of q,
        the slots' keys and values and the softmax weights, all `O(N·K)`).
    """
    G, N, E = q.shape
    M, K, S, s = v.shape[-1], top_idx.shape[-1], plan.S, plan.s
    keys = gather_rows(top_idx, plan.cluster).view(G, S * K)  # key index per slot entry
    q_rows = gather_rows(q, plan.source).view(G, S, s, E)
    k_top = gather_rows(k, keys).view(G, S, K, E)
    v_top = gather_rows(v, keys).view(G, S, K, M)
    scores = torch.matmul(q_rows, k_top.transpose(-1, -2)).mul_(E**-0.5)  # (G, S, s, K)
    if not bool(key_valid.all()):  # padding keys among the top ones get weight 0
        valid = key_valid.gather(1, keys).view(G, S, 1, K)
        scores.masked_fill_(~valid, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, -1, out=scores)
    m = mass.gather(1, plan.cluster)[..., None, None]  # (G, S, 1, 1)
    drop = drop_mask(p, dropout)
    out_rows = torch.matmul(p if drop is None else p * drop, v_top).mul_(m)  # (G, S, s, M)
    out_rows.add_(gather_rows(rest, plan.cluster).unsqueeze(2))
    out = gather_rows(out_rows.view(G, S * s, M), plan.row)  # (G, N, M)
    if not bool(plan.member.all()):  # queries of no cluster read some row: zero them
        out.masked_fill_(~plan.member.unsqueeze(-1), 0.0)
    return out, (q_rows, k_top, v_top, p, m, drop, keys)


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
    q_rows, k_top, v_top, p, m, drop, keys = saved
    G, S, s, E = q_rows.shape
    N, M = d_out.shape[1], v_top.shape[-1]
    d_rows = gather_rows(d_out, plan.source).view(G, S, s, M)
    d_rows.masked_fill_(~plan.real.view(G, S, s, 1), 0.0)  # empty rows feed nothing back
    d_rest = index_add_rows(d_rows.sum(2), plan.cluster, C)  # (G, C, M)
    p_drop = p if drop is None else p * drop
    d_v_top = torch.matmul(p_drop.transpose(-1, -2), d_rows).mul_(m)  # (G, S, K, M)
    d_w = torch.matmul(d_rows, v_top.transpose(-1, -2))  # (G, S, s, K): of the weights m·p
    del d_rows, p_drop
    if drop is not None:
        d_w.mul_(drop)
    d_m = torch.einsum("gsik,gsik->gs", d_w, p).unsqueeze(-1)  # (G, S, 1): of the slot's mass
    d_mass = index_add_rows(d_m, plan.cluster, C).squeeze(-1)  # (G, C)
    d_s = softmax_backward_(d_w, p, m * E**-0.5)  # of the scores: the weights are m·softmax
    d_v = index_add_rows(d_v_top.view(G, -1, M), keys, N)
    del d_v_top
    d_q = index_add_rows(torch.matmul(d_s, k_top).view(G, S * s, E), plan.source, N)
    d_k = index_add_rows(torch.matmul(d_s.transpose(-1, -2), q_rows).view(G, -1, E), keys, N)
    return d_q, d_k, d_v, d_mass, d_rest


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
    """Cluster means, :func:`centroid_attention` and :func:`topk_attention` as one Function: the
    backward adds both parts' gradients of q, k and v into one buffer each (autograd would sum
    separate full-size tensors)."""

    @staticmethod
    def forward(ctx, q, k, v, assign, key_pad, clusters, K, plan, dropout):
        q_c, counts = cluster_means(q, assign, clusters)  # (G, C, E)
        (rest, mass, top_idx), c_saved = centroid_forward(q_c, k, v, key_bias(key_pad, q.dtype), K,
                                                           dropout)
        out, t_saved = topk_forward(q, k, v, mass, rest, top_idx, ~key_pad, plan, dropout)
        ctx.save_for_backward(assign, counts, *c_saved, *t_saved)
        ctx.plan, ctx.C, ctx.n_c = plan, clusters, len(c_saved)
        return out

    @staticmethod
    def backward(ctx, d_out):
        assign, counts, *saved = ctx.saved_tensors
        plan, C = ctx.plan, ctx.C
        # the top-K part's slot rows are scattered (and freed) first; the centroid part then adds
        # into the same k and v gradients
        d_q, d_k, d_v, d_mass, d_rest = topk_backward(saved[ctx.n_c:], plan, C, d_out)
        d_q_c, d_k, d_v = centroid_backward(saved[:ctx.n_c], d_rest, d_mass, d_k, d_v)
        # a centroid is the mean of its members: each gets its gradient over the member count
        d_q += broadcast_to_members(d_q_c / counts.clamp(min=1).unsqueeze(-1), assign)
        return d_q, d_k, d_v, None, None, None, None, None, None


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
