"""CTC decoding: batched greedy and prefix beam search.

Legend: B batch, T frames, V vocabulary incl. blank.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

from ..tensors import lengths_to_valid_mask

__all__ = ["ctc_greedy_decode", "ctc_prefix_beam_search", "collapse_ctc"]


def collapse_ctc(frames: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """CTC collapse, batched: merge repeats, then drop blanks (the one implementation, used by
    decoding, alignment checks and the Imputer).

    Args:
        frames (Tensor): shape `(B, T)` frame-level token ids (alignments or argmaxes).
        lengths (Tensor): shape `(B,)` valid frames; frames past it are ignored.

    Returns:
        list[list[int]]: the label sequence of each utterance.

    >>> collapse_ctc(torch.tensor([[0, 3, 3, 0, 3, 5, 0]]), torch.tensor([7]))
    [[3, 3, 5]]
    """
    prev = torch.nn.functional.pad(frames, (1, 0), value=-1)[:, :-1]
    keep = (frames != prev) & (frames != blank) & lengths_to_valid_mask(lengths, frames.shape[1])
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
