"""Label-looping batched greedy RNN-T decoding equals the frame-by-frame reference."""

import pytest
import torch

from asr_zoo.decoding.rnnt import rnnt_greedy_decode, rnnt_greedy_decode_reference
from asr_zoo.nn.transducer import Joiner, LSTMPredictor, StatelessPredictor


def _transducer(kind, vocab, seed, peak):
    torch.manual_seed(seed)
    predictor = (LSTMPredictor(vocab, 8, 16, num_layers=1) if kind == "lstm"
                 else StatelessPredictor(vocab, 8, context_size=2))
    joiner = Joiner(6, predictor.output_dim, 12, vocab)
    with torch.no_grad():
        joiner.out.weight.mul_(peak)
        joiner.out.bias[0] += 1.0  # mostly blanks, as in a trained model

    def predict(tokens, state):
        out, state = predictor.predict(tokens, state)
        return joiner.predictor_proj(out), state

    return predict, joiner.join, lambda B, T: joiner.encoder_proj(torch.randn(B, T, 6))


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
@pytest.mark.parametrize("max_symbols", [1, 2, 3])
def test_label_looping_equals_reference(kind, max_symbols):
    with torch.no_grad():
        for seed, peak in ((0, 3.0), (2, 8.0)):
            predict, join, encoder = _transducer(kind, 7, seed, peak)
            enc, lengths = encoder(6, 23), torch.tensor([23, 1, 17, 9, 23, 4])
            ref = rnnt_greedy_decode_reference(enc, lengths, predict, join, 0, max_symbols)
            assert sum(map(len, ref.tokens)) > 0
            for lookahead in (1, 5, 40):
                ours = rnnt_greedy_decode(enc, lengths, predict, join, 0, max_symbols, lookahead=lookahead)
                assert ours.tokens == ref.tokens and ours.frames == ref.frames and ours.steps == ref.steps
                assert ours.scores == pytest.approx(ref.scores, abs=1e-4)


def test_label_looping_hits_the_symbol_limit_like_the_reference():
    """A joiner that always prefers a label: every frame ends by the forced move."""
    with torch.no_grad():
        predict, join, encoder = _transducer("stateless", 5, 3, 1.0)

        def eager(enc, pred):
            logits = join(enc, pred)
            logits[:, 0] -= 100.0
            return logits

        enc, lengths = encoder(3, 6), torch.tensor([6, 2, 5])
        for max_symbols in (1, 2):
            ref = rnnt_greedy_decode_reference(enc, lengths, predict, eager, 0, max_symbols)
            ours = rnnt_greedy_decode(enc, lengths, predict, eager, 0, max_symbols, lookahead=4)
            assert [len(x) for x in ref.tokens] == [6 * max_symbols, 2 * max_symbols, 5 * max_symbols]
            assert ours.tokens == ref.tokens and ours.frames == ref.frames and ours.steps == ref.steps
            assert ours.scores == pytest.approx(ref.scores, abs=1e-4)


def test_rejects_bad_arguments():
    predict, join, encoder = _transducer("lstm", 5, 0, 1.0)
    enc, lengths = encoder(1, 3), torch.tensor([3])
    with pytest.raises(ValueError, match="lookahead"):
        rnnt_greedy_decode(enc, lengths, predict, join, lookahead=0)
    with pytest.raises(ValueError, match="max_symbols_per_frame"):
        rnnt_greedy_decode(enc, lengths, predict, join, max_symbols_per_frame=0)
