"""Query and key/value mean-pooled attention (thesis ch. 6, St-SEW eqs 6.2-6.8).

Legend: B batch, H heads, N sequence length, E head dim, Nq = ⌈N/q_stride⌉, Nk = ⌈N/kv_stride⌉.

Queries are mean-pooled over windows of ``q_stride`` frames and keys/values over windows of
``kv_stride`` frames (window = stride, aligned to frame 0). A pooled window averages only its valid
frames; a window with no valid frame is padding. Exact softmax attention runs between the pooled
sequences and each pooled output is repeated ``q_stride`` times to give N outputs again.
Cost O(N²/(q_stride·kv_stride)): still quadratic, with a smaller constant.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor


from ...schemas import PooledAttentionConfig
from .base import SelfAttention
from .registry import ATTENTION

__all__ = ["PooledAttention", "masked_mean_pool", "pooled_attention"]


def masked_mean_pool(x: Tensor, pad_mask: Tensor | None, stride: int) -> tuple[Tensor, Tensor | None]:
    """Mean over non-overlapping windows of ``stride`` frames, counting valid frames only.

    Args:
        x (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        stride (int): window length and hop.

    Returns:
        tuple: pooled `(B, H, ⌈N/stride⌉, E)` and its pad mask `(B, ⌈N/stride⌉)` (True where the
        window holds no valid frame; None if ``pad_mask`` is None). Padding windows hold zeros.
    """
    B, H, N, E = x.shape
    if stride == 1:
        return x, pad_mask
    pad = -N % stride
    n = (N + pad) // stride
    valid = torch.ones(B, N, dtype=torch.bool, device=x.device) if pad_mask is None else ~pad_mask
    valid = F.pad(valid, (0, pad))  # (B, N + pad), the extra frames are padding
    x = F.pad(x, (0, 0, 0, pad)).masked_fill(~valid[:, None, :, None], 0.0)
    count = valid.view(B, n, stride).sum(-1)  # (B, n)
    pooled = x.view(B, H, n, stride, E).sum(-2) / count.clamp(min=1)[:, None, :, None].to(x.dtype)
    return pooled, (None if pad_mask is None else count == 0)


def pooled_attention(
    q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None, q_stride: int = 2,
    kv_stride: int = 2, dropout: float = 0.0,
) -> Tensor:
    """softmax(D(Q) D(K)ᵀ/√E) D(V), repeat-upsampled by ``q_stride`` back to N positions.

    Args:
        q, k, v (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding.
        q_stride (int): query pooling factor S_q (1 = no pooling).
        kv_stride (int): key/value pooling factor S_k (1 = no pooling).
        dropout (float): attention dropout probability.

    Returns:
        Tensor: shape `(B, H, N, E)`; all queries of one window share one output.
    """
    N = q.shape[2]
    qp, _ = masked_mean_pool(q, pad_mask, q_stride)  # (B, H, Nq, E)
    kvp, kv_pad = masked_mean_pool(torch.cat([k, v], -1), pad_mask, kv_stride)  # (B, H, Nk, 2E)
    kp, vp = kvp.split([k.shape[-1], v.shape[-1]], -1)
    mask = None if kv_pad is None else ~kv_pad[:, None, None, :]  # (B, 1, 1, Nk), True = attend
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, dropout_p=dropout)
    return out.repeat_interleave(q_stride, dim=2)[:, :, :N]  # (B, H, N, E)


@ATTENTION.register("pooled", config=PooledAttentionConfig)
class PooledAttention(SelfAttention):
    """Mean-pooled softmax attention (non-causal: a pooled window mixes time steps).

    >>> att = PooledAttention(d_model=8, num_heads=2, q_stride=2, kv_stride=3)
    >>> att(torch.randn(2, 7, 8), torch.zeros(2, 7, dtype=torch.bool)).shape
    torch.Size([2, 7, 8])
    """

    name = "pooled"
    supports_causal = False

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, causal: bool = False,
                 q_stride: int = 2, kv_stride: int = 2):
        super().__init__(d_model, num_heads, dropout, causal)
        if q_stride < 1 or kv_stride < 1:
            raise ValueError(f"strides must be >= 1, got q_stride={q_stride}, kv_stride={kv_stride}")
        self.q_stride, self.kv_stride = q_stride, kv_stride

    def attend(self, q, k, v, pad_mask):
        p = self.dropout if self.training else 0.0
        return pooled_attention(q, k, v, pad_mask, self.q_stride, self.kv_stride, p)
