"""Best-path (Viterbi) CTC alignment.

Legend: B batch, T frames, V vocabulary incl. blank, U padded target length,
L = 2U + 1 extended-label states.

The extended label sequence of a target y_1..y_U is ``(∅, y_1, ∅, y_2, ..., y_U, ∅)``
(state s is blank for even s, y_{(s+1)/2} for odd s). A CTC alignment is a monotone walk
over these states, one state per frame, that starts in state 0 or 1 and ends in state
2U or 2U-1; from state s it may stay (s), advance (s+1), or skip a blank (s+2) when s+2
is a label different from the label at s. The Viterbi recursion is the max-product one:

    δ_t(s) = lp[t, ext_s] + max(δ_{t-1}(s), δ_{t-1}(s-1), δ_{t-1}(s-2) if skip allowed)

with backpointers, run for all utterances at once (a loop over T only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tensors import lengths_to_valid_mask

__all__ = ["ctc_viterbi"]


def _extended_labels(targets: Tensor, target_lengths: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """Blank-interleaved labels and where the skip transition s-2 -> s is allowed.

    Args:
        targets (Tensor): shape `(B, U)`.
        target_lengths (Tensor): shape `(B,)`.

    Returns:
        ext (Tensor): shape `(B, 2S+1)`, class id of each state (padding labels -> blank).
        can_skip (Tensor): shape `(B, 2S+1)`, bool.
    """
    batch, max_labels = targets.shape
    valid = lengths_to_valid_mask(target_lengths, max_labels)
    labels = torch.where(valid, targets, blank)  # (B, U)
    ext = torch.full((batch, 2 * max_labels + 1), blank, dtype=torch.long, device=targets.device)
    ext[:, 1::2] = labels
    can_skip = torch.zeros_like(ext, dtype=torch.bool)
    can_skip[:, 3::2] = labels[:, 1:] != labels[:, :-1]  # label state, differs from previous label
    return ext, can_skip


@torch.no_grad()
def ctc_viterbi(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
) -> Tensor:
    """Most probable CTC alignment of each target (max over alignments of Σ_t lp[t, a_t]).

    Args:
        log_probs (Tensor): shape `(B, T, V)`, log-probabilities, batch-first.
        targets (Tensor): shape `(B, U)`, label ids (no blank); entries past
            ``target_lengths`` are ignored.
        input_lengths (Tensor): shape `(B,)`, valid frames per utterance.
        target_lengths (Tensor): shape `(B,)`, valid labels per utterance.
        blank (int): blank class id.

    Returns:
        Tensor: shape `(B, T)`, int64 alignment; it collapses (:func:`asr_zoo.decoding.ctc.collapse_ctc`) to the target.
        Frames at or past ``input_lengths`` hold ``blank``. Ties go to the smaller state
        jump (stay, then advance, then skip).

    Raises:
        ValueError: when an utterance has no alignment (T shorter than U + repeats, or every
            alignment has probability 0); the message lists the batch indices.
    """
    assert log_probs.ndim == 3, log_probs.shape
    batch, num_frames, _ = log_probs.shape
    device, neg_inf = log_probs.device, float("-inf")
    if num_frames == 0:
        if (target_lengths > 0).any():
            raise ValueError("no CTC alignment exists: T = 0 frames for a non-empty target")
        return torch.empty(batch, 0, dtype=torch.long, device=device)
    ext, can_skip = _extended_labels(targets, target_lengths, blank)  # (B, L)
    num_states = ext.shape[1]
    emit = log_probs.gather(2, ext[:, None, :].expand(-1, num_frames, -1))  # (B, T, L)

    # Right-align every utterance so that all of them end at frame T-1 and no per-frame
    # length test is needed: the `offset` frames before an utterance starts emit 0 in
    # state 0 and -inf elsewhere, which keeps δ at the virtual start (state 0, score 0).
    offset = (num_frames - input_lengths)[:, None]  # (B, 1)
    source = torch.arange(num_frames, device=device) - offset  # (B, T)
    before_start = source < 0
    emit = emit.gather(1, source.clamp(min=0)[..., None].expand(-1, -1, num_states))
    start_row = torch.full((num_states,), neg_inf, dtype=emit.dtype, device=device)
    start_row[0] = 0.0
    emit = torch.where(before_start[..., None], start_row, emit).transpose(0, 1).contiguous()
    # emit: (T, B, L), right-aligned

    skip_penalty = torch.where(can_skip, 0.0, neg_inf).to(emit.dtype)  # (B, L)
    # δ lives in padded[:, 2:]; padded[:, 1:-1] is δ(s-1) and padded[:, :-2] is δ(s-2).
    padded = torch.full((batch, num_states + 2), neg_inf, dtype=emit.dtype, device=device)
    padded[:, 2] = 0.0  # δ_{-1}: the virtual start
    delta = padded[:, 2:]  # (B, L) view, updated in place
    jumps = []  # per frame, (B, L) uint8: 0 stay, 1 advance, 2 skip
    for t in range(num_frames):
        # element-wise max/compare instead of stack + max(dim): tiny reductions get split
        # across threads and are much slower on a busy multi-threaded CPU
        stay, advance = padded[:, 2:], padded[:, 1:-1]
        skip = padded[:, :-2] + skip_penalty
        best = torch.maximum(stay, advance)
        jump = (advance > stay).to(torch.uint8)  # ties: the smaller jump
        jump.masked_fill_(skip > best, 2)
        torch.maximum(best, skip, out=delta)
        delta.add_(emit[t])
        jumps.append(jump)
    score = delta  # (B, L): δ_{T-1}

    last = (2 * target_lengths)[:, None]  # (B, 1): final blank state 2U
    end_on_label = score.gather(1, (last - 1).clamp(min=0))  # state 2U-1 (none when U = 0)
    end_on_label = end_on_label.masked_fill(last == 0, neg_inf)
    end_scores = torch.cat([score.gather(1, last), end_on_label], 1)  # (B, 2)
    best_end, which = end_scores.max(1)  # (B,)
    bad = torch.isinf(best_end) & (best_end < 0)
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"no CTC alignment exists for batch indices {idx}: input_lengths "
            f"{input_lengths[bad].tolist()} vs target_lengths {target_lengths[bad].tolist()} "
            "(T must be >= U + number of repeated adjacent labels)"
        )

    state = last - which[:, None]  # (B, 1): end state
    states = [state] * num_frames
    for t in range(num_frames - 1, 0, -1):
        state = state - jumps[t].gather(1, state)  # state at frame t-1
        states[t - 1] = state
    path = ext.gather(1, torch.cat(states, 1))  # (B, T), right-aligned
    # undo the right-alignment: frame t of the utterance is frame t + offset of the path
    frames = torch.arange(num_frames, device=device)
    alignment = path.gather(1, (frames + offset).clamp(max=num_frames - 1))
    alignment = alignment.masked_fill(frames >= input_lengths[:, None], blank)
    return alignment
