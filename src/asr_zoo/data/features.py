"""Feature helpers: Kaldi-style deltas and padding.

Legend: B batch, T frames, F feature dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["add_deltas", "normalize_features", "pad_features"]


def _delta(x: Tensor, window: int = 2) -> Tensor:
    """Kaldi delta: d_t = Σ_n n (x_{t+n} - x_{t-n}) / (2 Σ_n n²), edges replicated. x: `(T, F)`."""
    T = x.shape[0]
    padded = F.pad(x.T[None], (window, window), mode="replicate")[0].T  # (T + 2w, F)
    num = sum(n * (padded[window + n: window + n + T] - padded[window - n: window - n + T])
              for n in range(1, window + 1))
    return num / (2 * sum(n * n for n in range(1, window + 1)))


def add_deltas(x: Tensor) -> Tensor:
    """Append Δ and ΔΔ. x: `(T, F)` -> `(T, 3F)`."""
    d1 = _delta(x)
    return torch.cat([x, d1, _delta(d1)], dim=-1)


def normalize_features(x: Tensor, mean: Tensor, std: Tensor, per_utterance: bool = False,
                       eps: float = 1e-5) -> Tensor:
    """Mean/variance normalisation of one utterance. x: `(T, F)`; mean, std: `(F,)` global statistics,
    used unless ``per_utterance``, which uses the utterance's own (population std, floored at ``eps``)."""
    if per_utterance:
        mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(eps)
    return (x - mean) / std


def pad_features(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack `(T_i, F)` tensors into `(B, T_max, F)` (zero padded) and lengths `(B,)`."""
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths

