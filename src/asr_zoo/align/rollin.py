"""Imputer roll-in: expert alignment + shift noise + a masking policy -> model input.

Legend: B batch, T frames.

Chan et al. (2020, §2.5) sample the partial alignment ã the model conditions on from
q_φ' × r: the expert's best CTC alignment (``ctc_viterbi``), shifted by up to one frame
(q_φ'), then masked by a policy r (Bernoulli, Uniform or Block). Every function here is
batched, never touches padding frames (t >= length), and draws from an optional
``torch.Generator`` for reproducibility. Masks are bool, True = masked (to be imputed).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "shift_alignment",
    "block_mask",
    "bernoulli_mask",
    "uniform_mask",
    "MASKING_POLICIES",
    "rollin",
    "fill_masked",
]


def _frames(lengths: Tensor, max_len: int | None) -> tuple[Tensor, Tensor]:
    """Returns frame indices `(T,)` and the valid-frame mask `(B, T)`."""
    num_frames = int(lengths.max()) if max_len is None else max_len
    frames = torch.arange(num_frames, device=lengths.device)
    return frames, frames < lengths[:, None]


def _rand(shape, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws; ``generator`` must live on ``device``."""
    return torch.rand(shape, generator=generator, device=device)


def _rank_among_valid(valid: Tensor, generator: torch.Generator | None) -> Tensor:
    """A uniformly random order of the valid slots along the last axis.

    Args:
        valid (Tensor): shape `(..., N)`, bool.

    Returns:
        Tensor: shape `(..., N)`, the rank of each slot; valid slots get ranks
        ``0 .. n_valid-1`` in random order, invalid ones come after.
    """
    scores = _rand(valid.shape, valid.device, generator).masked_fill(~valid, 2.0)  # invalid last
    return scores.argsort(-1).argsort(-1)


def shift_alignment(
    align: Tensor,
    lengths: Tensor,
    max_shift: int = 1,
    blank: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shifts each utterance's alignment by a random k ∈ {-max_shift..max_shift} frames.

    ``out[t] = align[t - k]`` for ``0 <= t - k < length`` and ``blank`` elsewhere (the
    vacated edge is filled with blank, frames pushed past either edge are dropped). A shift
    that would drop a non-blank frame is replaced by no shift, so the result always
    collapses to the same label sequence as ``align``.

    Args:
        align (Tensor): shape `(B, T)`, int64 alignments (``ctc_viterbi`` output).
        lengths (Tensor): shape `(B,)`, valid frames.
        max_shift (int): largest |k|.
        blank (int): blank id.
        generator (torch.Generator, optional): random source.

    Returns:
        Tensor: shape `(B, T)`; padding frames hold ``blank``.
    """
    batch, num_frames = align.shape
    frames, valid = _frames(lengths, num_frames)
    shift = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator,
                          device=align.device)  # (B,)
    # Non-blank frames before frame j, j = 0..T: (B, T+1).
    nonblank = torch.nn.functional.pad(((align != blank) & valid).cumsum(1), (1, 0))
    n = shift.abs().clamp(max=num_frames)
    head = nonblank.gather(1, n[:, None]).squeeze(1)  # non-blanks in the first |k| frames
    total = nonblank[:, -1]
    tail = total - nonblank.gather(1, (lengths - n).clamp(min=0)[:, None]).squeeze(1)
    dropped = torch.where(shift > 0, tail, head)  # k > 0 drops the tail, k < 0 the head
    shift = torch.where(dropped == 0, shift, 0)
    source = frames - shift[:, None]  # (B, T)
    inside = (source >= 0) & (source < lengths[:, None]) & valid
    return torch.where(inside, align.gather(1, source.clamp(0, num_frames - 1)), blank)


def block_mask(
    lengths: Tensor,
    block_size: int = 8,
    max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Block policy: a decoding state, drawn as "k steps of block decoding done".

    Frames ``[0, length)`` are cut into blocks ``[j·bs, (j+1)·bs)``; the last one may be
    partial with n < bs frames. Decoding starts from an all-masked canvas and commits one slot
    per block per step, all blocks in parallel, so after k steps every block holds
    ``min(k, n_j)`` committed slots: the same number in every full block of an utterance (the
    paper: "at any given point, there is an equal number of tokens per block"). The mask is one
    such state: k ~ U{0, ..., bs-1} once per utterance, and in every block ``n_j - min(k, n_j)``
    frames, chosen uniformly, are masked. A full block therefore has m ~ U{1..bs} masked and is
    never fully observed; the all-masked first state is trained with probability 1/bs; a short
    last block may already be complete, as in decoding. (Drawing m independently per block,
    the previous rule, concentrates the masked fraction of an utterance near 0.56 and almost
    never shows the all-masked canvas decoding starts from; docs/imputer_deletions.md.)

    Args:
        lengths (Tensor): shape `(B,)`, valid frames.
        block_size (int): frames per block.
        max_len (int, optional): T of the output (default ``lengths.max()``).
        generator (torch.Generator, optional): random source.

    Returns:
        Tensor: shape `(B, T)`, bool, True = masked; padding is never masked.
    """
    frames, valid = _frames(lengths, max_len)
    num_frames = frames.numel()
    num_blocks = -(-num_frames // block_size)
    pad = num_blocks * block_size - num_frames
    blocks = torch.nn.functional.pad(valid, (0, pad)).view(-1, num_blocks, block_size)  # (B, J, bs)
    block_len = blocks.sum(-1)  # (B, J)
    steps_done = (_rand(lengths.shape, lengths.device, generator) * block_size).floor().long()  # (B,) U{0..bs-1}
    num_masked = block_len - torch.minimum(steps_done[:, None], block_len)  # (B, J)
    rank = _rank_among_valid(blocks, generator)  # (B, J, bs)
    mask = rank < num_masked[..., None]
    return mask.view(-1, num_blocks * block_size)[:, :num_frames] & valid


def bernoulli_mask(
    lengths: Tensor,
    p: float | None = None,
    max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Bernoulli policy: every valid frame masked independently with probability p.

    Args:
        lengths (Tensor): shape `(B,)`, valid frames.
        p (float, optional): mask probability; None draws p ~ U(0, 1) per utterance.
        max_len (int, optional): T of the output (default ``lengths.max()``).
        generator (torch.Generator, optional): random source.

    Returns:
        Tensor: shape `(B, T)`, bool, True = masked; padding is never masked.
    """
    _, valid = _frames(lengths, max_len)
    if p is None:
        prob = _rand((valid.shape[0], 1), lengths.device, generator)  # (B, 1)
    else:
        prob = torch.full((valid.shape[0], 1), float(p), device=lengths.device)
    return (_rand(valid.shape, lengths.device, generator) < prob) & valid


def uniform_mask(
    lengths: Tensor,
    max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniform policy: n ~ U{0, ..., length} frames masked, at uniformly random positions.

    Args:
        lengths (Tensor): shape `(B,)`, valid frames.
        max_len (int, optional): T of the output (default ``lengths.max()``).
        generator (torch.Generator, optional): random source.

    Returns:
        Tensor: shape `(B, T)`, bool, True = masked; padding is never masked.
    """
    _, valid = _frames(lengths, max_len)
    draws = _rand(lengths.shape, lengths.device, generator)
    num_masked = (draws * (lengths + 1)).floor().clamp(max=lengths)  # (B,)
    return _rank_among_valid(valid, generator) < num_masked[:, None]


MASKING_POLICIES: dict[str, Callable[..., Tensor]] = {
    "block": block_mask,
    "bernoulli": bernoulli_mask,
    "uniform": uniform_mask,
}
"""Masking policies by name; each is ``fn(lengths, ..., max_len=, generator=) -> (B, T) bool``."""


def rollin(
    align: Tensor,
    lengths: Tensor,
    policy: str = "block",
    max_shift: int = 1,
    blank: int = 0,
    generator: torch.Generator | None = None,
    **policy_options,
) -> tuple[Tensor, Tensor]:
    """One roll-in sample: shift the expert alignment, then draw a mask.

    Args:
        align (Tensor): shape `(B, T)`, expert alignments (blank-padded).
        lengths (Tensor): shape `(B,)`, valid frames.
        policy (str): a key of ``MASKING_POLICIES``.
        max_shift (int): shift noise, see ``shift_alignment`` (0 disables it).
        blank (int): blank id.
        generator (torch.Generator, optional): random source.
        **policy_options: forwarded to the policy, e.g. ``block_size=8`` for ``"block"``
            (its default) or ``p=0.5`` for ``"bernoulli"``.

    Returns:
        noisy_align (Tensor): shape `(B, T)`, the shifted alignment (the IM target, and the
            source of observed tokens for DP).
        mask (Tensor): shape `(B, T)`, bool, True = masked; never True on padding.

    The model input is ``fill_masked(noisy_align, mask, mask_id)``; the DP loss's
    ``observed`` is ``fill_masked(noisy_align, mask, -1)``.
    """
    if policy not in MASKING_POLICIES:
        raise KeyError(f"unknown masking policy {policy!r}; valid: {', '.join(MASKING_POLICIES)}")
    noisy = shift_alignment(align, lengths, max_shift, blank, generator) if max_shift else align
    mask = MASKING_POLICIES[policy](lengths, max_len=align.shape[1], generator=generator,
                                    **policy_options)
    return noisy, mask


def fill_masked(align: Tensor, mask: Tensor, value: int) -> Tensor:
    """``align`` with ``value`` at masked frames.

    Args:
        align (Tensor): shape `(B, T)`.
        mask (Tensor): shape `(B, T)`, bool, True = masked.

    Returns:
        Tensor: shape `(B, T)`.
    """
    return align.masked_fill(mask, value)
