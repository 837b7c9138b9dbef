"""RNN-T decoding: batched greedy search and modified (one symbol per frame) beam search.

Legend: B batch, T encoder frames, N hypotheses scored together, J joint dim, V vocabulary
incl. blank.

Both decoders are pure functions of two callables, so any predictor / joiner pair (or a fake one
in a test) plugs in:

- ``predict(tokens (N,) int, state) -> (pred (N, J), state)``: one prediction-network step on the
  last emitted token (``blank`` is the start symbol, sent once with ``state=None``). ``state`` is a
  tuple of batch-first tensors `(N, ...)`; decoders select, stack and cache its rows.
- ``join(enc (N, J), pred (N, J)) -> logits (N, V)``: the joint network on one frame per hypothesis.

``enc`` is the encoder output already mapped into the joiner's input space (for
:class:`asr_zoo.nn.transducer.Joiner`: ``joiner.encoder_proj(enc)``, and ``predict`` returns
``joiner.predictor_proj(out)``), so nothing is projected twice.

``steps`` counts prediction-network evaluations per utterance (the start symbol included): the
autoregressive cost, comparable to the decoder steps of seq2seq. The joiner runs once more per
frame than that and is not counted.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["RNNTHypotheses", "rnnt_greedy_decode", "rnnt_greedy_decode_reference", "rnnt_beam_search", "PredictFn",
           "JoinFn"]

PredictFn = Callable[[Tensor, Optional[tuple]], tuple[Tensor, tuple]]
JoinFn = Callable[[Tensor, Tensor], Tensor]


class RNNTHypotheses(NamedTuple):
    """Decoder output, one entry per utterance."""

    tokens: list[list[int]]  # emitted token ids (blank never appears)
    frames: list[list[int]]  # encoder frame at which each token was emitted
    scores: list[float]  # log-probability of the returned hypothesis (see each decoder)
    steps: list[int]  # prediction-network evaluations


def rnnt_greedy_decode(enc: Tensor, lengths: Tensor, predict: PredictFn, join: JoinFn, blank: int = 0,
                       max_symbols_per_frame: int = 3, lookahead: int = 8) -> RNNTHypotheses:
    """Greedy search by label looping, batched: the same hypotheses as
    :func:`rnnt_greedy_decode_reference`, with far fewer predictor calls and Python steps.

    Every utterance keeps its own frame pointer ``t_b``; one iteration looks for the next label of
    every utterance at once. The predictor output is fixed until a label is emitted, so the joiner
    scores the next ``lookahead`` frames of every unfinished utterance in one call
    `(N*W, J) -> (N, W, V)`:
    the first frame whose argmax is not blank holds the label, and the blanks before it just move
    ``t_b`` on (their log-probabilities are added to the score); a window of blanks moves it by W.
    Then the predictor runs once for all utterances that found a label, and no utterance waits for
    another. So a batch takes about ``max_b (U_b + blank runs_b)`` iterations and predictor calls
    instead of one per frame plus one per frame with an emission, and nothing loops over
    utterances in Python. ``max_symbols_per_frame`` is applied as in the reference: after that
    many labels in one frame the utterance moves to the next frame without a blank.

    Args:
        enc (Tensor): shape `(B, T, J)`, projected encoder output.
        lengths (Tensor): shape `(B,)`, valid frames per utterance.
        predict, join: see the module docstring (``join`` gets `(N*W, J)` window rows).
        blank (int): blank id, also the start symbol. (Default: 0)
        max_symbols_per_frame (int): at least 1. (Default: 3)
        lookahead (int): frames W scored per joiner call while looking for the next label; any
            value gives the same hypotheses. (Default: 8)

    Returns:
        RNNTHypotheses: as :func:`rnnt_greedy_decode_reference` (scores equal up to float
        summation order).
    """
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")
    B, T, _ = enc.shape
    device = enc.device
    lengths = lengths.to(device).long()
    pred, state = predict(torch.full((B,), blank, dtype=torch.long, device=device), None)  # (B, J)
    t = torch.zeros(B, dtype=torch.long, device=device)  # frame pointer
    in_frame = torch.zeros(B, dtype=torch.long, device=device)  # labels emitted in frame t
    count = torch.zeros(B, dtype=torch.long, device=device)  # labels emitted so far
    scores = torch.zeros(B, dtype=torch.float32, device=device)
    capacity = T * max_symbols_per_frame
    out_tokens = torch.zeros(B, capacity, dtype=torch.long, device=device)
    out_frames = torch.zeros(B, capacity, dtype=torch.long, device=device)
    window = torch.arange(lookahead, device=device)  # (W,)
    while True:
        act = (t < lengths).nonzero().squeeze(1)  # (N,) utterances still decoding
        N = act.numel()
        if N == 0:
            break
        t_a = t[act]  # (N,)
        frames = t_a[:, None] + window  # (N, W)
        inside = frames < lengths[act, None]  # (N, W)
        enc_w = enc[act[:, None], frames.clamp(max=T - 1)].flatten(0, 1)  # (N*W, J)
        pred_w = pred[act, None].expand(-1, lookahead, -1).flatten(0, 1)  # (N*W, J)
        log_probs = join(enc_w, pred_w).float().log_softmax(-1).view(N, lookahead, -1)  # (N, W, V)
        best_lp, best = log_probs.max(-1)  # (N, W)
        hit = (best != blank) & inside  # (N, W)
        found = hit.any(1)  # (N,) a label in the window
        first = torch.where(found, hit.int().argmax(1), inside.sum(1))  # (N,) label slot, or frames left
        slot = first.clamp(max=lookahead - 1)[:, None]  # (N, 1)
        before = window[None] < first[:, None]  # (N, W): the blanks before the label
        gained = (best_lp * before).sum(1) + torch.where(found, best_lp.gather(1, slot).squeeze(1), 0.0)
        scores.index_add_(0, act, gained)
        in_frame[act] = torch.where(first > 0, 0, in_frame[act])  # a blank ended frame t
        t[act] = t_a + first
        if not bool(found.any()):
            continue
        emit = act[found]  # (E,)
        label = best.gather(1, slot).squeeze(1)[found]  # (E,)
        column = count[emit]
        out_tokens[emit, column] = label
        out_frames[emit, column] = t[emit]
        count[emit] = column + 1
        k = in_frame[emit] + 1
        limit = k >= max_symbols_per_frame  # forced move to the next frame, no blank
        t[emit] += limit.long()
        in_frame[emit] = torch.where(limit, 0, k)
        out, new_state = predict(label, tuple(s[emit] for s in state))
        pred = pred.index_copy(0, emit, out.to(pred.dtype))
        state = tuple(s.index_copy(0, emit, n.to(s.dtype)) for s, n in zip(state, new_state))
    counts = count.tolist()
    tokens, frames_out = out_tokens.tolist(), out_frames.tolist()
    return RNNTHypotheses([tokens[b][:n] for b, n in enumerate(counts)],
                          [frames_out[b][:n] for b, n in enumerate(counts)],
                          scores.tolist(), [n + 1 for n in counts])


def rnnt_greedy_decode_reference(enc: Tensor, lengths: Tensor, predict: PredictFn, join: JoinFn, blank: int = 0,
                                 max_symbols_per_frame: int = 3) -> RNNTHypotheses:
    """Greedy search, frame by frame, batched over utterances: the readable reference of
    :func:`rnnt_greedy_decode` (tests compare the two).

    At each frame every utterance takes the joiner's argmax: a blank moves it to the next frame, a
    token is emitted and the predictor advances (only for the utterances that emitted). After
    ``max_symbols_per_frame`` tokens in one frame the utterance moves on without a blank, which
    bounds the work per frame (runaway emission cannot happen).

    Args:
        enc (Tensor): shape `(B, T, J)`, projected encoder output.
        lengths (Tensor): shape `(B,)`, valid frames per utterance.
        predict, join: see the module docstring.
        blank (int): blank id, also the start symbol. (Default: 0)
        max_symbols_per_frame (int): at least 1. (Default: 3)

    Returns:
        RNNTHypotheses: ``scores`` is the sum of the log-probabilities of the chosen outputs (the
        blanks that ended frames included; a forced move to the next frame adds nothing), so with
        ``max_symbols_per_frame=1`` it is the path score of :func:`rnnt_beam_search`'s topology.
    """
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
    B, T, _ = enc.shape
    pred, state = predict(torch.full((B,), blank, dtype=torch.long, device=enc.device), None)  # (B, J)
    steps = torch.ones(B, dtype=torch.long)
    scores = torch.zeros(B, dtype=torch.float32, device=enc.device)
    tokens: list[list[int]] = [[] for _ in range(B)]
    frames: list[list[int]] = [[] for _ in range(B)]
    lengths = lengths.to(enc.device)
    for t in range(T):
        active = t < lengths  # (B,) still deciding in this frame
        for _ in range(max_symbols_per_frame):
            if not bool(active.any()):
                break
            log_probs = join(enc[:, t], pred).float().log_softmax(-1)  # (B, V)
            best_lp, best = log_probs.max(-1)  # (B,)
            scores += torch.where(active, best_lp, torch.zeros_like(best_lp))
            active = active & (best != blank)  # blanks end the frame
            rows = active.nonzero().squeeze(1)  # (N,) utterances that emit
            if rows.numel() == 0:
                break
            out, new_state = predict(best[rows], tuple(s[rows] for s in state))
            pred = pred.index_copy(0, rows, out.to(pred.dtype))
            state = tuple(s.index_copy(0, rows, n.to(s.dtype)) for s, n in zip(state, new_state))
            for b, k in zip(rows.tolist(), best[rows].tolist()):
                tokens[b].append(k)
                frames[b].append(t)
            steps[rows.cpu()] += 1
    return RNNTHypotheses(tokens, frames, scores.tolist(), steps.tolist())


def rnnt_beam_search(enc: Tensor, lengths: Tensor, predict: PredictFn, join: JoinFn, beam_size: int = 4,
                     blank: int = 0) -> RNNTHypotheses:
    """Modified beam search (k2/icefall ``modified_beam_search``), one utterance at a time.

    Time-synchronous: in every frame each hypothesis either emits blank (keeps its prefix) or
    emits exactly one token (extends it), and all move to the next frame. Hypotheses are keyed by
    their token prefix; when the two ways of reaching a prefix in one frame (a blank from the
    prefix itself, or its last token from its parent) are both in the beam, their probabilities
    are summed before the ``beam_size`` best prefixes are kept. So a hypothesis' score is the
    log of the total probability of its surviving one-symbol-per-frame alignments; with a beam
    that never prunes it is exact, and the search returns the most probable sequence under that
    topology. No length normalisation.

    Predictor outputs and states are cached per prefix, so each distinct prefix is evaluated once
    (``steps`` = number of cached prefixes, the start symbol included), batched over the new
    prefixes of a frame.

    Args:
        enc (Tensor): shape `(B, T, J)`, projected encoder output.
        lengths (Tensor): shape `(B,)`, valid frames per utterance.
        predict, join: see the module docstring.
        beam_size (int): prefixes kept per frame, at least 1. With 1 this is greedy search with
            ``max_symbols_per_frame=1``.
        blank (int): blank id, also the start symbol. (Default: 0)

    Returns:
        RNNTHypotheses: the best prefix of each utterance, its frames and log-probability.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    results = [_beam_search_one(enc[b, :int(lengths[b])], predict, join, beam_size, blank)
               for b in range(enc.shape[0])]
    return RNNTHypotheses(*map(list, zip(*results)))


def _beam_search_one(enc: Tensor, predict: PredictFn, join: JoinFn, beam_size: int, blank: int):
    """One utterance: enc `(T, J)` -> (tokens, frames, score, steps)."""
    start = torch.full((1,), blank, dtype=torch.long, device=enc.device)
    out, state = predict(start, None)
    cache = {(): (out[0], tuple(s[0] for s in state))}  # prefix -> (pred (J,), state rows)
    emitted_at: dict[tuple, tuple] = {(): ()}  # prefix -> frame of each token, on the path that
    # brought it into the beam (a merged, blank-continued prefix keeps its earlier frames)
    hyps: list[tuple] = [()]
    scores = torch.zeros(1, dtype=torch.float32, device=enc.device)  # (K,)
    for t in range(enc.shape[0]):
        K = len(hyps)
        pred = torch.stack([cache[h][0] for h in hyps])  # (K, J)
        log_probs = join(enc[t].expand(K, -1), pred).float().log_softmax(-1)  # (K, V)
        V = log_probs.shape[1]
        cand = scores[:, None] + log_probs  # (K, V): [i, blank] keeps hyps[i], [i, k] extends it
        position = {h: i for i, h in enumerate(hyps)}
        for i, h in enumerate(hyps):  # merge "h by blank" with "parent of h by h[-1]"
            j = position.get(h[:-1]) if h else None
            if j is not None:
                cand[i, blank] = torch.logaddexp(cand[i, blank], cand[j, h[-1]])
                cand[j, h[-1]] = float("-inf")
        top_scores, top_index = cand.flatten().topk(min(beam_size, K * V))
        keep = torch.isfinite(top_scores)
        top_scores, top_index = top_scores[keep], top_index[keep]
        new_hyps, parents, new_tokens = [], [], []
        for flat in top_index.tolist():
            i, k = divmod(flat, V)
            if k == blank:
                new_hyps.append(hyps[i])
            else:
                h = hyps[i] + (k,)
                new_hyps.append(h)
                emitted_at[h] = emitted_at[hyps[i]] + (t,)  # h was not in the beam (else merged)
                if h not in cache:
                    parents.append(hyps[i])
                    new_tokens.append(k)
        if new_tokens:
            states = tuple(torch.stack(rows) for rows in zip(*(cache[p][1] for p in parents)))  # (N, ...)
            out, new_state = predict(torch.tensor(new_tokens, device=enc.device), states)  # (N, J)
            for n, (p, k) in enumerate(zip(parents, new_tokens)):
                cache[p + (k,)] = (out[n], tuple(s[n] for s in new_state))
        hyps, scores = new_hyps, top_scores
    best = int(scores.argmax())
    return list(hyps[best]), list(emitted_at[hyps[best]]), float(scores[best]), len(cache)
