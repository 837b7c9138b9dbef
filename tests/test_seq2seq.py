"""Seq2seq objective: label smoothing by hand, teacher forcing, config, losses, scheduled sampling, e2e."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import asr_zoo.objectives.seq2seq  # noqa: F401  (registers objective=seq2seq)
from asr_zoo.cli import main
from asr_zoo.config import compose
from asr_zoo.nn.decoder import TransformerDecoder
from asr_zoo.objectives.seq2seq import Seq2SeqModule, label_smoothed_cross_entropy, teacher_forcing_io
from conftest import tiny_train_args


def test_label_smoothing_by_hand():
    # one utterance, 2 valid positions + 1 padding position, V = 3
    logits = torch.tensor([[[0.0, math.log(2), math.log(5)], [math.log(3), 0.0, 0.0], [9.0, -9.0, 3.0]]])
    targets, lengths, eps = torch.tensor([[2, 0, 1]]), torch.tensor([2]), 0.1
    # position 0: p = (1, 2, 5) / 8; position 1: p = (3, 1, 1) / 5
    pos0 = (1 - eps) * -math.log(5 / 8) + eps * -(math.log(1 / 8) + math.log(2 / 8) + math.log(5 / 8)) / 3
    pos1 = (1 - eps) * -math.log(3 / 5) + eps * -(math.log(3 / 5) + 2 * math.log(1 / 5)) / 3
    got = label_smoothed_cross_entropy(logits, targets, lengths, eps)
    assert float(got) == pytest.approx(pos0 + pos1, rel=1e-6)
    # same convention as F.cross_entropy(label_smoothing=...) with padding ignored
    ref = F.cross_entropy(logits[0], torch.tensor([2, 0, -100]), label_smoothing=eps, reduction="sum")
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_teacher_forcing_io():
    inputs, targets, lens = teacher_forcing_io(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1]))
    assert inputs.tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert targets.tolist() == [[5, 6, 7, 1], [8, 1, 0, 0]]
    assert lens.tolist() == [4, 2]


@pytest.mark.parametrize("attention", ["clustered", "iclustered", "pooled"])
def test_non_causal_decoder_attention_is_a_clear_error(attention):
    with pytest.raises(ValueError, match="valid causal types: softmax, linear"):
        TransformerDecoder(10, 16, 1, 2, 32, attention=attention)


def _module(*overrides):
    cfg = compose(["objective=seq2seq", "encoder.d_model=32", "encoder.num_layers=1", "encoder.ffn_dim=64",
                   "encoder.frontend_channels=8", "objective.decoder_ffn_dim=64", "objective.decoder_layers=1",
                   *overrides])
    torch.manual_seed(0)
    from omegaconf import OmegaConf
    return Seq2SeqModule(OmegaConf.to_container(cfg), vocab_size=20, feature_dim=80)


def _batch():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 20, (3, 5), generator=g)
    token_lens = torch.tensor([5, 2, 3])
    tokens[torch.arange(5)[None] >= token_lens[:, None]] = 0
    return {"feats": torch.randn(3, 120, 80, generator=g), "feat_lens": torch.tensor([120, 70, 100]),
            "tokens": tokens, "token_lens": token_lens, "ids": ["a", "b", "c"], "texts": ["", "", ""]}


def test_loss_composition_and_normalisation():
    batch = _batch()
    both = _module("objective.ctc_weight=0.3")
    loss, extra = both.compute_loss(batch)
    assert float(loss) == pytest.approx(0.7 * float(extra["att_loss"]) + 0.3 * float(extra["ctc_loss"]), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in both.ctc_head.parameters())

    per_token = _module("objective.ctc_weight=0.3", "objective.loss_norm=token")
    per_token.load_state_dict(both.state_dict())
    loss_tok, _ = per_token.compute_loss(batch)
    num_targets = int(batch["token_lens"].sum()) + 3  # labels + one <eos> each
    assert float(loss_tok) * num_targets == pytest.approx(float(loss) * 3, rel=1e-5)

    att_only = _module("objective.ctc_weight=0")
    assert att_only.ctc_head is None and att_only.utterance_filter(att_only.cfg) is None
    loss, extra = att_only.compute_loss(batch)
    assert "ctc_loss" not in extra and float(loss) == float(extra["att_loss"])


def test_scheduled_sampling_replaces_inputs_with_previous_predictions():
    module = _module().train()
    batch = _batch()
    enc, enc_lens = module.encode(batch)
    inputs, _, lens = teacher_forcing_io(batch["tokens"], batch["token_lens"])
    assert torch.equal(module._scheduled_sampling(inputs, lens, enc, enc_lens, 0.0), inputs)
    torch.manual_seed(1)
    with torch.no_grad():
        logits = module.decoder(inputs, lens, enc, enc_lens)
    logits[..., 0] = float("-inf")
    torch.manual_seed(1)  # same dropout masks in the no-grad pass
    mixed = module._scheduled_sampling(inputs, lens, enc, enc_lens, 0.999999)
    assert torch.equal(mixed[:, 0], inputs[:, 0])
    assert torch.equal(mixed[:, 1:], logits.argmax(-1)[:, :-1])
    module.compute_loss(batch)[0].backward()  # the training path with sampling on runs end to end


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_decoder_memory_carries_frame_positions(attention):
    """Cross-attention by content alone cannot tell frame order: reversing the encoder frames leaves
    the decoder's output unchanged, so nothing but the encoder's faint input positions tells it where
    it is (the loops and skips of attention-only decoding, docs/seq2seq_decoding.md). With
    memory_positions (on in conf/objective/seq2seq.yaml) reversed frames change the output."""
    batch = _batch()
    inputs, _, lens = teacher_forcing_io(batch["tokens"], batch["token_lens"])
    enc = torch.randn(3, 29, 32, generator=torch.Generator().manual_seed(1))
    enc_lens = torch.full((3,), 29)
    logits = {}
    for on in (False, True):
        module = _module(f"objective.memory_positions={on}", f"objective.decoder_attention={attention}").eval()
        with torch.no_grad():
            logits[on] = [module.decoder(inputs, lens, module.decoder_memory(e), enc_lens) for e in (enc, enc.flip(1))]
    torch.testing.assert_close(logits[False][0], logits[False][1], rtol=0, atol=1e-5)
    assert (logits[True][0] - logits[True][1]).abs().max() > 1e-2
    assert compose(["objective=seq2seq"]).objective.memory_positions  # new runs get positions
    from asr_zoo.schemas import Seq2SeqConfig
    assert Seq2SeqConfig().memory_positions is False  # a saved config without the key decodes as trained


def test_bad_choices_are_clear_errors():
    with pytest.raises(ValueError, match="valid choices: beam, greedy"):
        _module("objective.decoder=sampling")
    with pytest.raises(ValueError, match="decoder_attention=.pooled.; valid choices: softmax, linear"):
        _module("objective.decoder_attention=pooled")


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_decode_of_untrained_module(decoder):
    module = _module(f"objective.decoder={decoder}", "objective.decoder_attention=linear").eval()
    with torch.no_grad():
        hyps, steps = module.decode(_batch())
    assert len(hyps) == 3 and all(1 <= s <= 31 for s in steps)  # budget: ceil(1.0 x 29 frames) + <eos>


def test_train_eval_compare_seq2seq(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "s2s"
    assert main(tiny_train_args(tiny_corpus, run, "objective=seq2seq", "objective.decoder_layers=1",
                                "objective.decoder_ffn_dim=64", "objective.beam_size=2")) == 0
    assert json.loads((run / "train_summary.json").read_text())["objective"] == "seq2seq"
    assert main(["eval", str(run), "--split", "test", "--device", "cpu"]) == 0
    result = json.loads((run / "results" / "test.json").read_text())
    assert result["objective"] == "seq2seq" and result["num_utts"] == 8 and result["decode_steps"] >= 1
    assert main(["eval", str(run), "objective.decoder=greedy", "--max-utts", "2"]) == 0
    assert (run / "results" / "test@objective.decoder=greedy.json").exists()
    capsys.readouterr()
    assert main(["compare", str(run), "--out", str(tmp_path / "table")]) == 0
    assert "| s2s | seq2seq | softmax |" in capsys.readouterr().out


@pytest.mark.parametrize("encoder_dropout, setting, expected", [(0.0, None, 0.0), (0.2, None, 0.2), (0.0, 0.3, 0.3)])
def test_decoder_dropout_follows_the_encoder_unless_set(encoder_dropout, setting, expected):
    """``objective.decoder_dropout`` (seq2seq) and ``objective.dropout`` (RNN-T's predictor) left null
    take ``encoder.dropout`` (preset=demo turns all dropout off with one key); a number wins."""
    from omegaconf import OmegaConf

    from asr_zoo.objectives.rnnt import RNNTModule

    s2s = _module(f"encoder.dropout={encoder_dropout}",
                  *([f"objective.decoder_dropout={setting}"] if setting is not None else []))
    residual = {m.p for name, m in s2s.decoder.named_modules()  # self_attn: attention.dropout's, not this
                if isinstance(m, torch.nn.Dropout) and "self_attn" not in name}
    assert residual == {expected}
    assert {layer.cross_attn.dropout for layer in s2s.decoder.layers} == {expected}
    cfg = compose(["objective=rnnt", "encoder.d_model=32", "encoder.num_layers=1", "encoder.ffn_dim=64",
                   f"encoder.dropout={encoder_dropout}", *([f"objective.dropout={setting}"] if setting is not None else [])])
    rnnt = RNNTModule(OmegaConf.to_container(cfg), vocab_size=20, feature_dim=80)
    assert {m.p for m in rnnt.predictor.modules() if isinstance(m, torch.nn.Dropout)} == {expected}
