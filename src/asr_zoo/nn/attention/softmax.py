"""Exact softmax attention through ``scaled_dot_product_attention`` (flash / memory-efficient kernels)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...schemas import AttentionConfig
from .base import SelfAttention
from .registry import ATTENTION

__all__ = ["softmax_attention", "SoftmaxAttention"]


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None, causal: bool = False,
    dropout: float = 0.0,
) -> Tensor:
    """softmax(Q Kᵀ / √E) V with padded keys excluded.

    Args:
        q, k, v (Tensor): shape `(B, H, N, E)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding key.
        causal (bool): mask keys j > i.

    Returns:
        Tensor: shape `(B, H, N, E)`.
    """
    mask = None
    if pad_mask is not None:
        mask = ~pad_mask[:, None, None, :]  # (B, 1, 1, N), True = attend
        if causal:
            n = q.shape[-2]
            mask = mask & q.new_ones(n, n, dtype=bool).tril()
            causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)


@ATTENTION.register("softmax", config=AttentionConfig)
class SoftmaxAttention(SelfAttention):
    name = "softmax"

    def attend(self, q, k, v, pad_mask):
        p = self.dropout if self.training else 0.0
        return softmax_attention(q, k, v, pad_mask, self.causal, p)
