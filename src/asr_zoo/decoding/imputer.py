"""Imputer iterative decoding (Chan et al., 2020, §2.3 and §4.1-4.4).

Legend: B batch, T frames, V vocabulary incl. blank, bs block size.

Decoding starts from an all-MASK alignment. Each iteration calls the model once on the
current partial alignment, takes every slot's argmax token and its confidence (the max
log-probability), and commits some still-masked slots; committed slots never change.
Block strategies cut the valid frames ``[0, length)`` of each utterance into blocks
``[j·bs, (j+1)·bs)`` (the last one may be shorter) and commit, in every block, the most
confident *eligible* masked slot per iteration:

- ``default``: every masked slot is eligible.
- ``alternate_subblock``: a block is split into a left sub-block (its first ceil(bs/2)
  slots) and a right one (the rest). Iterations are counted from 0; on even iterations only
  left slots are eligible, on odd ones only right slots.
- ``rightmost_last``: the right-most slot of a block (its last valid slot) is eligible only
  once it is the block's last masked slot, so it is committed at the block's last iteration.

A full block is then finished after exactly bs iterations, so decoding takes ``bs`` model
calls (fewer only when every utterance is shorter than what bs iterations fill).

``topk`` ignores blocks: each iteration commits the k = ceil(length / bs) most confident
masked slots of the utterance, never two adjacent slots in the same iteration. Slots are
taken greedily in order of confidence (ties: lower index first), skipping a slot whose
neighbour was already taken in this iteration. Because of that rule an iteration can commit
fewer than k slots, so ``topk`` takes at least ceil(length / k) ≈ bs iterations and
possibly a few more; the number actually run is returned.

``block_size == 1`` is one-shot decoding for every strategy: one model call, every slot its
argmax (CTC-like); the neighbour rule of ``topk`` is waived there.

``blank_penalty`` p (default 0) is subtracted from every slot's blank log-probability before
each iteration's argmax, so a blank is chosen, and ranks by confidence, only where it beats the
best token by more than p nats: p > 0 trades deletions for insertions (``docs/imputer_deletions.md``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


__all__ = ["imputer_decode", "DECODING_STRATEGIES"]

StepFn = Callable[[Tensor], Tensor]


def _default(masked: Tensor, pos: Tensor, block_len: Tensor, masked_in_block: Tensor,
             iteration: int, block_size: int) -> Tensor:
    return masked


def _alternate_subblock(masked, pos, block_len, masked_in_block, iteration, block_size):
    left = pos < (block_size + 1) // 2  # (T,)
    return masked & (left if iteration % 2 == 0 else ~left)


def _rightmost_last(masked, pos, block_len, masked_in_block, iteration, block_size):
    rightmost = pos == block_len - 1  # (B, T)
    return masked & (~rightmost | (masked_in_block == 1))


# Eligibility rules of the block strategies: rule(masked (B,T), pos (T,) slot index in its
# block, block_len (B,T) valid slots of the slot's block, masked_in_block (B,T) masked slots
# left in the slot's block, iteration, block_size) -> eligible (B,T) bool.
_BLOCK_RULES = {
    "default": _default,
    "alternate_subblock": _alternate_subblock,
    "rightmost_last": _rightmost_last,
}

DECODING_STRATEGIES = (*_BLOCK_RULES, "topk")
"""Names accepted by ``imputer_decode(strategy=...)``."""


def _to_blocks(x: Tensor, block_size: int, fill) -> Tensor:
    """`(B, T)` -> `(B, J, bs)`, J = ceil(T / bs), right-padded with ``fill``."""
    pad = -x.shape[1] % block_size
    return F.pad(x, (0, pad), value=fill).view(x.shape[0], -1, block_size)


def _block_commit(conf: Tensor, eligible: Tensor, block_size: int) -> Tensor:
    """The most confident eligible slot of every block (none where no slot is eligible).

    Args:
        conf (Tensor): shape `(B, T)`, confidence per slot.
        eligible (Tensor): shape `(B, T)`, bool.

    Returns:
        Tensor: shape `(B, T)`, bool, at most one True per block.
    """
    num_frames = conf.shape[1]
    scores = _to_blocks(conf.masked_fill(~eligible, float("-inf")), block_size, float("-inf"))
    best = scores.argmax(-1, keepdim=True)  # (B, J, 1)
    has_any = _to_blocks(eligible, block_size, False).any(-1, keepdim=True)  # (B, J, 1)
    commit = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, best, has_any)
    return commit.flatten(1)[:, :num_frames]


def _greedy_non_adjacent(conf: Tensor, candidates: Tensor) -> Tensor:
    """Greedy by confidence over the candidates, never taking two adjacent slots.

    Equal to scanning candidates in descending confidence (ties: lower index first) and
    taking each one whose neighbours are not taken yet; computed in parallel rounds, each
    taking every candidate that beats its remaining candidate neighbours.

    Args:
        conf (Tensor): shape `(B, T)`.
        candidates (Tensor): shape `(B, T)`, bool.

    Returns:
        Tensor: shape `(B, T)`, bool, the taken slots.
    """
    # Unique integer priorities (higher = earlier in the scan): no ties, NaN-proof progress.
    order = conf.argsort(dim=-1, descending=True, stable=True)
    priority = conf.shape[1] - order.argsort(-1)  # (B, T), values 1..T
    taken = torch.zeros_like(candidates)
    left_over = candidates.clone()
    while left_over.any():
        score = priority.masked_fill(~left_over, 0)
        left = F.pad(score[:, :-1], (1, 0))  # left neighbour's priority, 0 = none
        right = F.pad(score[:, 1:], (0, 1))
        peak = left_over & (score > left) & (score > right)
        taken |= peak
        near = peak | F.pad(peak[:, :-1], (1, 0)) | F.pad(peak[:, 1:], (0, 1))
        left_over &= ~near
    return taken


def _topk_commit(conf: Tensor, masked: Tensor, k: Tensor, neighbours_ok: bool) -> Tensor:
    """Up to k per row of the most confident masked slots, non-adjacent unless allowed.

    Args:
        conf (Tensor): shape `(B, T)`.
        masked (Tensor): shape `(B, T)`, bool.
        k (Tensor): shape `(B,)`.

    Returns:
        Tensor: shape `(B, T)`, bool.
    """
    chosen = masked if neighbours_ok else _greedy_non_adjacent(conf, masked)
    order = conf.masked_fill(~chosen, float("-inf")).argsort(dim=-1, descending=True, stable=True)
    rank = order.argsort(-1)  # (B, T): 0 = most confident chosen slot
    return chosen & (rank < k[:, None])


@torch.no_grad()
def imputer_decode(
    step_fn: StepFn,
    lengths: Tensor,
    block_size: int,
    strategy: str = "default",
    *,
    mask_id: int,
    blank: int = 0,
    max_len: int | None = None,
    blank_penalty: float = 0.0,
) -> tuple[Tensor, int]:
    """Iterative Imputer decoding: B iterations of "commit one slot per block".

    Args:
        step_fn (Callable): the model call, ``step_fn(alignment) -> log_probs`` with
            ``alignment`` of shape `(B, T)` (int64; ``mask_id`` at masked slots, ``blank``
            at padding) and ``log_probs`` of shape `(B, T, V)`.
        lengths (Tensor): shape `(B,)`, valid frames per utterance.
        block_size (int): bs, may differ from the training block size; 1 = one-shot.
        strategy (str): one of ``DECODING_STRATEGIES`` (see the module docstring).
        mask_id (int): id of the MASK token in the alignment vocabulary of the model input.
        blank (int): blank id; also written at padding slots, which are never touched.
        max_len (int, optional): T (default ``lengths.max()``).
        blank_penalty (float): subtracted from log p(blank) of every slot before the argmax and
            the confidence ranking (0: the model's own scores).

    Returns:
        alignment (Tensor): shape `(B, T)`, int64, every valid slot committed.
        steps (int): model calls made: ``block_size`` for block strategies (fewer only when
            no utterance has that many slots to fill), >= ceil(length/k) for ``topk``.

    >>> def step_fn(a):  # a model that ignores its input
    ...     return torch.tensor([[[0.0, -1.0], [-2.0, -0.1], [-0.5, -3.0]]]).expand(len(a), -1, -1)
    >>> imputer_decode(step_fn, torch.tensor([3, 2]), 2, mask_id=5)
    (tensor([[0, 1, 0],
            [0, 1, 0]]), 2)
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if strategy not in DECODING_STRATEGIES:
        raise KeyError(f"unknown strategy {strategy!r}; valid: {', '.join(DECODING_STRATEGIES)}")
    num_frames = int(lengths.max()) if max_len is None else max_len
    frames = torch.arange(num_frames, device=lengths.device)
    valid = frames < lengths[:, None]  # (B, T)
    alignment = torch.full(valid.shape, mask_id, dtype=torch.long, device=lengths.device)
    alignment = alignment.masked_fill(~valid, blank)
    masked = valid.clone()

    pos = frames % block_size  # (T,) slot index inside its block
    block_len = (lengths[:, None] - (frames - pos)).clamp(max=block_size)  # (B, T)
    k = -(-lengths // block_size)  # (B,) ceil(length / bs), for topk
    steps = 0
    while masked.any():
        log_probs = step_fn(alignment)  # (B, T, V)
        if blank_penalty:
            log_probs = log_probs.clone()
            log_probs[..., blank] -= blank_penalty
        conf, token = log_probs.max(-1)  # (B, T) each
        if block_size == 1:
            commit = masked
        elif strategy == "topk":
            commit = _topk_commit(conf, masked, k, neighbours_ok=False)
        else:
            masked_in_block = _to_blocks(masked, block_size, False).sum(-1)  # (B, J)
            masked_in_block = masked_in_block.repeat_interleave(block_size, 1)[:, :num_frames]
            eligible = _BLOCK_RULES[strategy](masked, pos, block_len, masked_in_block, steps,
                                              block_size)
            commit = _block_commit(conf, eligible, block_size)
        alignment = torch.where(commit, token, alignment)
        masked &= ~commit
        steps += 1
    return alignment, steps
