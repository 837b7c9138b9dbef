"""CTC Viterbi alignment against brute-force argmax over all alignments; collapse helpers."""

from __future__ import annotations

import itertools

import pytest
import torch

from asr_zoo.align.viterbi import ctc_viterbi
from asr_zoo.decoding.ctc import collapse_ctc


def collapse(seq, blank=0):
    seq = seq.tolist() if torch.is_tensor(seq) else list(seq)
    return collapse_ctc(torch.tensor([seq]), torch.tensor([len(seq)]), blank)[0]


BLANK = 0


def _brute_best(lp: torch.Tensor, target: list[int]) -> tuple[list[int], float]:
    """Highest-scoring length-T sequence that collapses to ``target``. lp: shape (T, C)."""
    num_frames, num_classes = lp.shape
    best, best_score = None, float("-inf")
    for seq in itertools.product(range(num_classes), repeat=num_frames):
        if collapse(list(seq), BLANK) == target:
            score = float(lp[torch.arange(num_frames), torch.tensor(seq)].sum())
            if score > best_score:
                best, best_score = list(seq), score
    return best, best_score


def test_matches_brute_force_argmax_on_tiny_inputs():
    gen = torch.Generator().manual_seed(0)
    cases = []
    for _ in range(60):
        num_frames = int(torch.randint(1, 8, (1,), generator=gen))
        num_labels = int(torch.randint(0, min(num_frames, 3) + 1, (1,), generator=gen))
        target = torch.randint(1, 4, (num_labels,), generator=gen).tolist()
        repeats = sum(a == b for a, b in zip(target, target[1:]))
        if num_frames >= num_labels + repeats:
            cases.append((num_frames, target))
    batch = len(cases)
    lp = torch.randn(batch, 7, 4, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, 4, (batch, 3), generator=gen)  # junk padding
    for i, (_, target) in enumerate(cases):
        targets[i, : len(target)] = torch.tensor(target, dtype=torch.long)
    input_lengths = torch.tensor([c[0] for c in cases])
    target_lengths = torch.tensor([len(c[1]) for c in cases])

    align = ctc_viterbi(lp, targets, input_lengths, target_lengths)
    assert align.shape == (batch, 7) and align.dtype == torch.long
    for i, (num_frames, target) in enumerate(cases):
        ref, _ = _brute_best(lp[i, :num_frames], target)
        assert align[i, :num_frames].tolist() == ref, (i, target)
        assert (align[i, num_frames:] == BLANK).all()


def test_collapses_to_target_and_batch_equals_one_by_one():
    gen = torch.Generator().manual_seed(1)
    batch, num_frames, num_classes, max_labels = 8, 60, 6, 20
    lp = torch.randn(batch, num_frames, num_classes, generator=gen).log_softmax(-1)
    targets = torch.randint(1, 3, (batch, max_labels), generator=gen)  # many repeats
    input_lengths = torch.randint(45, num_frames + 1, (batch,), generator=gen)
    target_lengths = torch.randint(0, max_labels + 1, (batch,), generator=gen)
    align = ctc_viterbi(lp, targets, input_lengths, target_lengths, blank=BLANK)
    hyps = collapse_ctc(align, input_lengths, blank=BLANK)
    for i in range(batch):
        assert hyps[i] == targets[i, : target_lengths[i]].tolist()
        one = ctc_viterbi(lp[i : i + 1, : input_lengths[i]], targets[i : i + 1, : target_lengths[i]],
                          input_lengths[i : i + 1], target_lengths[i : i + 1])
        assert torch.equal(one[0], align[i, : input_lengths[i]])


def test_other_blank_index():
    gen = torch.Generator().manual_seed(2)
    lp = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64).log_softmax(-1)
    targets, blank = torch.tensor([[0, 1], [2, 2]]), 3
    align = ctc_viterbi(lp, targets, torch.tensor([6, 5]), torch.tensor([2, 2]), blank=blank)
    for i, num_frames in enumerate((6, 5)):
        perm = [blank] + [c for c in range(4) if c != blank]  # relabel so blank is 0
        lp_relabelled = lp[i, :num_frames, perm]
        ref, _ = _brute_best(lp_relabelled, [perm.index(t) for t in targets[i].tolist()])
        assert [perm[r] for r in ref] == align[i, :num_frames].tolist()
    assert align[1, 5] == blank


def test_too_short_raises_with_index():
    lp = torch.zeros(3, 4, 3).log_softmax(-1)
    targets = torch.tensor([[1, 2, 1], [1, 1, 2], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"batch indices \[2\]"):
        # row 1 needs 4 frames (1 ∅ 1 2), row 2 needs 5
        ctc_viterbi(lp, targets, torch.tensor([4, 4, 4]), torch.tensor([3, 3, 3]))


def test_collapse_helpers():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 0], blank=0) == [1, 1, 2]
    assert collapse(torch.tensor([3, 3, 1, 3]), blank=3) == [1]
    alignments = torch.tensor([[0, 1, 1, 0, 1, 2], [2, 2, 0, 2, 5, 5]])
    assert collapse_ctc(alignments, torch.tensor([6, 4]), blank=0) == [[1, 1, 2], [2, 2]]
