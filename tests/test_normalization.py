"""Feature normalisation: global statistics or each utterance's own (``data.features.normalization``).

Per-utterance normalisation removes what a recording adds to every frame of one channel (level,
microphone colouring: an additive offset in the log-mel domain) and its scale; the global kind
keeps them. Checked on tensors, then through the datamodule, training and evaluation."""

import pytest
import torch

from asr_zoo.cli import main
from asr_zoo.config import ConfigError, compose
from asr_zoo.data.datamodule import ASRDataModule, ASRDataset
from asr_zoo.data.features import normalize_features
from conftest import tiny_train_args


def test_global_uses_the_given_statistics():
    x, mean, std = torch.randn(7, 4), torch.randn(4), torch.rand(4) + 0.5
    torch.testing.assert_close(normalize_features(x, mean, std), (x - mean) / std)


def test_per_utterance_gives_zero_mean_unit_variance_and_ignores_the_global_statistics():
    x = torch.randn(50, 6) * 3 + 2
    y = normalize_features(x, torch.full((6,), 100.0), torch.full((6,), 1e-3), per_utterance=True)
    torch.testing.assert_close(y.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(6), atol=1e-5, rtol=0)
    expect = (x - x.mean(0)) / ((x - x.mean(0)) ** 2).mean(0).sqrt()  # the definition, written out
    torch.testing.assert_close(y, expect)


def test_per_utterance_removes_a_channel_offset_and_gain_and_global_does_not():
    x = torch.randn(40, 5)
    offset, gain = torch.randn(5) * 4, torch.rand(5) + 0.5  # a recording's level and colouring, per mel bin
    mean, std = torch.zeros(5), torch.ones(5)
    torch.testing.assert_close(normalize_features(x * gain + offset, mean, std, per_utterance=True),
                               normalize_features(x, mean, std, per_utterance=True), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(normalize_features(x * gain + offset, mean, std), normalize_features(x, mean, std))


def test_a_constant_channel_stays_finite():
    x = torch.randn(10, 3)
    x[:, 1] = -7.0  # e.g. a mel bin with no energy at all: std 0
    y = normalize_features(x, torch.zeros(3), torch.ones(3), per_utterance=True)
    assert torch.isfinite(y).all() and (y[:, 1] == 0).all()


def test_bad_choice_fails_at_composition_with_the_choices():
    with pytest.raises(ConfigError, match="valid choices: global, utterance"):
        compose(["data.features.normalization=speaker"])
    with pytest.raises(ValueError, match="normalization='speaker'"):
        ASRDataset(None, torch.zeros(1), torch.ones(1), normalization="speaker")


def test_datamodule_batches_are_normalised_per_utterance(tiny_corpus):
    cfg = compose([f"data.root={tiny_corpus}", "data.features.normalization=utterance", "data.num_workers=0",
                   "data.tokenizer.type=char"])
    dm = ASRDataModule(cfg.data)
    dm.prepare_data()
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["feats"].shape[0] > 1
    for feats, n in zip(batch["feats"], batch["feat_lens"].tolist()):
        torch.testing.assert_close(feats[:n].mean(0), torch.zeros(feats.shape[-1]), atol=1e-4, rtol=0)
        assert (feats[n:] == 0).all()  # padding untouched


def test_train_and_evaluate_with_per_utterance_normalisation(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert main(tiny_train_args(tiny_corpus, run, "data.features.normalization=utterance")) == 0
    assert "normalization: utterance" in (run / "config.yaml").read_text()
    assert main(["eval", str(run), "--split", "test", "--max-utts", "2"]) == 0
    assert (run / "results" / "test.json").exists()
