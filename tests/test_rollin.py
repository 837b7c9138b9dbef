"""Roll-in: shift noise and masking policies (exact invariants + distribution checks)."""

from __future__ import annotations

import pytest
import torch

from asr_zoo.align.rollin import (
    MASKING_POLICIES,
    bernoulli_mask,
    block_mask,
    fill_masked,
    rollin,
    shift_alignment,
    uniform_mask,
)
from asr_zoo.align.viterbi import ctc_viterbi
from asr_zoo.decoding.ctc import collapse_ctc

BLANK = 0


def _expert(gen, batch=64, num_frames=40, num_classes=5, max_labels=12):
    lp = torch.randn(batch, num_frames, num_classes, generator=gen).log_softmax(-1)
    targets = torch.randint(1, num_classes, (batch, max_labels), generator=gen)
    lengths = torch.randint(max_labels * 2, num_frames + 1, (batch,), generator=gen)
    target_lengths = torch.randint(0, max_labels + 1, (batch,), generator=gen)
    return ctc_viterbi(lp, targets, lengths, target_lengths), lengths


def _reference_shift(row: list[int], length: int, k: int) -> list[int]:
    out = [BLANK] * len(row)
    for t in range(length):
        if 0 <= t - k < length:
            out[t] = row[t - k]
    return out


def test_shift_is_an_allowed_shift_and_keeps_the_transcript():
    gen = torch.Generator().manual_seed(0)
    align, lengths = _expert(gen)
    # some alignments start / end with a label: shifts that would drop it are refused, which
    # the transcript check below sees
    align[:4, 0] = 1
    align[torch.arange(4, 8), lengths[4:8] - 1] = 2
    seen = set()
    for _ in range(5):
        shifted = shift_alignment(align, lengths, max_shift=2, generator=gen)
        assert collapse_ctc(shifted, lengths) == collapse_ctc(align, lengths)
        for i in range(len(align)):
            row, n = align[i].tolist(), int(lengths[i])
            options = {k: _reference_shift(row, n, k) for k in range(-2, 3)}
            ks = [k for k, ref in options.items() if ref == shifted[i].tolist()]
            assert ks, (i, row, shifted[i])
            seen.update(ks)
        assert (shifted[torch.arange(align.shape[1]) >= lengths[:, None]] == BLANK).all()
    assert seen == {-2, -1, 0, 1, 2}
    assert torch.equal(shift_alignment(align, lengths, max_shift=0, generator=gen), align)


def test_block_mask_is_a_decoding_state():
    """k ~ U{0..7} decoding steps done per utterance: every block holds n - min(k, n) masked."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([64, 61, 3, 1, 0, 17] * 400)
    mask = block_mask(lengths, block_size=8, generator=gen)
    assert mask.shape == (len(lengths), 64) and mask.dtype == torch.bool
    assert not mask[torch.arange(64) >= lengths[:, None]].any()
    ks = []
    for row, n in zip(mask.tolist(), lengths.tolist()):
        blocks = [(sum(row[a:min(a + 8, n)]), min(a + 8, n) - a) for a in range(0, n, 8)]
        if not blocks:
            continue
        full = {8 - m for m, size in blocks if size == 8}
        assert len(full) <= 1  # the same number committed in every full block of an utterance
        if full:
            k = full.pop()
            ks.append(k)
            assert all(m == size - min(k, size) for m, size in blocks)  # short blocks: n - min(k, n)
    hist = torch.bincount(torch.tensor(ks), minlength=8).double() / len(ks)
    torch.testing.assert_close(hist, torch.full((8,), 1 / 8, dtype=torch.float64), atol=0.02, rtol=0)
    # the all-masked canvas decoding starts from is trained (k = 0), a full block is never complete
    long_rows = mask[lengths == 64]
    assert (long_rows.all(1)).double().mean() > 0.08
    assert (long_rows.view(-1, 8, 8).sum(-1) >= 1).all()
    # short utterances: both states occur, complete (k >= n) and masked
    one = mask[lengths == 1, 0]
    assert 0.05 < one.double().mean() < 0.25  # masked only when k = 0: probability 1/8
    # positions inside full blocks are uniform: mean masked fraction (1+8)/2/8
    per_slot = mask[:, :64].view(-1, 8, 8)[lengths == 64].double().mean((0, 1))
    assert (per_slot - 4.5 / 8).abs().max() < 0.05


def test_bernoulli_and_uniform_masks():
    gen = torch.Generator().manual_seed(2)
    lengths = torch.tensor([50, 30, 0, 1] * 300)
    beyond = torch.arange(50) >= lengths[:, None]
    fixed = bernoulli_mask(lengths, p=0.3, generator=gen)
    assert not fixed[beyond].any()
    assert abs(fixed[lengths == 50].double().mean() - 0.3) < 0.01
    drawn = bernoulli_mask(lengths, generator=gen)
    fractions = drawn[lengths == 50].double().mean(1)
    assert fractions.min() < 0.1 and fractions.max() > 0.9 and abs(fractions.mean() - 0.5) < 0.05

    uni = uniform_mask(lengths, max_len=50, generator=gen)
    assert not uni[beyond].any()
    counts = uni[lengths == 30].sum(1)
    hist = torch.bincount(counts, minlength=31).double() / len(counts)
    assert counts.max() <= 30 and hist.min() > 0 and hist.max() < 4 / 31
    assert abs(counts.double().mean() - 15) < 1.5
    assert (uni[lengths == 1].sum(1) <= 1).all() and uni[lengths == 1].any()


def test_rollin_and_reproducibility():
    gen = torch.Generator().manual_seed(3)
    align, lengths = _expert(gen, batch=8)
    assert set(MASKING_POLICIES) == {"block", "bernoulli", "uniform"}
    for policy, options in [("block", {"block_size": 4}), ("bernoulli", {"p": 0.5}), ("uniform", {})]:
        a = rollin(align, lengths, policy, generator=torch.Generator().manual_seed(9), **options)
        b = rollin(align, lengths, policy, generator=torch.Generator().manual_seed(9), **options)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        noisy, mask = a
        assert noisy.shape == mask.shape == align.shape
        assert collapse_ctc(noisy, lengths) == collapse_ctc(align, lengths)
        assert not mask[torch.arange(align.shape[1]) >= lengths[:, None]].any()
    model_input = fill_masked(noisy, mask, 99)
    assert torch.equal(model_input == 99, mask)
    with pytest.raises(KeyError, match="unknown masking policy"):
        rollin(align, lengths, "nope")
