"""Multi-head self-attention with an interchangeable attention kernel.

Legend: B batch, N sequence length, D model dim, H heads, E = D / H head dim.

Every attention type shares the same parameters (one fused Q/K/V projection and one output
projection), so a model trained with one type can be evaluated with another (the thesis'
Table 5.2 "swap at evaluation" experiment): only :meth:`SelfAttention.attend` differs.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


__all__ = ["SelfAttention"]


class SelfAttention(nn.Module):
    """Base class: projections around a pure attention kernel.

    Args:
        d_model (int): model dimension D.
        num_heads (int): number of heads H (D must be divisible by H).
        dropout (float): attention dropout. (Default: 0.0)
        causal (bool): position i attends only to positions <= i. Types that cannot be causal
            (clustered, iclustered, pooled) raise ``ValueError``. (Default: False)
    """

    supports_causal: ClassVar[bool] = True
    name: ClassVar[str] = "base"

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if causal and not self.supports_causal:
            raise ValueError(
                f"{self.name} attention is non-causal (it mixes queries from different time "
                "steps) and cannot be used in a decoder or prediction network; "
                "use softmax or linear"
            )
        self.d_model, self.num_heads, self.dropout, self.causal = d_model, num_heads, dropout, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """
        Args:
            x (Tensor): shape `(B, N, D)`.
            pad_mask (Tensor or None): shape `(B, N)`, True at padding positions.

        Returns:
            Tensor: shape `(B, N, D)`. Rows at padding positions are unspecified (finite).
        """
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, E)
        y = self.attend(q, k, v, pad_mask)  # (B, H, N, E)
        return self.out(y.transpose(1, 2).reshape(B, N, D))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None) -> Tensor:
        """The attention kernel. q, k, v: `(B, H, N, E)`; pad_mask `(B, N)`; returns `(B, H, N, E)`."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.name}, d_model={self.d_model}, heads={self.num_heads}, causal={self.causal}"
