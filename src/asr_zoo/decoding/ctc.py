"""CTC decoding: batched greedy and prefix beam search.

Legend: B batch, T frames, V vocabulary incl. blank.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

__all__ = ["ctc_greedy_decode", "ctc_prefix_beam_search", "collapse_ctc", "ctc_min_frames"]


def ctc_min_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Fewest frames a CTC alignment of each target needs: U + number of adjacent repeats
    (a blank must separate repeated labels).

    Args:
        targets (Tensor): shape `(B, S)`.
        target_lengths (Tensor): shape `(B,)`.

    Returns:
        Tensor: shape `(B,)`, int64.
    """
    pos = torch.arange(1, targets.shape[1], device=targets.device)  # (S-1,)
    repeat = (targets[:, 1:] == targets[:, :-1]) & (pos < target_lengths[:, None])  # (B, S-1)
    return target_lengths + repeat.sum(1)


def collapse_ctc(frames: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Merge repeats and drop blanks of frame labels.

    Args:
        frames (Tensor): shape `(B, T)` frame-level token ids.
        lengths (Tensor): shape `(B,)` valid frames.

    Returns:
        list[list[int]]: the label sequence of each utterance.
    """
    prev = torch.nn.functional.pad(frames, (1, 0), value=-1)[:, :-1]
    valid = torch.arange(frames.shape[1], device=frames.device)[None] < lengths[:, None]
    keep = (frames != prev) & (frames != blank) & valid
    frames, keep = frames.cpu(), keep.cpu()
    return [frames[b][keep[b]].tolist() for b in range(frames.shape[0])]


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best path: per-frame argmax, then collapse. log_probs `(B, T, V)`, lengths `(B,)`."""
    return collapse_ctc(log_probs.argmax(-1), lengths, blank)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def ctc_prefix_beam_search(log_probs: Tensor, lengths: Tensor, beam_size: int = 8, blank: int = 0,
                           token_prune: int = 16) -> list[list[int]]:
    """CTC prefix beam search (Hannun et al. 2014), no language model.

    Each prefix keeps the log-probability of ending in blank and in non-blank; a repeated token
    only extends the prefix when separated by a blank. Only the ``token_prune`` most likely tokens
    of each frame are expanded.

    Args:
        log_probs (Tensor): shape `(B, T, V)` log-softmax outputs.
        lengths (Tensor): shape `(B,)`.
        beam_size (int): prefixes kept per frame.

    Returns:
        list[list[int]]: the best prefix of each utterance.
    """
    lp_all = log_probs.float().cpu()
    k = min(token_prune, lp_all.shape[-1])
    top_lp, top_id = lp_all.topk(k, dim=-1)  # (B, T, k)
    results = []
    for b in range(lp_all.shape[0]):
        beams = {(): (0.0, -math.inf)}  # prefix -> (log p ending in blank, log p ending in non-blank)
        for t in range(int(lengths[b])):
            nxt = defaultdict(lambda: (-math.inf, -math.inf))
            frame = lp_all[b, t]
            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                nb, nnb = nxt[prefix]
                nxt[prefix] = (_logaddexp(nb, total + float(frame[blank])), nnb)
                last = prefix[-1] if prefix else None
                for lp, tok in zip(top_lp[b, t].tolist(), top_id[b, t].tolist()):
                    if tok == blank:
                        continue
                    if tok == last:
                        nb, nnb = nxt[prefix]  # repeat without blank: stays the same prefix
                        nxt[prefix] = (nb, _logaddexp(nnb, pnb + lp))
                        ext = prefix + (tok,)
                        eb, enb = nxt[ext]
                        nxt[ext] = (eb, _logaddexp(enb, pb + lp))
                    else:
                        ext = prefix + (tok,)
                        eb, enb = nxt[ext]
                        nxt[ext] = (eb, _logaddexp(enb, total + lp))
            beams = dict(sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam_size])
        best = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))[0]
        results.append(list(best))
    return results
