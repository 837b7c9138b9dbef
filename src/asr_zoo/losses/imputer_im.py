"""Imputer-IM loss (Chan et al. 2020, Eq. 10): frame-wise cross-entropy against the expert's
(noisy) alignment — the Imputer trained by imitation, without dynamic programming.

Legend: B batch, T frames, V vocabulary incl. blank.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tensors import lengths_to_valid_mask


def imputer_im_loss(log_probs: Tensor, alignment: Tensor, input_lengths: Tensor, masked: Tensor,
                    observed_weight: float = 1.0) -> Tensor:
    """Summed frame cross-entropy ``Σ_t w_t · -log p(a_t | ã, x)`` with ``w_t = 1`` at masked frames
    and ``observed_weight`` at the frames given to the model.

    Args:
        log_probs (Tensor): shape `(B, T, V)`, log-softmax outputs (computed in float32 or wider).
        alignment (Tensor): shape `(B, T)`, int64 target token a_t per frame (``blank`` allowed);
            entries at or past ``input_lengths`` are ignored.
        input_lengths (Tensor): shape `(B,)`, valid frames per utterance (<= T).
        masked (Tensor): shape `(B, T)`, bool, True where the model's input ã_t was masked.
        observed_weight (float): weight of the given (unmasked) frames: 1 is Eq. 10 (every frame,
            so the model also learns to repeat its input), 0 the masked frames only.

    Returns:
        Tensor: scalar, the sum over the batch (divide by B for a per-utterance mean).
    """
    lp = log_probs if log_probs.dtype in (torch.float32, torch.float64) else log_probs.float()
    valid = lengths_to_valid_mask(input_lengths, alignment.shape[1])  # (B, T)
    nll = -lp.gather(-1, alignment.masked_fill(~valid, 0)[..., None]).squeeze(-1)  # (B, T)
    weight = masked.to(nll.dtype) * (1.0 - observed_weight) + observed_weight
    return (nll * weight * valid).sum()
