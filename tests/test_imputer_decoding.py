"""Imputer iterative decoding: step counts, commit orders, strategy rules, padding."""

from __future__ import annotations

import math

import pytest
import torch

from asr_zoo.decoding.ctc import collapse_ctc
from asr_zoo.decoding.imputer import DECODING_STRATEGIES, imputer_decode

MASK, BLANK = 9, 0


class RecordingModel:
    """Fixed random log-probs that ignore the input (``blank_bias`` added to blank's logit);
    records every input it is given."""

    def __init__(self, batch: int, num_frames: int, num_classes: int = 6, seed: int = 0, blank_bias: float = 0.0):
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(batch, num_frames, num_classes, generator=gen)
        logits[..., BLANK] += blank_bias
        self.log_probs = logits.log_softmax(-1)
        self.inputs: list[torch.Tensor] = []

    def __call__(self, alignment: torch.Tensor) -> torch.Tensor:
        self.inputs.append(alignment.clone())
        return self.log_probs

    def commit_step(self) -> torch.Tensor:
        """(B, T): the step at which each slot was committed (-1 = never masked)."""
        return torch.stack([a == MASK for a in self.inputs]).sum(0) - 1


LENGTHS = torch.tensor([24, 21, 5, 1, 0])


@pytest.mark.parametrize("strategy", DECODING_STRATEGIES)
@pytest.mark.parametrize("block_size", [1, 2, 3, 8])
def test_fills_every_slot_in_the_promised_steps(strategy, block_size):
    model = RecordingModel(len(LENGTHS), 24)
    alignment, steps = imputer_decode(model, LENGTHS, block_size, strategy, mask_id=MASK)
    valid = torch.arange(24) < LENGTHS[:, None]
    assert steps == len(model.inputs)
    assert torch.equal(alignment[valid], model.log_probs.argmax(-1)[valid])
    assert (alignment[~valid] == BLANK).all()
    for given in model.inputs:  # padding is blank in every model input
        assert (given[~valid] == BLANK).all()
    assert torch.equal(model.inputs[0][valid], torch.full_like(alignment[valid], MASK))
    if strategy != "topk" or block_size == 1:
        assert steps == block_size
    else:
        assert steps >= math.ceil(24 / math.ceil(24 / block_size))
        assert steps <= 2 * block_size + 1  # loose: the neighbour rule costs a few steps


@pytest.mark.parametrize("block_size", [3, 4, 8])
def test_block_strategies_commit_one_slot_per_block_per_step(block_size):
    for strategy in ("default", "alternate_subblock", "rightmost_last"):
        model = RecordingModel(len(LENGTHS), 24, seed=block_size)
        imputer_decode(model, LENGTHS, block_size, strategy, mask_id=MASK)
        step = model.commit_step()
        for b, n in enumerate(LENGTHS.tolist()):
            for start in range(0, n, block_size):
                block = step[b, start : min(start + block_size, n)].tolist()
                assert len(set(block)) == len(block)  # one slot per block per step
                assert max(block) < block_size
                if strategy != "alternate_subblock":  # no idle step before the block is full
                    assert sorted(block) == list(range(len(block)))


def assert_commits_in_confidence_order(step, conf, lengths, block: int = 8) -> None:
    """Within every block, the slots were committed at steps 0, 1, ... in decreasing ``conf``."""
    for b, n in enumerate(lengths.tolist()):
        for start in range(0, n, block):
            stop = min(start + block, n)
            by_conf = conf[b, start:stop].argsort(descending=True)
            assert step[b, start:stop][by_conf].tolist() == list(range(stop - start))


def test_default_commits_in_confidence_order():
    model = RecordingModel(len(LENGTHS), 24, seed=1)
    imputer_decode(model, LENGTHS, 8, "default", mask_id=MASK)
    assert_commits_in_confidence_order(model.commit_step(), model.log_probs.max(-1).values, LENGTHS)


def test_alternate_subblock_parity():
    model = RecordingModel(len(LENGTHS), 24, seed=2)
    _, steps = imputer_decode(model, LENGTHS, 8, "alternate_subblock", mask_id=MASK)
    step = model.commit_step()
    pos = torch.arange(24) % 8
    valid = torch.arange(24) < LENGTHS[:, None]
    left = (pos < 4).expand_as(step)
    assert (step[valid & left] % 2 == 0).all() and (step[valid & ~left] % 2 == 1).all()
    # the 5-frame utterance: its 4 left slots at steps 0, 2, 4, 6 and its 1 right slot at 1
    assert sorted(step[2, :5].tolist()) == [0, 1, 2, 4, 6]
    assert steps == 8


def test_rightmost_last():
    model = RecordingModel(len(LENGTHS), 24, seed=3)
    imputer_decode(model, LENGTHS, 8, "rightmost_last", mask_id=MASK)
    step = model.commit_step()
    for b, n in enumerate(LENGTHS.tolist()):
        for start in range(0, n, 8):
            stop = min(start + 8, n)
            assert step[b, stop - 1] == stop - start - 1  # the block's last step
            assert (step[b, start : stop - 1] < stop - start - 1).all()


@pytest.mark.parametrize("block_size", [2, 3, 4, 8])
def test_topk_never_commits_neighbours_together_and_at_most_k(block_size):
    for seed in range(5):
        model = RecordingModel(len(LENGTHS), 24, seed=seed)
        imputer_decode(model, LENGTHS, block_size, "topk", mask_id=MASK)
        step = model.commit_step()
        valid = torch.arange(24) < LENGTHS[:, None]
        same = (step[:, 1:] == step[:, :-1]) & valid[:, 1:] & valid[:, :-1]
        assert not same.any()
        for b, n in enumerate(LENGTHS.tolist()):
            if n:
                counts = torch.bincount(step[b, :n])
                assert counts.max() <= math.ceil(n / block_size)


def test_topk_greedy_order():
    """Confidences 5 4 3 2 1 with k = 3: greedy takes 5, skips 4 (neighbour), takes 3, 1."""
    conf = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    log_probs = torch.stack([conf - 10, conf - 20], -1)[None]  # (1, 6, 2), class 0 wins
    given = []

    def step_fn(a):
        given.append(a.clone())
        return log_probs

    _, steps = imputer_decode(step_fn, torch.tensor([6]), 2, "topk", mask_id=MASK)
    first_commit = given[1][0] != MASK
    assert first_commit.tolist() == [True, False, True, False, True, False]
    assert steps == 2


def test_block_size_one_is_single_argmax():
    for strategy in DECODING_STRATEGIES:
        model = RecordingModel(len(LENGTHS), 24, seed=4)
        alignment, steps = imputer_decode(model, LENGTHS, 1, strategy, mask_id=MASK)
        valid = torch.arange(24) < LENGTHS[:, None]
        assert steps == 1
        assert torch.equal(alignment, torch.where(valid, model.log_probs.argmax(-1), BLANK))


def test_model_input_reflects_commits_and_collapse():
    model = RecordingModel(2, 10, seed=5)
    alignment, steps = imputer_decode(model, torch.tensor([10, 7]), 4, mask_id=MASK)
    for before, after in zip(model.inputs, model.inputs[1:] + [alignment]):
        kept = before != MASK
        assert torch.equal(after[kept], before[kept])  # commits are never revised
    assert collapse_ctc(alignment, torch.tensor([10, 7]), blank=BLANK) == [
        [t for i, t in enumerate(row) if t != BLANK and (i == 0 or t != row[i - 1])]
        for row in (alignment[0].tolist(), alignment[1, :7].tolist())
    ]
    with pytest.raises(KeyError):
        imputer_decode(model, torch.tensor([3]), 2, "nope", mask_id=MASK)
