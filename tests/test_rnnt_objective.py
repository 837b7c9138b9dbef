"""RNN-T objective: prediction / joint networks, the module's loss and decoding, end to end via the CLI."""

import json

import pytest
import torch
from omegaconf import OmegaConf

import asr_zoo.objectives.rnnt  # noqa: F401  (registers "rnnt" until objectives/__init__ imports it)
from asr_zoo.cli import main
from asr_zoo.config import compose
from asr_zoo.nn.transducer import Joiner, LSTMPredictor, StatelessPredictor, build_predictor
from asr_zoo.objectives.rnnt import RNNTModule
from conftest import tiny_train_args

TINY_MODEL = ["encoder.d_model=32", "encoder.num_layers=1", "encoder.ffn_dim=64", "encoder.frontend_channels=8",
              "objective.embed_dim=16", "objective.hidden_dim=24", "objective.joint_dim=32", "objective.dropout=0.0",
              "encoder.dropout=0.0"]


# --------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("predictor, out_dim", [
    (LSTMPredictor(11, 8, 16, num_layers=2), 16),
    (StatelessPredictor(11, 8, context_size=1), 8),
    (StatelessPredictor(11, 8, context_size=2, conv=True), 8),
    (StatelessPredictor(11, 8, context_size=2, conv=False), 16),
])
def test_predictor_shapes_and_step_wise_equals_full_sequence(predictor, out_dim):
    """Training (whole sequence) and decoding (token by token, state carried) see the same outputs."""
    predictor.eval()
    targets = torch.tensor([[3, 4, 4, 9], [7, 1, 0, 0]])
    full = predictor(targets)
    assert predictor.output_dim == out_dim and full.shape == (2, 5, out_dim)
    out, state = predictor.predict(torch.zeros(2, dtype=torch.long), None)
    steps = [out]
    for u in range(targets.shape[1]):
        out, state = predictor.predict(targets[:, u], state)
        steps.append(out)
        assert all(s.shape[0] == 2 for s in state)  # batch-first state, whatever the type
    torch.testing.assert_close(torch.stack(steps, 1), full)


def test_stateless_predictor_sees_only_its_context():
    p = StatelessPredictor(11, 8, context_size=2)
    a, b = p(torch.tensor([[3, 4, 5, 6]])), p(torch.tensor([[9, 4, 5, 6]]))
    assert not torch.allclose(a[:, 1:3], b[:, 1:3])  # rows 1, 2 see token 3 vs 9
    torch.testing.assert_close(a[:, 3:], b[:, 3:])  # rows 3, 4 only see tokens 4..6


def test_lstm_predictor_is_causal():
    p = LSTMPredictor(11, 8, 16)
    a, b = p(torch.tensor([[3, 4, 5]])), p(torch.tensor([[3, 4, 9]]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_joiner_lattice_equals_per_node_join():
    j = Joiner(6, 5, 4, 3)
    enc, pred = torch.randn(2, 7, 6), torch.randn(2, 4, 5)
    lattice = j(enc, pred)
    assert lattice.shape == (2, 7, 4, 3)
    node = j.join(j.encoder_proj(enc[1, 5])[None], j.predictor_proj(pred[1, 2])[None])  # (1, V)
    torch.testing.assert_close(lattice[1, 5, 2], node[0])


def test_build_predictor_rejects_unknown_kind():
    with pytest.raises(ValueError, match="lstm, stateless"):
        build_predictor("gru", 5, embed_dim=4, hidden_dim=4, num_layers=1, context_size=1, conv=True, dropout=0.0)


# --------------------------------------------------------------------------------- objective
def make_module(*overrides: str, vocab: int = 12, feature_dim: int = 20) -> RNNTModule:
    torch.manual_seed(0)
    cfg = compose(["objective=rnnt", *TINY_MODEL, *overrides])
    return RNNTModule(OmegaConf.to_container(cfg, resolve=True), vocab, feature_dim)


def tiny_batch(feature_dim: int = 20):
    g = torch.Generator().manual_seed(1)
    return {"feats": torch.randn(3, 48, feature_dim, generator=g), "feat_lens": torch.tensor([48, 40, 20]),
            "tokens": torch.tensor([[3, 5, 7, 4], [9, 9, 0, 0], [6, 0, 0, 0]]), "token_lens": torch.tensor([4, 2, 1]),
            "ids": ["a", "b", "c"], "texts": ["", "", ""]}


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
def test_loss_is_finite_and_decreases(predictor):
    module = make_module(f"objective.predictor={predictor}")
    batch = tiny_batch()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _ = module.compute_loss(batch)
        assert torch.isfinite(loss) and loss.ndim == 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is not None for n, p in module.named_parameters() if n.startswith(("predictor", "joiner")))


def test_bf16_autocast_loss_and_decoding():
    module, batch = make_module(), tiny_batch()
    reference = module.compute_loss(batch)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.compute_loss(batch)[0]
        loss.backward()
        ids, _ = module.eval().decode(batch)
    assert loss.dtype == torch.float32 and len(ids) == 3  # the lattice is bf16, the loss accumulates in fp32
    torch.testing.assert_close(loss, reference, rtol=2e-2, atol=0)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_loss_reductions_agree():
    batch = tiny_batch()
    mean = make_module("objective.reduction=mean").compute_loss(batch)[0]
    total = make_module("objective.reduction=sum").compute_loss(batch)[0]
    per_token = make_module("objective.reduction=mean_per_token").compute_loss(batch)[0]
    torch.testing.assert_close(total, 3 * mean)
    torch.testing.assert_close(per_token, total / 7)


def test_auxiliary_ctc_loss_is_weighted_with_the_transducer_loss():
    """loss = (1 - w) L_rnnt + w L_ctc, both per utterance; w = 0 builds no CTC head at all."""
    batch = tiny_batch()
    plain = make_module("objective.ctc_weight=0")
    assert plain.ctc_head is None and plain.utterance_filter(plain.cfg) is None
    hybrid = make_module("objective.ctc_weight=0.25")
    hybrid.load_state_dict(plain.state_dict(), strict=False)  # same encoder, predictor and joiner
    loss, extra = hybrid.compute_loss(batch)
    enc, lens = hybrid.encode(batch)
    lp = hybrid.ctc_head(enc).log_softmax(-1)
    ctc = torch.nn.functional.ctc_loss(lp.transpose(0, 1), batch["tokens"], lens, batch["token_lens"],
                                       reduction="sum") / 3
    torch.testing.assert_close(extra["ctc_loss"], ctc)
    torch.testing.assert_close(extra["rnnt_loss"], plain.compute_loss(batch)[0])
    torch.testing.assert_close(loss, 0.75 * extra["rnnt_loss"] + 0.25 * ctc)
    loss.backward()
    assert hybrid.ctc_head.weight.grad is not None and hybrid.joiner.out.weight.grad is not None
    keep = hybrid.utterance_filter(hybrid.cfg)  # the CTC head brings CTC's length check
    assert keep(400, [3, 3]) is None and "too short for CTC" in keep(8, [3, 3])


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_decode_returns_ids_and_predictor_steps(decoder):
    module = make_module(f"objective.decoder={decoder}", "objective.beam_size=2").eval()
    ids, steps = module.decode(tiny_batch())
    assert len(ids) == len(steps) == 3
    assert all(isinstance(i, int) and 0 < i < 12 for seq in ids for i in seq)
    assert all(s >= 1 + (len(seq) if decoder == "greedy" else 0) for seq, s in zip(ids, steps))


def test_bad_choices_fail_with_valid_options():
    with pytest.raises(ValueError, match="greedy, beam"):
        make_module("objective.decoder=prefix_beam")
    with pytest.raises(ValueError, match="lstm, stateless"):
        make_module("objective.predictor=gru")
    with pytest.raises(ValueError, match="asr_zoo, torchaudio"):
        make_module("objective.loss_backend=warp")
    with pytest.raises(ValueError, match=r"objective.ctc_weight=1.0; must be in \[0.0, 1.0\)"):
        make_module("objective.ctc_weight=1.0")


# --------------------------------------------------------------------------------- end to end
def test_train_eval_compare(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "rnnt"
    args = ["objective=rnnt", "objective.hidden_dim=32", "objective.embed_dim=16", "objective.joint_dim=32"]
    assert main(tiny_train_args(tiny_corpus, run, *args)) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["objective"] == "rnnt"

    assert main(["eval", str(run), "--split", "test", "--device", "cpu"]) == 0
    greedy = json.loads((run / "results" / "test.json").read_text())
    assert greedy["objective"] == "rnnt" and greedy["num_utts"] == 8 and greedy["decode_steps"] >= 1

    assert main(["eval", str(run), "objective.decoder=beam", "objective.beam_size=2", "--max-utts", "2"]) == 0
    beam = json.loads((run / "results" / "test@objective.decoder=beam,objective.beam_size=2.json").read_text())
    assert beam["num_utts"] == 2 and beam["decode_steps"] >= 1

    capsys.readouterr()
    assert main(["compare", str(run)]) == 0
    assert "| rnnt | rnnt | softmax |" in capsys.readouterr().out
