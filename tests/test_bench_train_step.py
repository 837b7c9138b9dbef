"""bench train-step: the synthetic demo batch, the fake Imputer alignments, the report (no timing asserted)."""

import torch

import pytest

from asr_zoo.bench.train_step import TOKENIZERS, fake_alignments, markdown, synthetic_batch
from asr_zoo.decoding.ctc import collapse_ctc


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
def test_synthetic_batch_has_the_demo_shape(tokenizer):
    vocab, rate = TOKENIZERS[tokenizer]
    batch = synthetic_batch(0, vocab=vocab, tokens_per_second=rate)
    seconds = batch["feat_lens"].float() / 100
    assert float(seconds.sum()) <= 40.0 and bool(((seconds >= 2) & (seconds <= 10)).all())
    assert batch["feats"].shape == (len(batch["ids"]), int(batch["feat_lens"].max()), 80)
    assert bool(((batch["token_lens"] - seconds * rate).abs() <= 1).all())  # the token rate, up to rounding
    valid = torch.arange(batch["tokens"].shape[1]) < batch["token_lens"][:, None]
    assert int(batch["tokens"][valid].min()) >= 2 and int(batch["tokens"].max()) < vocab
    assert torch.equal(synthetic_batch(0, vocab=vocab, tokens_per_second=rate)["feats"], batch["feats"])  # fixed


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
def test_fake_alignments_are_valid_ctc_alignments_of_the_targets(tokenizer):
    vocab, rate = TOKENIZERS[tokenizer]
    batch = synthetic_batch(1, vocab=vocab, tokens_per_second=rate)
    lengths = torch.div(batch["feat_lens"], 4, rounding_mode="floor")
    ali = fake_alignments(batch, lengths)
    padded = torch.zeros(len(lengths), int(lengths.max()), dtype=torch.long)
    for b, utt in enumerate(batch["ids"]):
        assert len(ali[utt]) == int(lengths[b])
        padded[b, : len(ali[utt])] = ali[utt]
    collapsed = collapse_ctc(padded, lengths, 0)
    for b in range(len(lengths)):
        assert collapsed[b] == batch["tokens"][b, : int(batch["token_lens"][b])].tolist()


def test_markdown_has_the_three_sections():
    common = {"threads": 2, "cpu_capability": "AVX512"}
    records = [{"section": "train_step", "objective": "ctc", "attention": "softmax", "median_ms": 10.0, "cpu_ms": 9.0,
                "peak_mb": 5.0, "time_vs_ctc": 1.0, "mem_vs_ctc": 1.0, **common},
               {"section": "joint", "loss": "full", "B": 1, "T": 2, "U": 3, "s_range": 4, "median_ms": 1.0,
                "peak_mb": 1.0, "mem_vs_full": 1.0, "time_vs_full": 1.0},
               {"section": "greedy", "decoder": "reference", "B": 16, "tokens_per_utt": 4.0, "frames_per_utt": 20.0,
                "median_ms": 3.0, "utt_per_s": 5.0, "speedup_vs_reference": 1.0, "identical_hypotheses": True}]
    table = markdown(records)
    assert "| ctc | softmax | 10 |" in table and "| full | 1 | 2 | 3 | 4 |" in table and "| reference | 16 |" in table
