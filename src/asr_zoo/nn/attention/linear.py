"""Linear attention (Katharopoulos et al. 2020; thesis §5.4): softmax replaced by a feature-map kernel.

Legend: B batch, H heads, N sequence length, E query/key head dim, M value head dim.

With φ(x) = elu(x) + 1 the attention of query i is::

    out_i = φ(Q_i)ᵀ Σ_j φ(K_j) V_jᵀ  /  (φ(Q_i)ᵀ Σ_j φ(K_j) + eps)

The sums are computed once and shared by every query, so time and memory are O(N).
Padded keys get φ(K_j) = 0 and therefore contribute nothing. The causal form restricts the sums
to j <= i; it runs chunk by chunk (exact attention inside a chunk, a running state across chunks),
and :func:`linear_attention_step` is the same recurrence one position at a time (decoding).

The kernel runs in float32 even under autocast: the denominator grows like N and overflows fp16.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from ...schemas import LinearAttentionConfig
from .base import SelfAttention
from .registry import ATTENTION

__all__ = [
    "LinearAttention",
    "elu_feature_map",
    "linear_attention",
    "linear_attention_step",
]


def elu_feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1, positive and with non-zero gradient everywhere. Same shape as ``x``."""
    return F.elu(x) + 1


def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None, causal: bool = False,
    eps: float = 1e-6, chunk_size: int = 64,
) -> Tensor:
    """φ(Q)(φ(K)ᵀV) / (φ(Q)Σφ(K) + eps), optionally causal.

    Args:
        q (Tensor): shape `(B, H, N, E)`.
        k (Tensor): shape `(B, H, N, E)`.
        v (Tensor): shape `(B, H, N, M)`.
        pad_mask (Tensor or None): shape `(B, N)`, True = padding key (its φ(K) is zeroed).
        causal (bool): query i sees keys j <= i only.
        eps (float): added to the denominator.
        chunk_size (int): causal form only: positions per chunk. Memory is
            O(N·(chunk_size + E·M/chunk_size)) per head.

    Returns:
        Tensor: shape `(B, H, N, M)`, dtype of ``v`` (computed in float32, or float64 for float64).
    """
    dtype = torch.promote_types(v.dtype, torch.float32)  # float32, or float64 inputs stay float64
    with torch.autocast(q.device.type, enabled=False):
        phi_q = elu_feature_map(q.to(dtype))
        phi_k = elu_feature_map(k.to(dtype))
        vf = v.to(dtype)
        if pad_mask is not None:
            phi_k = phi_k.masked_fill(pad_mask[:, None, :, None], 0.0)
        if causal:
            out = _causal_linear_attention(phi_q, phi_k, vf, eps, chunk_size)
        else:
            kv = phi_k.transpose(-1, -2) @ vf  # (B, H, E, M)
            z = phi_k.sum(-2, keepdim=True).transpose(-1, -2)  # (B, H, E, 1)
            out = (phi_q @ kv) / (phi_q @ z + eps)  # (B, H, N, M)
    return out.to(v.dtype)


def _causal_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float, chunk: int) -> Tensor:
    """Causal form on feature-mapped inputs: exact masked products inside each chunk, plus the
    prefix state S = Σ φ(K_j) V_jᵀ, Z = Σ φ(K_j) of all earlier chunks."""
    B, H, N, E = phi_q.shape
    M = v.shape[-1]
    pad = -N % chunk
    if pad:  # zero keys at the end change nothing for earlier positions
        phi_q, phi_k, v = (F.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v))
    n = (N + pad) // chunk
    qc = phi_q.view(B, H, n, chunk, E)
    kc = phi_k.view(B, H, n, chunk, E)
    vc = v.view(B, H, n, chunk, M)
    chunk_kv = kc.transpose(-1, -2) @ vc  # (B, H, n, E, M)
    chunk_z = kc.sum(-2)  # (B, H, n, E)
    s_prev = chunk_kv.cumsum(2) - chunk_kv  # (B, H, n, E, M): state before each chunk
    z_prev = chunk_z.cumsum(2) - chunk_z  # (B, H, n, E)
    intra = (qc @ kc.transpose(-1, -2)).tril()  # (B, H, n, chunk, chunk)
    num = intra @ vc + qc @ s_prev  # (B, H, n, chunk, M)
    den = intra.sum(-1) + (qc @ z_prev.unsqueeze(-1)).squeeze(-1)  # (B, H, n, chunk)
    out = num / (den.unsqueeze(-1) + eps)
    return out.view(B, H, n * chunk, M)[:, :, :N]


def linear_attention_step(
    q: Tensor, k: Tensor, v: Tensor, state: tuple[Tensor, Tensor] | None = None, eps: float = 1e-6,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One step of causal linear attention as an RNN (thesis eqs 5.20-5.24).

    ``S_i = S_{i-1} + φ(K_i) V_iᵀ``, ``Z_i = Z_{i-1} + φ(K_i)``,
    ``out_i = φ(Q_i)ᵀ S_i / (φ(Q_i)ᵀ Z_i + eps)``. Feeding positions 0..N-1 in order gives exactly
    ``linear_attention(..., causal=True)``.

    Args:
        q (Tensor): shape `(B, H, E)`, the new position's query.
        k (Tensor): shape `(B, H, E)`.
        v (Tensor): shape `(B, H, M)`.
        state (tuple or None): ``(S, Z)`` with S `(B, H, E, M)` and Z `(B, H, E)` (float32 or float64);
            None = empty prefix.
        eps (float): added to the denominator.

    Returns:
        tuple: ``out`` `(B, H, M)` (dtype of ``v``) and the updated state ``(S, Z)``.
    """
    dtype = torch.promote_types(v.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        phi_q = elu_feature_map(q.to(dtype))
        phi_k = elu_feature_map(k.to(dtype))
        s_new = phi_k.unsqueeze(-1) * v.to(dtype).unsqueeze(-2)  # (B, H, E, M)
        if state is None:
            s, z = s_new, phi_k
        else:
            s, z = state[0] + s_new, state[1] + phi_k
        num = (phi_q.unsqueeze(-2) @ s).squeeze(-2)  # (B, H, M)
        den = (phi_q * z).sum(-1, keepdim=True)  # (B, H, 1)
        out = num / (den + eps)
    return out.to(v.dtype), (s, z)


@ATTENTION.register("linear", config=LinearAttentionConfig)
class LinearAttention(SelfAttention):
    """Linear attention; causal-capable, with a recurrent :meth:`step` for decoding.

    >>> att = LinearAttention(d_model=8, num_heads=2, causal=True)
    >>> att(torch.randn(3, 5, 8), torch.zeros(3, 5, dtype=torch.bool)).shape
    torch.Size([3, 5, 8])
    """

    name = "linear"
    supports_causal = True

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, causal: bool = False,
                 eps: float = 1e-6):
        super().__init__(d_model, num_heads, dropout, causal)
        self.eps = eps

    def attend(self, q, k, v, pad_mask):
        return linear_attention(q, k, v, pad_mask, self.causal, self.eps)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Causal self-attention for one new position, given the state of all earlier ones.

        Args:
            x (Tensor): shape `(B, D)`, the input at the new position.
            state (tuple or None): from the previous call (see :func:`linear_attention_step`).

        Returns:
            tuple: output `(B, D)` and the new state.
        """
        B, D = x.shape
        q, k, v = self.qkv(x).view(B, 3, self.num_heads, D // self.num_heads).unbind(1)  # (B, H, E)
        y, state = linear_attention_step(q, k, v, state, self.eps)
        return self.out(y.reshape(B, D)), state
