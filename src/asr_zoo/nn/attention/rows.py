"""Row gathers and scatters of the clustered kernels: queries to clusters and back.

Legend: G independent groups (batch x heads), N rows per group, R selected rows, C clusters,
M row width. Every helper works on the flattened `(G·N, M)` view with one ``index_select`` or
``index_add_``, which on CPU is much faster than ``gather``/``scatter_add`` along a dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["broadcast_to_members", "cluster_means", "flat_index", "gather_rows", "index_add_rows"]


def flat_index(index: Tensor, N: int) -> Tensor:
    """Row ``index[g, r]`` of group g as a row of the flattened `(G·N, ...)` tensor.

    Args:
        index (Tensor): int64, shape `(G, R)`, values in ``[0, N)``.
        N (int): rows per group.

    Returns:
        Tensor: int64, shape `(G·R,)`: ``index[g, r] + g·N``.
    """
    return (index + torch.arange(index.shape[0], device=index.device)[:, None] * N).view(-1)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``out[g, i] = x[g, index[g, i]]`` as one row copy (much faster than ``gather`` on CPU).

    Args:
        x (Tensor): shape `(G, N, M)`.
        index (Tensor): int64, shape `(G, R)`, values in ``[0, N)``.

    Returns:
        Tensor: shape `(G, R, M)`.
    """
    G, N, M = x.shape
    return x.reshape(G * N, M).index_select(0, flat_index(index, N)).view(G, -1, M)


def index_add_rows(rows: Tensor, index: Tensor, N: int, out: Tensor | None = None) -> Tensor:
    """``out[g, index[g, r]] += rows[g, r]``; the inverse (adjoint) of :func:`gather_rows`.

    Args:
        rows (Tensor): shape `(G, R, M)`.
        index (Tensor): int64, shape `(G, R)`, values in ``[0, N)``.
        N (int): rows per group of the result.
        out (Tensor or None): shape `(G, N, M)`, added to in place; None = zeros.

    Returns:
        Tensor: shape `(G, N, M)` (``out`` itself when given).
    """
    G, R, M = rows.shape
    out = rows.new_zeros(G, N, M) if out is None else out
    out.view(G * N, M).index_add_(0, flat_index(index, N), rows.reshape(G * R, M))
    return out


def cluster_means(x: Tensor, assign: Tensor, clusters: int) -> tuple[Tensor, Tensor]:
    """Mean of the rows of each cluster (differentiable in ``x``; eq. 5.25).

    Args:
        x (Tensor): shape `(G, N, E)`.
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, clusters]`` (``clusters`` = none).
        clusters (int): C.

    Returns:
        tuple: means `(G, C, E)` (zero for empty clusters) and counts `(G, C)` (int64).
    """
    G, C = x.shape[0], clusters
    sums = index_add_rows(x, assign, C + 1)[:, :C]  # row C: the queries of no cluster
    counts = torch.bincount(flat_index(assign, C + 1), minlength=G * (C + 1)).view(G, C + 1)[:, :C]
    return sums / counts.clamp(min=1)[..., None].to(x.dtype), counts


def broadcast_to_members(y: Tensor, assign: Tensor) -> Tensor:
    """Give every query its cluster's row (eq. 5.28); queries with ``assign == C`` get zeros.

    Args:
        y (Tensor): shape `(G, C, M)`.
        assign (Tensor): int64, shape `(G, N)`, values in ``[0, C]``.

    Returns:
        Tensor: shape `(G, N, M)`.
    """
    return gather_rows(F.pad(y, (0, 0, 0, 1)), assign)  # row C of the padded y is 0
