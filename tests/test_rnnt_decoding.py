"""RNN-T decoders: greedy on a crafted lattice, beam search against greedy and brute force."""

import math

import pytest
import torch

from asr_zoo.decoding.rnnt import rnnt_beam_search, rnnt_greedy_decode
from asr_zoo.nn.transducer import Joiner, LSTMPredictor, StatelessPredictor

BLANK = 0


# ---------------------------------------------------------------------------------- fixtures
class CraftedLattice:
    """A fake predictor/joiner: the argmax at (utterance b, frame t, u tokens emitted) is table[b][t][u].

    ``enc[b, t] = (b, t)``; the predictor's output is u (its state counts emitted tokens).
    """

    def __init__(self, table: list[list[list[int]]], vocab: int = 8):
        self.table, self.vocab = table, vocab
        self.calls = 0

    def encoder(self, lengths):
        B, T = len(self.table), max(len(rows) for rows in self.table)
        b, t = torch.meshgrid(torch.arange(B), torch.arange(T), indexing="ij")
        return torch.stack([b, t], -1).float(), torch.tensor(lengths)  # (B, T, 2)

    def predict(self, tokens, state):
        self.calls += tokens.shape[0]
        u = torch.zeros(tokens.shape[0], 1) if state is None else state[0] + 1  # (N, 1)
        return u.clone(), (u,)

    def join(self, enc, pred):
        logits = torch.zeros(enc.shape[0], self.vocab)
        for n in range(enc.shape[0]):
            b, t, u = int(enc[n, 0]), int(enc[n, 1]), int(pred[n, 0])
            row = self.table[b][t]
            logits[n, row[min(u, len(row) - 1)]] = 5.0
        return logits


def random_transducer(kind: str, vocab: int = 4, J: int = 6, seed: int = 0):
    """A random predictor + joiner as decoder callables, and a matching encoder output maker."""
    torch.manual_seed(seed)
    predictor = (LSTMPredictor(vocab, 5, 7, num_layers=2) if kind == "lstm"
                 else StatelessPredictor(vocab, 5, context_size=2))
    joiner = Joiner(3, predictor.output_dim, J, vocab)
    with torch.no_grad():
        joiner.out.weight.mul_(4.0)  # peakier distributions: decisions that differ between decoders

    def predict(tokens, state):
        out, state = predictor.predict(tokens, state)
        return joiner.predictor_proj(out), state

    def encoder(B, T):
        return joiner.encoder_proj(torch.randn(B, T, 3))

    return predict, joiner.join, encoder


def brute_force_sequence_scores(enc, predict, join):
    """log P(sequence) summed over all one-symbol-per-frame alignments, by enumeration. enc `(T, J)`."""
    scores: dict[tuple, float] = {}

    def walk(t, prefix, pred, state, acc):
        if t == enc.shape[0]:
            scores[prefix] = float(torch.logaddexp(torch.tensor(scores.get(prefix, -math.inf)), torch.tensor(acc)))
            return
        lp = join(enc[t:t + 1], pred).log_softmax(-1)[0]  # (V,)
        walk(t + 1, prefix, pred, state, acc + float(lp[BLANK]))
        for k in range(lp.shape[0]):
            if k != BLANK:
                out, new_state = predict(torch.tensor([k]), state)
                walk(t + 1, prefix + (k,), out, new_state, acc + float(lp[k]))

    out, state = predict(torch.tensor([BLANK]), None)
    walk(0, (), out, state, 0.0)
    return scores


# --------------------------------------------------------------------------------------- greedy
def test_greedy_follows_crafted_lattice_and_bounds_symbols_per_frame():
    # utt 0: frame 0 would emit forever (3, 4, 5, ...); frame 1 blanks at u=2; frame 2 emits 6 at u=2.
    # utt 1: emits 2 in frame 0 and 5 in frame 1; its frame 2 is padding that would emit 7s.
    table = [
        [[3, 4, 5, 6, 7], [0, 0, 0, 0], [0, 0, 6, 0]],
        [[2, 0], [0, 5, 0], [7, 7, 7]],
    ]
    lat = CraftedLattice(table)
    enc, lengths = lat.encoder([3, 2])
    out = rnnt_greedy_decode(enc, lengths, lat.predict, lat.join, BLANK, max_symbols_per_frame=2)
    assert out.tokens == [[3, 4, 6], [2, 5]]
    assert out.frames == [[0, 0, 2], [0, 1]]
    assert out.steps == [4, 3]  # start symbol + one evaluation per emitted token
    assert lat.calls == 2 + 5  # batched: only utterances that emitted were evaluated

    for max_symbols in (1, 3, 5):
        out = rnnt_greedy_decode(enc, lengths, CraftedLattice(table).predict, lat.join, BLANK, max_symbols)
        per_frame = [max(f.count(t) for t in set(f)) for f in out.frames if f]
        assert max(per_frame) <= max_symbols
    assert rnnt_greedy_decode(enc, lengths, CraftedLattice(table).predict, lat.join, BLANK, 1).tokens == [[3], [2, 5]]


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
def test_greedy_batched_equals_one_by_one(kind):
    predict, join, encoder = random_transducer(kind, vocab=5)
    enc, lengths = encoder(3, 9), torch.tensor([9, 4, 7])
    with torch.no_grad():
        batched = rnnt_greedy_decode(enc, lengths, predict, join, BLANK, max_symbols_per_frame=3)
        for b in range(3):
            single = rnnt_greedy_decode(enc[b:b + 1, :lengths[b]], lengths[b:b + 1], predict, join, BLANK, 3)
            assert single.tokens[0] == batched.tokens[b] and single.steps[0] == batched.steps[b]
            assert single.scores[0] == pytest.approx(batched.scores[b], abs=1e-4)
            assert batched.steps[b] == 1 + len(batched.tokens[b])


# ---------------------------------------------------------------------------------------- beam
@pytest.mark.parametrize("kind", ["lstm", "stateless"])
def test_beam_one_equals_greedy_one_symbol_per_frame(kind):
    predict, join, encoder = random_transducer(kind, vocab=6, seed=1)
    enc, lengths = encoder(4, 12), torch.tensor([12, 5, 9, 1])
    with torch.no_grad():
        greedy = rnnt_greedy_decode(enc, lengths, predict, join, BLANK, max_symbols_per_frame=1)
        beam = rnnt_beam_search(enc, lengths, predict, join, beam_size=1, blank=BLANK)
    assert sum(map(len, greedy.tokens)) > 0  # the comparison is not vacuous
    assert beam.tokens == greedy.tokens and beam.frames == greedy.frames and beam.steps == greedy.steps
    assert beam.scores == pytest.approx(greedy.scores, abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_beam_is_exact_and_never_below_greedy(seed):
    """With a beam that never prunes, modified beam search finds the most probable sequence."""
    predict, join, encoder = random_transducer("lstm", vocab=4, seed=seed)
    T = 5
    enc, lengths = encoder(1, T), torch.tensor([T])
    with torch.no_grad():
        exact = brute_force_sequence_scores(enc[0], predict, join)
        beam = rnnt_beam_search(enc, lengths, predict, join, beam_size=400, blank=BLANK)
        greedy = rnnt_greedy_decode(enc, lengths, predict, join, BLANK, max_symbols_per_frame=1)
    best_seq = max(exact, key=exact.get)
    assert tuple(beam.tokens[0]) == best_seq
    assert beam.scores[0] == pytest.approx(exact[best_seq], abs=1e-4)
    assert beam.scores[0] >= exact[tuple(greedy.tokens[0])] - 1e-5 >= greedy.scores[0] - 2e-5
    assert beam.steps[0] == len(exact)  # every distinct prefix evaluated once, none twice
    assert math.log(sum(math.exp(s) for s in exact.values())) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
def test_beam_search_caches_one_evaluation_per_prefix(kind):
    predict, join, encoder = random_transducer(kind, vocab=5, seed=2)
    evaluated = []

    def counting_predict(tokens, state):
        evaluated.append(tokens.shape[0])
        return predict(tokens, state)

    enc, lengths = encoder(2, 10), torch.tensor([10, 6])
    with torch.no_grad():
        out = rnnt_beam_search(enc, lengths, counting_predict, join, beam_size=3, blank=BLANK)
        wider = rnnt_beam_search(enc, lengths, predict, join, beam_size=6, blank=BLANK)
    assert sum(evaluated) == sum(out.steps)
    assert all(1 < s <= 1 + 3 * n for s, n in zip(out.steps, [10, 6]))  # at most beam new prefixes per frame
    assert len(evaluated) <= 1 + 10 + 1 + 6  # one batched call per utterance start and per frame
    for tokens, frames in zip(out.tokens + wider.tokens, out.frames + wider.frames):
        assert len(tokens) == len(frames) and frames == sorted(set(frames))  # at most one token per frame
        assert BLANK not in tokens


def test_decoders_reject_bad_arguments():
    predict, join, encoder = random_transducer("lstm")
    enc, lengths = encoder(1, 3), torch.tensor([3])
    with pytest.raises(ValueError, match="max_symbols_per_frame"):
        rnnt_greedy_decode(enc, lengths, predict, join, BLANK, max_symbols_per_frame=0)
    with pytest.raises(ValueError, match="beam_size"):
        rnnt_beam_search(enc, lengths, predict, join, beam_size=0)
