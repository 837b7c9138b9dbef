"""Transformer decoder (pre-LN) with cross-attention and an incremental key/value cache.

Legend: B batch (utterances x beams while decoding), U target length, T encoder frames,
D model dim, H heads, E = D / H head dim, V vocabulary.

Each layer: causal self-attention over the tokens so far (a zoo type that supports causal use:
softmax or linear), cross-attention over the encoder frames (softmax through
``F.scaled_dot_product_attention`` with a key padding mask), feed-forward; pre-LayerNorm residuals.

:meth:`TransformerDecoder.forward` runs teacher forcing over whole sequences;
:meth:`TransformerDecoder.step` adds one position given a :class:`DecoderState`, so a decoding
step costs one position whatever the prefix length:

- softmax self-attention caches each layer's keys and values `(B, H, L, E)` of the prefix;
- linear self-attention keeps each layer's recurrent state ``S`` `(B, H, E, E)`, ``Z`` `(B, H, E)`
  (:meth:`LinearAttention.step`);
- cross-attention keys and values of the encoder frames are projected once per utterance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tensors import lengths_to_padding_mask
from .attention import ATTENTION, build_attention
from .blocks import FeedForward, SinusoidalPositionalEncoding

__all__ = ["CAUSAL_DECODER_ATTENTION", "CrossAttention", "DecoderLayer", "DecoderState", "TransformerDecoder"]

CAUSAL_DECODER_ATTENTION = ("softmax", "linear")  # self-attention types with a causal, cached form


class CrossAttention(nn.Module):
    """Multi-head softmax attention from decoder positions to encoder frames.

    Args:
        d_model (int): model dim D. num_heads (int): heads H. dropout (float): on attention weights.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the encoder frames.

        Args:
            memory (Tensor): shape `(B, T, D)`.

        Returns:
            (Tensor, Tensor): keys and values, each of shape `(B, H, T, E)`.
        """
        B, T, D = memory.shape
        k, v = self.kv(memory).view(B, T, 2, self.num_heads, D // self.num_heads).unbind(2)  # (B, T, H, E)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, memory_pad_mask: Tensor) -> Tensor:
        """
        Args:
            x (Tensor): shape `(B, U, D)` queries.
            k, v (Tensor): shape `(B, H, T, E)` from :meth:`memory_kv`.
            memory_pad_mask (Tensor): shape `(B, T)`, True at padding frames (every row needs a valid frame).

        Returns:
            Tensor: shape `(B, U, D)`.
        """
        B, U, D = x.shape
        q = self.q(x).view(B, U, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, H, U, E)
        mask = ~memory_pad_mask[:, None, None, :]  # (B, 1, 1, T), True = attend
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, U, E)
        return self.out(y.transpose(1, 2).reshape(B, U, D))


@dataclass
class DecoderState:
    """Everything :meth:`TransformerDecoder.step` needs about the prefix decoded so far.

    Attributes:
        offset (int): prefix length L (positions already fed).
        self_attn (list): per layer, softmax: ``(K, V)`` each `(B, H, L, E)`; linear: ``(S, Z)``
            with S `(B, H, E, E)`, Z `(B, H, E)`; None before the first step.
        memory_kv (list): per layer, the cross-attention ``(K, V)`` of the encoder frames, `(B, H, T, E)`.
        memory_pad_mask (Tensor): shape `(B, T)`, True at padding frames.
    """

    offset: int
    self_attn: list
    memory_kv: list
    memory_pad_mask: Tensor

    def select(self, index: Tensor) -> "DecoderState":
        """Keep / reorder hypotheses: row ``i`` of the result is row ``index[i]`` of this state.

        Only the self-attention state is gathered; ``memory_kv`` is kept as is, so ``index`` must
        map every row to a row with the same encoder frames (beams of one utterance).

        Args:
            index (Tensor): shape `(B,)` int64.
        """
        self_attn = [None if s is None else tuple(t.index_select(0, index) for t in s) for s in self.self_attn]
        return replace(self, self_attn=self_attn)


class DecoderLayer(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention, feed-forward (each with a residual)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, attention_cfg):
        super().__init__()
        self.self_attn = build_attention(attention_cfg, d_model, num_heads, causal=True)
        self.cross_attn = CrossAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad_mask: Tensor, memory_kv: tuple[Tensor, Tensor], memory_pad_mask: Tensor) -> Tensor:
        """x: `(B, U, D)`, pad_mask `(B, U)`, memory_kv 2 x `(B, H, T, E)`, memory_pad_mask `(B, T)` -> `(B, U, D)`."""
        x = x + self.drop(self.self_attn(self.norm1(x), pad_mask))
        x = x + self.drop(self.cross_attn(self.norm2(x), *memory_kv, memory_pad_mask))
        return x + self.drop(self.ffn(self.norm3(x)))

    def step(self, x: Tensor, cache, memory_kv: tuple[Tensor, Tensor], memory_pad_mask: Tensor):
        """One new position (inference: no residual dropout). x: `(B, D)`; cache: this layer's
        self-attention state (see :class:`DecoderState`) or None. Returns `(B, D)` and the new cache."""
        y, cache = self._self_attn_step(self.norm1(x), cache)
        x = x + y
        x = x + self.cross_attn(self.norm2(x)[:, None], *memory_kv, memory_pad_mask)[:, 0]
        return x + self.ffn(self.norm3(x)), cache

    def _self_attn_step(self, x: Tensor, cache):
        attn = self.self_attn
        if attn.name == "linear":
            return attn.step(x, cache)
        B, D = x.shape  # softmax: append this position's key/value and attend over the prefix
        q, k, v = attn.qkv(x).view(B, 3, attn.num_heads, D // attn.num_heads).unbind(1)  # (B, H, E)
        k, v = k[:, :, None], v[:, :, None]  # (B, H, 1, E)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)  # (B, H, L+1, E)
        y = F.scaled_dot_product_attention(q[:, :, None], k, v)  # (B, H, 1, E)
        return attn.out(y.reshape(B, D)), (k, v)


class TransformerDecoder(nn.Module):
    """Token embedding + sinusoidal positions, N :class:`DecoderLayer`, final LayerNorm, output layer.

    Args:
        vocab_size (int): V. d_model (int): D. num_layers (int). num_heads (int): H.
        ffn_dim (int). dropout (float).
        attention (str): self-attention type, one of :data:`CAUSAL_DECODER_ATTENTION`.
        tie_embedding (bool): share the embedding matrix with the output layer. (Default: True)

    >>> dec = TransformerDecoder(10, d_model=16, num_layers=1, num_heads=2, ffn_dim=32)
    >>> memory, memory_lens = torch.randn(2, 7, 16), torch.tensor([7, 5])
    >>> dec(torch.tensor([[1, 4, 5], [1, 6, 0]]), torch.tensor([3, 2]), memory, memory_lens).shape
    torch.Size([2, 3, 10])
    """

    def __init__(self, vocab_size: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 dropout: float = 0.1, attention: str = "softmax", tie_embedding: bool = True):
        super().__init__()
        if attention not in CAUSAL_DECODER_ATTENTION:
            raise ValueError(
                f"decoder self-attention {attention!r} cannot be causal (or has no incremental form); "
                f"valid causal types: {', '.join(CAUSAL_DECODER_ATTENTION)}"
            )
        attention_cfg = ATTENTION.get(attention).config(name=attention)
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)  # x sqrt(D) in `pos` gives unit scale
        self.pos = SinusoidalPositionalEncoding(d_model, dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, ffn_dim, dropout, attention_cfg) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)
        if tie_embedding:
            self.output.weight = self.embed.weight

    def forward(self, tokens: Tensor, token_lens: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Teacher forcing: logits of the next token at every position.

        Args:
            tokens (Tensor): shape `(B, U)` decoder input (``<sos>`` then the labels), any padding value.
            token_lens (Tensor): shape `(B,)` valid positions of ``tokens``.
            memory (Tensor): shape `(B, T, D)` encoder output.
            memory_lens (Tensor): shape `(B,)` valid encoder frames (>= 1).

        Returns:
            Tensor: logits of shape `(B, U, V)`; rows at padding positions are unspecified.
        """
        pad_mask = lengths_to_padding_mask(token_lens, tokens.shape[1])
        memory_pad_mask = lengths_to_padding_mask(memory_lens, memory.shape[1])
        x = self.pos(self.embed(tokens))
        for layer in self.layers:
            x = layer(x, pad_mask, layer.cross_attn.memory_kv(memory), memory_pad_mask)
        return self.output(self.final_norm(x))

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> DecoderState:
        """The empty-prefix state: projects the encoder frames once for every layer.

        Args:
            memory (Tensor): shape `(B, T, D)`. memory_lens (Tensor): shape `(B,)`.
        """
        return DecoderState(
            offset=0, self_attn=[None] * len(self.layers),
            memory_kv=[layer.cross_attn.memory_kv(memory) for layer in self.layers],
            memory_pad_mask=lengths_to_padding_mask(memory_lens, memory.shape[1]),
        )

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Feed one token per hypothesis; cost is independent of the prefix length L (bar the softmax
        cache's O(L) attention).

        Args:
            tokens (Tensor): shape `(B,)`, the token at position ``state.offset``.
            state (DecoderState): the prefix so far (from :meth:`init_state` or a previous step).

        Returns:
            (Tensor, DecoderState): next-token logits `(B, V)` and the state including this position.
        """
        x = self.pos(self.embed(tokens)[:, None], offset=state.offset)[:, 0]  # (B, D)
        caches = []
        for layer, cache, kv in zip(self.layers, state.self_attn, state.memory_kv):
            x, cache = layer.step(x, cache, kv, state.memory_pad_mask)
            caches.append(cache)
        logits = self.output(self.final_norm(x))
        return logits, replace(state, offset=state.offset + 1, self_attn=caches)
