"""Tensor helpers shared by every layer: padding masks from lengths, batches moved to a device.

Legend: B batch, T frames (or any padded length).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lengths_to_padding_mask", "lengths_to_valid_mask", "to_device"]


def lengths_to_padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Lengths `(B,)` -> bool mask `(B, T)`, **True at padding** (T = ``max_len`` or the longest).

    >>> lengths_to_padding_mask(torch.tensor([1, 3]))
    tensor([[False,  True,  True],
            [False, False, False]])
    """
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def lengths_to_valid_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Lengths `(B,)` -> bool mask `(B, T)`, True at valid positions (the complement)."""
    return ~lengths_to_padding_mask(lengths, max_len)


def to_device(batch: dict, device: str | torch.device) -> dict:
    """The batch dict with every tensor moved to ``device`` (other values as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
