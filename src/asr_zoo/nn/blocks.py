"""Encoder blocks (Transformer and Conformer) around an attention module from the zoo.

Legend: B batch, N frames, D model dim. pad_mask `(B, N)` is True at padding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attention import SelfAttention

__all__ = ["FeedForward", "TransformerBlock", "ConformerBlock", "SinusoidalPositionalEncoding"]


class SinusoidalPositionalEncoding(nn.Module):
    """x * sqrt(D) + PE[:N] (Vaswani et al.; or x + PE[:N] without ``scale``), any length."""

    def __init__(self, d_model: int, dropout: float = 0.0, scale: bool = True):
        super().__init__()
        self.d_model, self.dropout = d_model, nn.Dropout(dropout)
        self.scale = math.sqrt(d_model) if scale else 1.0

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: `(B, N, D)` -> `(B, N, D)`."""
        N, D = x.shape[1], self.d_model
        pos = torch.arange(offset, offset + N, device=x.device, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, D, 2, device=x.device, dtype=torch.float32) * (-math.log(10000.0) / D))
        pe = torch.zeros(N, D, device=x.device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return self.dropout(x * self.scale + pe.to(x.dtype))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward with residuals; pre- or post-LayerNorm.

    Args:
        attention (SelfAttention): the attention module (any zoo type).
        d_model, ffn_dim (int), dropout (float), pre_ln (bool).
    """

    def __init__(self, attention: SelfAttention, d_model: int, ffn_dim: int, dropout: float, pre_ln: bool = True):
        super().__init__()
        self.attn, self.ffn = attention, FeedForward(d_model, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop, self.pre_ln = nn.Dropout(dropout), pre_ln

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        """x: `(B, N, D)`, pad_mask `(B, N)` -> `(B, N, D)`."""
        if self.pre_ln:
            x = x + self.drop(self.attn(self.norm1(x), pad_mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, pad_mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class _ConvModule(nn.Module):
    """Conformer convolution module: pointwise-GLU, depthwise conv, BatchNorm, SiLU, pointwise."""

    def __init__(self, d_model: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        y = nn.functional.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)  # (B, D, N)
        if pad_mask is not None:
            y = y.masked_fill(pad_mask[:, None, :], 0.0)  # padding must not leak through the depthwise conv
        y = self.pw2(nn.functional.silu(self.bn(self.dw(y))))
        return self.drop(y.transpose(1, 2))


class ConformerBlock(nn.Module):
    """Macaron FFN/2 -> self-attention -> convolution -> FFN/2 -> LayerNorm (Gulati et al. 2020)."""

    def __init__(self, attention: SelfAttention, d_model: int, ffn_dim: int, dropout: float, conv_kernel: int = 15):
        super().__init__()
        self.ff1, self.ff2 = FeedForward(d_model, ffn_dim, dropout), FeedForward(d_model, ffn_dim, dropout)
        self.norm_ff1, self.norm_ff2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn, self.norm_attn = attention, nn.LayerNorm(d_model)
        self.conv = _ConvModule(d_model, conv_kernel, dropout)
        self.norm_out, self.drop = nn.LayerNorm(d_model), nn.Dropout(dropout)

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        """x: `(B, N, D)`, pad_mask `(B, N)` -> `(B, N, D)`."""
        x = x + 0.5 * self.drop(self.ff1(self.norm_ff1(x)))
        x = x + self.drop(self.attn(self.norm_attn(x), pad_mask))
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.drop(self.ff2(self.norm_ff2(x)))
        return self.norm_out(x)
