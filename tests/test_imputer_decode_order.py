"""Imputer decoding with a blank penalty: the token choice and the commit order both use
log p(blank) - penalty; 0 is the unpenalised decoder, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from asr_zoo.decoding.ctc import collapse_ctc
from asr_zoo.decoding.imputer import DECODING_STRATEGIES, imputer_decode
from test_imputer_decoding import RecordingModel, assert_commits_in_confidence_order

MASK, BLANK = 9, 0
LENGTHS = torch.tensor([24, 21, 5, 1, 0])


def blank_heavy_model(seed: int, num_frames: int = 24, num_classes: int = 6) -> RecordingModel:
    """Fixed log-probs that ignore the input, blank-heavy (blank wins most frames, some narrowly)."""
    return RecordingModel(len(LENGTHS), num_frames, num_classes, seed=seed, blank_bias=1.0)


def _penalised(log_probs: torch.Tensor, penalty: float) -> torch.Tensor:
    out = log_probs.clone()
    out[..., BLANK] -= penalty
    return out


@pytest.mark.parametrize("strategy", DECODING_STRATEGIES)
def test_zero_penalty_is_the_plain_decoder(strategy):
    a, b = blank_heavy_model(0), blank_heavy_model(0)
    ali_a, steps_a = imputer_decode(a, LENGTHS, 4, strategy, mask_id=MASK)
    ali_b, steps_b = imputer_decode(b, LENGTHS, 4, strategy, mask_id=MASK, blank_penalty=0.0)
    assert torch.equal(ali_a, ali_b) and steps_a == steps_b
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))


@pytest.mark.parametrize("strategy", DECODING_STRATEGIES)
@pytest.mark.parametrize("penalty", [0.3, 1.0, math.inf])
def test_tokens_are_the_penalised_argmax(strategy, penalty):
    model = blank_heavy_model(1)
    alignment, _ = imputer_decode(model, LENGTHS, 8, strategy, mask_id=MASK, blank_penalty=penalty)
    valid = torch.arange(24) < LENGTHS[:, None]
    expected = _penalised(model.log_probs, penalty).argmax(-1)
    assert torch.equal(alignment[valid], expected[valid]) and (alignment[~valid] == BLANK).all()
    plain = model.log_probs.argmax(-1)
    assert ((alignment != BLANK) & valid).sum() >= ((plain != BLANK) & valid).sum()  # never fewer tokens
    if penalty == math.inf:
        assert not (alignment[valid] == BLANK).any()


def test_commit_order_follows_penalised_confidence():
    """A blank slot ranks by log p(blank) - penalty: a token slot of lower raw confidence can
    now be committed first."""
    penalty = 0.7
    model = blank_heavy_model(2)
    imputer_decode(model, LENGTHS, 8, "default", mask_id=MASK, blank_penalty=penalty)
    assert_commits_in_confidence_order(model.commit_step(), _penalised(model.log_probs, penalty).max(-1).values, LENGTHS)


def test_split_token_mass_is_dropped_without_a_penalty_and_kept_with_one():
    """One token whose probability is split over two frames (0.45 each, blank 0.55): every frame's
    argmax is blank, so the token is deleted; a penalty above log(0.55/0.45) = 0.20 nats keeps it,
    and the two frames merge into one token."""
    probs = torch.tensor([[0.98, 0.01, 0.01], [0.55, 0.45, 0.0], [0.55, 0.45, 0.0], [0.98, 0.01, 0.01]])
    log_probs = probs.clamp_min(1e-6).log()[None]  # (1, 4, 3)
    lengths = torch.tensor([4])
    out = {}
    for penalty in (0.0, 0.1, 0.3):
        ali, _ = imputer_decode(lambda a: log_probs, lengths, 2, mask_id=MASK, blank_penalty=penalty)
        out[penalty] = collapse_ctc(ali, lengths, BLANK)[0]
    assert out == {0.0: [], 0.1: [], 0.3: [1]}
