"""Seq2seq decoding: batched greedy and beam search, optionally hybrid with a CTC prefix scorer.

Legend: B utterances, K beams, N = B x K hypotheses, T encoder frames, V vocabulary, C candidate
tokens per hypothesis that the CTC prefix scorer looks at.

Conventions shared by both searches:

- Decoding starts from ``<sos>`` (id 1) and a hypothesis ends when it emits ``<eos>`` (the same id).
  ``<blk>`` (id 0) is never proposed. The returned token lists exclude ``<sos>`` and ``<eos>``.
- Utterance ``b`` may emit at most ``max_len = max(1, ceil(max_len_ratio * memory_lens[b]))``
  tokens; at that point every live hypothesis is forced to end (its score keeps the model's own
  ``log p(<eos>)``).
- A score is the sum over the emitted tokens, ``<eos>`` included, of
  ``(1 - ctc_weight) * log p_att(y_u | y_<u, x) + ctc_weight * (log ψ(y_≤u) - log ψ(y_<u))``,
  where ψ is the CTC prefix probability (the CTC probability of the whole sequence for ``<eos>``).
  With ``ctc_weight = 0`` it is the decoder's log-probability of the hypothesis.
- ``steps[b]`` counts the decoder calls made while utterance ``b`` still had a live hypothesis.

Beam search keeps all N hypotheses in one tensor batch. A finished hypothesis stays in its beam,
frozen: its only continuation is itself. Candidates are ranked by ``score / length ** alpha``
(length = emitted tokens incl. ``<eos>``; ``alpha = length_penalty``), the search stops when every
beam of every utterance has ended, and the best normalised hypothesis is returned. Every score
increment is <= 0 (log-probabilities; CTC prefix probabilities only shrink as the prefix grows),
so a live hypothesis can reach at most ``score / (max_len + 1) ** alpha``; one whose bound is below
its utterance's best finished hypothesis is dropped (it and its extensions cannot win), which ends
the search early without changing which hypotheses can be returned.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.tokenizer import BLANK_ID, SOS_EOS_ID
from ..nn.decoder import TransformerDecoder
from ..tensors import lengths_to_padding_mask, lengths_to_valid_mask

__all__ = ["CTCPrefixScorer", "beam_search", "greedy_search", "max_lengths", "sequence_log_prob"]

NEG_INF = float("-inf")


def max_lengths(memory_lens: Tensor, max_len_ratio: float) -> Tensor:
    """Token budget per utterance, ``max(1, ceil(ratio * T_b))``. memory_lens `(B,)` -> `(B,)` int64."""
    return torch.ceil(memory_lens.double() * max_len_ratio).long().clamp(min=1)


class _Stepper:
    """Next-token log-probabilities `(N, V)` for N hypotheses, through the decoder's cache or by
    recomputing the whole prefix every step (``use_cache=False``, the reference / benchmark path)."""

    def __init__(self, decoder: TransformerDecoder, memory: Tensor, memory_lens: Tensor, use_cache: bool):
        self.decoder, self.memory, self.memory_lens, self.use_cache = decoder, memory, memory_lens, use_cache
        self.state = decoder.init_state(memory, memory_lens) if use_cache else None
        self.prefix = memory.new_zeros(memory.shape[0], 0, dtype=torch.long)

    def __call__(self, tokens: Tensor) -> Tensor:
        if self.use_cache:
            logits, self.state = self.decoder.step(tokens, self.state)
        else:
            self.prefix = torch.cat([self.prefix, tokens[:, None]], 1)  # (N, L)
            lens = self.prefix.new_full((self.prefix.shape[0],), self.prefix.shape[1])
            logits = self.decoder(self.prefix, lens, self.memory, self.memory_lens)[:, -1]
        log_probs = logits.float().log_softmax(-1)
        log_probs[:, BLANK_ID] = NEG_INF
        return log_probs

    def select(self, index: Tensor) -> None:
        if self.use_cache:
            self.state = self.state.select(index)
        else:
            self.prefix = self.prefix.index_select(0, index)


def _force_end(log_probs: Tensor, force: Tensor) -> Tensor:
    """Rows where ``force`` `(N,)` is True may only emit ``<eos>``. log_probs `(N, V)`."""
    only_eos = torch.full_like(log_probs, NEG_INF)
    only_eos[:, SOS_EOS_ID] = log_probs[:, SOS_EOS_ID]
    return torch.where(force[:, None], only_eos, log_probs)


@torch.no_grad()
def greedy_search(decoder: TransformerDecoder, memory: Tensor, memory_lens: Tensor, max_len_ratio: float = 1.0,
                  use_cache: bool = True) -> tuple[list[list[int]], Tensor, list[int]]:
    """Batched greedy decoding (argmax token every step).

    Args:
        decoder (TransformerDecoder): in eval mode.
        memory (Tensor): shape `(B, T, D)` encoder output.
        memory_lens (Tensor): shape `(B,)` valid frames (>= 1).
        max_len_ratio (float): token budget per encoder frame (see module docstring).
        use_cache (bool): incremental decoding (True) or full recomputation of the prefix every step.

    Returns:
        tuple: token ids per utterance, scores `(B,)` (float32), decoder steps per utterance.
    """
    B = memory.shape[0]
    budget = max_lengths(memory_lens, max_len_ratio)
    stepper = _Stepper(decoder, memory, memory_lens, use_cache)
    tokens = memory_lens.new_full((B,), SOS_EOS_ID)
    ended = torch.zeros(B, dtype=torch.bool, device=memory.device)
    scores = memory.new_zeros(B, dtype=torch.float32)
    steps = torch.zeros(B, dtype=torch.long)
    out = []
    for t in range(int(budget.max()) + 1):
        log_probs = _force_end(stepper(tokens), budget <= t)  # (B, V)
        best, tokens = log_probs.max(-1)
        scores += torch.where(ended, 0.0, best)
        steps += (~ended).long().cpu()
        tokens = tokens.masked_fill(ended, SOS_EOS_ID)
        out.append(tokens)
        ended = ended | (tokens == SOS_EOS_ID)
        if bool(ended.all()):
            break
    out = torch.stack(out, 1).cpu()  # (B, L)
    hyps = [row[: int((row == SOS_EOS_ID).nonzero()[0])].tolist() for row in out]
    return hyps, scores, steps.tolist()


class CTCPrefixScorer:
    """Vectorised CTC prefix scores ψ of candidate extensions, for N hypotheses at once.

    For a prefix h the state is the forward variables over frames t of the CTC lattice:
    ``r_t^n(h)`` (paths over frames ``0..t`` that output h and end in its last token) and
    ``r_t^b(h)`` (... and end in blank). Extending h by a token c (Watanabe et al. 2017, Alg. 2)::

        φ_t      = r_t^b(h) + (r_t^n(h) if c != last(h) else 0)        (in probability space)
        r_t^n(h+c) = (r_{t-1}^n(h+c) + φ_{t-1}) · p_t(c)
        r_t^b(h+c) = (r_{t-1}^n(h+c) + r_{t-1}^b(h+c)) · p_t(blank)
        ψ(h+c)   = Σ_t φ_{t-1} · p_t(c)          (φ_{-1} = 1 for the empty prefix, else 0)
        ψ(h+eos) = r_{T-1}^n(h) + r_{T-1}^b(h)   (the CTC probability of exactly h)

    ψ(h) is the probability that the CTC output starts with h. Frames beyond an utterance's
    length are replaced by certain blanks, which leaves every quantity above unchanged.

    Args:
        log_probs (Tensor): shape `(N, T, V)` CTC log-softmax outputs, one row per hypothesis.
        lengths (Tensor): shape `(N,)` valid frames.
        blank (int): the blank id. eos (int): the end-of-sentence id (scored as the end).
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int = BLANK_ID, eos: int = SOS_EOS_ID):
        N, T, V = log_probs.shape
        pad = lengths_to_padding_mask(lengths, T)  # (N, T)
        certain_blank = torch.full((V,), NEG_INF, dtype=log_probs.dtype, device=log_probs.device)
        certain_blank[blank] = 0.0
        x = torch.where(pad[..., None], certain_blank, log_probs)
        self.x = x.transpose(0, 1).contiguous()  # (T, N, V)
        self.blank, self.eos = blank, eos
        r_b = self.x[:, :, blank].cumsum(0)  # (T, N): the empty prefix is all blanks
        self.r = torch.stack([torch.full_like(r_b, NEG_INF), r_b], -1)  # (T, N, 2): [r^n, r^b]
        self.psi = log_probs.new_zeros(N)  # (N,)
        self.last = torch.full((N,), -1, dtype=torch.long, device=log_probs.device)
        self.empty = True
        self._pending = None

    def score(self, candidates: Tensor) -> Tensor:
        """Incremental CTC scores ``log ψ(h+c) - log ψ(h)`` of candidate tokens.

        Args:
            candidates (Tensor): shape `(N, C)` token ids (``eos`` scores the end of the sequence).

        Returns:
            Tensor: shape `(N, C)`; -inf where the extension is impossible under CTC.
        """
        T, N, _ = self.x.shape
        C = candidates.shape[1]
        xc = self.x.gather(2, candidates[None].expand(T, N, C))  # (T, N, C)
        r_sum = torch.logaddexp(self.r[..., 0], self.r[..., 1])  # (T, N)
        phi = torch.where(candidates[None] == self.last[None, :, None],
                          self.r[..., 1:2], r_sum[..., None])  # (T, N, C)
        r_n = torch.empty_like(xc)
        r_b = torch.empty_like(xc)
        r_n[0] = xc[0] if self.empty else NEG_INF
        r_b[0] = NEG_INF
        x_blank = self.x[:, :, self.blank, None]  # (T, N, 1)
        for t in range(1, T):
            r_n[t] = torch.logaddexp(r_n[t - 1], phi[t - 1]) + xc[t]
            r_b[t] = torch.logaddexp(r_n[t - 1], r_b[t - 1]) + x_blank[t]
        psi = torch.logsumexp(torch.cat([r_n[:1], phi[:-1] + xc[1:]], 0), 0)  # (N, C)
        psi = torch.where(candidates == self.eos, r_sum[-1, :, None], psi)
        self._pending = (candidates, torch.stack([r_n, r_b], -1), psi)  # (N, C), (T, N, C, 2), (N, C)
        delta = psi - self.psi[:, None]
        return torch.where(psi == NEG_INF, NEG_INF, delta)

    def advance(self, source: Tensor, tokens: Tensor) -> None:
        """Move to the extended prefixes: hypothesis i becomes ``source[i]`` + ``tokens[i]``, where
        ``tokens[i]`` is among the candidates last passed to :meth:`score` for ``source[i]``.

        Args:
            source (Tensor): shape `(N,)` int64. tokens (Tensor): shape `(N,)` int64.
        """
        candidates, r, psi = self._pending
        slot = (candidates[source] == tokens[:, None]).long().argmax(-1)  # (N,)
        self.r = r[:, source, slot]  # (T, N, 2)
        self.psi = psi[source, slot]
        self.last, self.empty, self._pending = tokens, False, None


@torch.no_grad()
def beam_search(decoder: TransformerDecoder, memory: Tensor, memory_lens: Tensor, beam_size: int = 4,
                length_penalty: float = 1.0, max_len_ratio: float = 1.0, ctc_log_probs: Tensor | None = None,
                ctc_weight: float = 0.0, ctc_candidates: int = 8, use_cache: bool = True,
                ) -> tuple[list[list[int]], Tensor, list[int]]:
    """Batched beam search over all utterances x beams at once, optionally hybrid CTC/attention.

    Args:
        decoder (TransformerDecoder): in eval mode.
        memory (Tensor): shape `(B, T, D)` encoder output.
        memory_lens (Tensor): shape `(B,)` valid frames (>= 1).
        beam_size (int): K.
        length_penalty (float): alpha in ``score / length ** alpha`` (0 = raw scores).
        max_len_ratio (float): token budget per encoder frame (see module docstring).
        ctc_log_probs (Tensor or None): shape `(B, T, V)` CTC log-probabilities (hybrid decoding).
        ctc_weight (float): weight of the CTC prefix score (used when ``ctc_log_probs`` is given).
        ctc_candidates (int): C, the tokens per hypothesis that CTC scores: ``<eos>`` and the
            attention's top C-1 others (the remaining tokens are not considered). ``<eos>`` is always
            a candidate so that a prefix CTC still allows can always end.
        use_cache (bool): incremental decoding (True) or full recomputation of the prefix every step.

    Returns:
        tuple: best token ids per utterance, their (unnormalised) scores `(B,)`, decoder steps per
        utterance.
    """
    if not 0.0 <= ctc_weight < 1.0:
        raise ValueError(f"ctc_weight={ctc_weight} must be in [0, 1)")
    B, K, device = memory.shape[0], beam_size, memory.device
    N = B * K
    memory, memory_lens = memory.repeat_interleave(K, 0), memory_lens.repeat_interleave(K, 0)
    budget = max_lengths(memory_lens, max_len_ratio)  # (N,)
    stepper = _Stepper(decoder, memory, memory_lens, use_cache)
    ctc = None
    if ctc_log_probs is not None and ctc_weight > 0:
        ctc = CTCPrefixScorer(ctc_log_probs.float().repeat_interleave(K, 0), memory_lens)
    scores = torch.full((B, K), NEG_INF, device=device)
    scores[:, 0] = 0.0  # one live hypothesis per utterance at the start
    scores = scores.view(N)
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    ended = torch.zeros(N, dtype=torch.bool, device=device)
    history = torch.zeros(N, 0, dtype=torch.long, device=device)
    tokens = torch.full((N,), SOS_EOS_ID, dtype=torch.long, device=device)
    steps = torch.zeros(B, dtype=torch.long)
    offsets = torch.arange(B, device=device)[:, None] * K  # (B, 1)
    for t in range(int(budget.max()) + 1):
        steps += (~ended).view(B, K).any(1).long().cpu()
        log_probs = _force_end(stepper(tokens), budget <= t)  # (N, V)
        V = log_probs.shape[1]
        if ctc is not None:
            eos_first = log_probs.index_fill(1, torch.tensor([SOS_EOS_ID], device=device), float("inf"))
            top = eos_first.topk(min(ctc_candidates, V), -1).indices  # (N, C): <eos> + top C-1 tokens
            combined = (1 - ctc_weight) * log_probs.gather(1, top) + ctc_weight * ctc.score(top)
            log_probs = torch.full_like(log_probs, NEG_INF).scatter(1, top, combined)
        total = scores[:, None] + log_probs  # (N, V)
        frozen = torch.full_like(total, NEG_INF)
        frozen[:, SOS_EOS_ID] = scores
        total = torch.where(ended[:, None], frozen, total)  # a finished hypothesis only keeps itself
        new_len = torch.where(ended, lengths, lengths + 1)  # (N,)
        key = total / new_len[:, None].double().pow(length_penalty).float()  # (N, V)
        best = key.view(B, K * V).topk(K, -1).indices  # (B, K)
        source = (offsets + best // V).view(N)  # (N,) hypothesis each new one extends
        new_tokens = (best % V).view(N)
        scores = total.view(B, K * V).gather(1, best).view(N)
        lengths, was_ended = new_len[source], ended[source]
        ended = was_ended | (new_tokens == SOS_EOS_ID)
        history = torch.cat([history[source], new_tokens[:, None]], 1)  # (N, t+1)
        # Exact pruning: scores never increase, so a live hypothesis scores at best
        # score / (budget + 1) ** alpha; below the best finished one of its utterance it cannot win.
        done_key = torch.where(ended, scores / lengths.double().pow(length_penalty).float(), NEG_INF)
        best_done = done_key.view(B, K).max(1).values.repeat_interleave(K)  # (N,)
        hopeless = ~ended & (scores / (budget + 1).double().pow(length_penalty).float() < best_done)
        scores, ended = scores.masked_fill(hopeless, NEG_INF), ended | hopeless
        if bool(ended.all()):
            break
        stepper.select(source)
        if ctc is not None:
            ctc.advance(source, new_tokens)
        tokens = new_tokens
    key = (scores / lengths.double().pow(length_penalty).float()).view(B, K)
    pick = (offsets[:, 0] + key.argmax(1))  # (B,)
    history, lengths = history[pick].cpu(), lengths[pick].cpu()
    hyps = [row[: max(int(n) - 1, 0)].tolist() for row, n in zip(history, lengths)]
    return hyps, scores[pick], steps.tolist()


@torch.no_grad()
def sequence_log_prob(decoder: TransformerDecoder, memory: Tensor, memory_lens: Tensor,
                      hyps: list[list[int]]) -> Tensor:
    """The decoder's ``log p(y, <eos> | x)`` of given hypotheses (teacher forcing), the score the
    searches report when ``ctc_weight = 0``.

    Args:
        memory (Tensor): shape `(B, T, D)`. memory_lens (Tensor): shape `(B,)`.
        hyps (list[list[int]]): B token lists without ``<sos>`` / ``<eos>``.

    Returns:
        Tensor: shape `(B,)` float32.
    """
    B, U = len(hyps), max(len(h) for h in hyps) + 1
    inputs = torch.zeros(B, U, dtype=torch.long)
    targets = torch.zeros(B, U, dtype=torch.long)
    for b, h in enumerate(hyps):
        inputs[b, : len(h) + 1] = torch.tensor([SOS_EOS_ID] + h)
        targets[b, : len(h) + 1] = torch.tensor(h + [SOS_EOS_ID])
    lens = torch.tensor([len(h) + 1 for h in hyps])
    inputs, targets, lens = inputs.to(memory.device), targets.to(memory.device), lens.to(memory.device)
    log_probs = decoder(inputs, lens, memory, memory_lens).float().log_softmax(-1)  # (B, U, V)
    per_token = log_probs.gather(2, targets[..., None])[..., 0]  # (B, U)
    valid = lengths_to_valid_mask(lens, U)
    return torch.where(valid, per_token, 0.0).sum(1)
