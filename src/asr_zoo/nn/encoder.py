"""The shared encoder: conv front-end (x4 subsampling), positional encoding, N blocks.

Legend: B batch, T input frames, F feature dim, T' = ceil(T/4) encoder frames, D model dim.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..tensors import lengths_to_padding_mask
from .attention import build_attention
from .blocks import ConformerBlock, SinusoidalPositionalEncoding, TransformerBlock
from .frontend import ConvFrontend, subsampled_lengths

__all__ = ["Encoder", "build_encoder"]


class Encoder(nn.Module):
    """Front-end + positional encoding + blocks whose self-attention comes from the zoo.

    Args:
        in_dim (int): feature dim F.
        cfg: ``EncoderConfig`` (frontend, d_model, num_layers, num_heads, ffn_dim, dropout, pre_ln, ...).
        attention_cfg: ``AttentionConfig`` of the chosen type.
    """

    def __init__(self, in_dim: int, cfg, attention_cfg):
        super().__init__()
        D = cfg.d_model
        self.d_model = D
        self.frontend = ConvFrontend(in_dim, D, cfg.frontend_channels, cfg.frontend, cfg.get("time_subsampling", 4))
        self.pos = SinusoidalPositionalEncoding(D, cfg.dropout, cfg.scale_input)

        def block():
            attn = build_attention(attention_cfg, D, cfg.num_heads)
            if cfg.block == "conformer":
                return ConformerBlock(attn, D, cfg.ffn_dim, cfg.dropout, cfg.conv_kernel)
            return TransformerBlock(attn, D, cfg.ffn_dim, cfg.dropout, cfg.pre_ln)

        self.blocks = nn.ModuleList(block() for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(D) if cfg.pre_ln and cfg.block == "transformer" else nn.Identity()

    def output_lengths(self, lengths):
        """Encoder frames for input frames (works on ints and tensors)."""
        return subsampled_lengths(lengths, self.frontend.time_layers)

    def forward(self, feats: Tensor, lengths: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """
        Args:
            feats (Tensor): shape `(B, T, F)`.
            lengths (Tensor): shape `(B,)`.
            extra (Tensor or None): shape `(B, T', D)`, added after subsampling (the Imputer's
                alignment embeddings).

        Returns:
            (Tensor, Tensor): encoder output `(B, T', D)` and its lengths `(B,)`.
        """
        x, lengths = self.frontend(feats, lengths)
        x = self.pos(x)
        if extra is not None:
            x = x + extra
        pad_mask = lengths_to_padding_mask(lengths, x.shape[1])
        for blk in self.blocks:
            x = blk(x, pad_mask)
        return self.final_norm(x), lengths


def build_encoder(in_dim: int, cfg, attention_cfg) -> Encoder:
    return Encoder(in_dim, cfg, attention_cfg)
