"""Convolutional front-ends with 4x (or 2x) time subsampling.

Legend: B batch, T input frames, F feature dim, T' = ceil(T / 4) output frames (ceil(T / 2) with
``time_subsampling=2``), D model dim.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..tensors import lengths_to_valid_mask

__all__ = ["ConvFrontend", "subsampled_lengths", "time_stride_layers"]


def time_stride_layers(time_subsampling: int) -> int:
    """Stride-2 convolutions in time of a front-end subsampling time by ``time_subsampling`` (2 or 4)."""
    if time_subsampling not in (2, 4):
        raise ValueError(f"time_subsampling={time_subsampling}; valid choices: 2, 4")
    return 2 if time_subsampling == 4 else 1


def subsampled_lengths(lengths: Tensor | int, num_layers: int = 2):
    """Output frames of ``num_layers`` stride-2 convolutions with 'same'-style padding: ceil(T / 2^L)."""
    for _ in range(num_layers):
        lengths = (lengths + 1) // 2
    return lengths


class ConvFrontend(nn.Module):
    """Two 2-D convolutions, each stride 2 in time (the second stride 1 with ``time_subsampling=2``),
    then a linear projection to D.

    Args:
        in_dim (int): feature dim F.
        d_model (int): output dim D.
        channels (int): conv channels.
        kind (str): ``conv2d`` — 3x3 kernels, stride 2 in time and frequency (the common ESPnet /
            icefall choice); ``imputer_conv`` — 11x3 kernels (time x frequency), stride 2x1, as in
            the Imputer paper.
        time_subsampling (int): 4 (40 ms frames from 10 ms features) or 2 (20 ms: room for dense
            outputs such as characters of fast speech under CTC, which needs a frame per label
            and a blank between repeats).
    """

    def __init__(self, in_dim: int, d_model: int, channels: int = 64, kind: str = "conv2d", time_subsampling: int = 4):
        super().__init__()
        self.time_layers = time_stride_layers(time_subsampling)
        if kind == "conv2d":
            k, s, p = (3, 3), (2, 2), (1, 1)
            out_f = subsampled_lengths(in_dim)
        elif kind == "imputer_conv":
            k, s, p = (11, 3), (2, 1), (5, 1)
            out_f = in_dim
        else:
            raise ValueError(f"unknown front-end {kind!r}; valid choices: conv2d, imputer_conv")
        self.conv1 = nn.Conv2d(1, channels, k, s, p)
        self.conv2 = nn.Conv2d(channels, channels, k, s if self.time_layers == 2 else (1, s[1]), p)
        self.proj = nn.Linear(channels * out_f, d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            x (Tensor): shape `(B, T, F)`.
            lengths (Tensor): shape `(B,)`.

        Returns:
            (Tensor, Tensor): `(B, T', D)` and lengths `(B,)` with T' = ceil(T / 4) (or ceil(T / 2)).
        """
        y = _zero_padding(x.unsqueeze(1), lengths)  # (B, 1, T, F); padding must not leak into valid frames
        lengths = subsampled_lengths(lengths, 1)
        y = _zero_padding(nn.functional.gelu(self.conv1(y)), lengths)  # (B, C, T/2, F')
        lengths = subsampled_lengths(lengths, self.time_layers - 1)
        y = nn.functional.gelu(self.conv2(y))  # (B, C, T', F')
        B, C, T, Fp = y.shape
        y = self.proj(y.permute(0, 2, 1, 3).reshape(B, T, C * Fp))  # (B, T', D)
        return y, lengths


def _zero_padding(y: Tensor, lengths: Tensor) -> Tensor:
    """Zero the time steps of `(B, C, T, F)` beyond each utterance's length."""
    valid = lengths_to_valid_mask(lengths, y.shape[2])  # (B, T)
    return y * valid[:, None, :, None]
