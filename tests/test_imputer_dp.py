"""Imputer-DP loss against brute-force enumeration of all CTC alignments (values and gradients)."""

from __future__ import annotations

import itertools
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from asr_zoo.losses.imputer_dp import MASKED, imputer_dp_loss

BLANK = 0


def _collapse(seq, blank=BLANK):
    out, prev = [], None
    for tok in seq:
        if tok != prev and tok != blank:
            out.append(tok)
        prev = tok
    return tuple(out)


@lru_cache(maxsize=None)
def _all_alignments(num_frames: int, num_classes: int, target: tuple) -> tuple:
    """Every length-T sequence over C classes that collapses to ``target``."""
    return tuple(
        seq for seq in itertools.product(range(num_classes), repeat=num_frames)
        if _collapse(seq) == target
    )


def _brute_dp(lp: torch.Tensor, target: tuple, observed: list[int], observed_weight: float = 1.0) -> torch.Tensor | None:
    """-log Σ over compatible alignments of Π_t p(a_t)^(w at observed frames, 1 at masked ones);
    None when there is none.

    lp: shape (T, C) for one utterance (its valid frames only).
    """
    num_frames, num_classes = lp.shape
    compatible = [
        seq for seq in _all_alignments(num_frames, num_classes, target)
        if all(o == MASKED or o == a for o, a in zip(observed, seq))
    ]
    if not compatible:
        return None
    paths = torch.tensor(compatible)  # (N, T)
    weight = torch.tensor([observed_weight if o != MASKED else 1.0 for o in observed], dtype=lp.dtype)
    scores = (lp.gather(1, paths.T) * weight[:, None]).sum(0)  # (N,)
    return -torch.logsumexp(scores, 0)


def _random_case(gen: torch.Generator):
    num_frames = int(torch.randint(1, 8, (1,), generator=gen))
    num_classes = int(torch.randint(2, 5, (1,), generator=gen))
    num_labels = int(torch.randint(0, min(num_frames, 3) + 1, (1,), generator=gen))
    target = torch.randint(1, num_classes, (num_labels,), generator=gen).tolist()
    aligns = _all_alignments(num_frames, num_classes, tuple(target))
    masked = torch.rand(num_frames, generator=gen) < torch.rand(1, generator=gen)
    if aligns and torch.rand(1, generator=gen) < 0.7:  # observed tokens from a valid alignment
        tokens = torch.tensor(aligns[int(torch.randint(len(aligns), (1,), generator=gen))])
    else:  # arbitrary tokens: often infeasible
        tokens = torch.randint(0, num_classes, (num_frames,), generator=gen)
    observed = torch.where(masked, MASKED, tokens).tolist()
    return num_frames, num_classes, target, observed


def _random_cases_by_classes(seed: int, count: int) -> dict[int, list]:
    """``count`` random cases (:func:`_random_case`) grouped by their number of classes."""
    gen = torch.Generator().manual_seed(seed)
    by_classes: dict[int, list] = {}
    for _ in range(count):
        case = _random_case(gen)
        by_classes.setdefault(case[1], []).append(case)
    return by_classes


def _pad_batch(cases, num_classes, gen):
    """Pads cases into one batch; padding holds junk that the loss must ignore."""
    batch, max_frames = len(cases), 7
    logits = torch.randn(batch, max_frames, num_classes, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, num_classes, (batch, 3), generator=gen)
    observed = torch.randint(-1, num_classes, (batch, max_frames), generator=gen)
    for i, (num_frames, _, target, obs) in enumerate(cases):
        targets[i, : len(target)] = torch.tensor(target, dtype=torch.long)
        observed[i, :num_frames] = torch.tensor(obs)
    input_lengths = torch.tensor([c[0] for c in cases])
    target_lengths = torch.tensor([len(c[2]) for c in cases])
    return logits, targets, input_lengths, target_lengths, observed


def _check_against_brute_force(cases, num_classes, seed, observed_weight=1.0):
    gen = torch.Generator().manual_seed(seed)
    logits, targets, input_lengths, target_lengths, observed = _pad_batch(cases, num_classes, gen)
    logits.requires_grad_(True)
    lp = logits.log_softmax(-1)
    loss, infeasible = imputer_dp_loss(
        lp, targets, input_lengths, target_lengths, observed, reduction="none",
        return_infeasible=True, observed_weight=observed_weight,
    )
    loss.sum().backward()
    for i, (num_frames, _, target, obs) in enumerate(cases):
        ref_logits = logits.detach()[i].clone().requires_grad_(True)
        ref_lp = ref_logits.log_softmax(-1)[:num_frames]
        ref = _brute_dp(ref_lp, tuple(target), obs, observed_weight)
        if ref is None:
            assert infeasible[i], (i, target, obs)
            assert loss[i] == 0
            assert torch.count_nonzero(logits.grad[i]) == 0
            continue
        assert not infeasible[i], (i, target, obs)
        ref.backward()
        torch.testing.assert_close(loss[i], ref.detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(logits.grad[i], ref_logits.grad, rtol=1e-7, atol=1e-9)


def test_random_masks_match_brute_force_values_and_gradients():
    by_classes = _random_cases_by_classes(seed=0, count=240)
    for num_classes, cases in by_classes.items():
        _check_against_brute_force(cases, num_classes, seed=num_classes)
    # the random draw must exercise both outcomes
    all_cases = [c for cs in by_classes.values() for c in cs]
    feasible = [_brute_dp(torch.zeros(c[0], c[1]), tuple(c[2]), c[3]) is not None for c in all_cases]
    assert 30 < sum(feasible) < len(feasible) - 30


@pytest.mark.parametrize("observed_weight", [0.0, 0.5])
def test_observed_weight_matches_brute_force(observed_weight):
    """w = 0: -log p(masked frames | ã, x) (the given tokens are not predicted); values and gradients."""
    for num_classes, cases in _random_cases_by_classes(seed=1, count=80).items():
        _check_against_brute_force(cases, num_classes, seed=num_classes, observed_weight=observed_weight)


@pytest.mark.parametrize(
    "target, observed, feasible",
    [
        ([1, 1], [MASKED, BLANK, MASKED, MASKED], True),  # forced blank between repeats
        ([1, 1], [MASKED, 1, MASKED, MASKED], True),  # repeated label, 4 frames
        ([1, 1], [MASKED, 1, MASKED], False),  # only (1, ∅, 1) fits in 3 frames
        ([1, 2], [BLANK, BLANK, MASKED], False),  # 2 labels need 2 free frames
        ([1, 2], [MASKED, 3, MASKED, MASKED], False),  # token not in the target
        ([1, 2], [2, MASKED, MASKED, MASKED], False),  # wrong order
        ([1, 2, 1], [MASKED] * 5, True),
        ([2], [MASKED, 2, BLANK, 2, MASKED], False),  # would collapse to (2, 2)
        ([2], [MASKED, 2, MASKED, 2, MASKED], True),  # the masked frame must be 2
        ([], [BLANK, MASKED, MASKED], True),
        ([], [MASKED, 1, MASKED], False),
        ([1, 1, 2], [MASKED, MASKED, MASKED], False),  # T too short, nothing observed
    ],
)
def test_hand_made_masks(target, observed, feasible):
    case = (len(observed), 4, target, observed)
    assert (_brute_dp(torch.zeros(len(observed), 4), tuple(target), observed) is not None) == feasible
    _check_against_brute_force([case], 4, seed=len(observed))


def _random_batch(gen, batch=6, num_frames=30, num_classes=7, max_labels=8):
    logits = torch.randn(batch, num_frames, num_classes, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, num_classes, (batch, max_labels), generator=gen)
    input_lengths = torch.randint(num_frames // 2, num_frames + 1, (batch,), generator=gen)
    input_lengths[0] = num_frames
    target_lengths = torch.randint(1, max_labels + 1, (batch,), generator=gen)
    return logits, targets, input_lengths, target_lengths


def test_nothing_observed_equals_ctc_loss():
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        logits, targets, input_lengths, target_lengths = _random_batch(gen)
        lp = logits.to(dtype).log_softmax(-1).requires_grad_(True)
        observed = torch.full(lp.shape[:2], MASKED)
        ctc_lp = lp.detach().clone().requires_grad_(True)
        for reduction in ("sum", "mean", "none"):
            ours = imputer_dp_loss(lp, targets, input_lengths, target_lengths, observed,
                                   reduction=reduction)
            ref = F.ctc_loss(ctc_lp.transpose(0, 1), targets, input_lengths, target_lengths,
                             reduction=reduction)
            assert torch.equal(ours, ref), (reduction, ours, ref)
        grad, = torch.autograd.grad(ours.sum(), lp)
        ref_grad, = torch.autograd.grad(ref.sum(), ctc_lp)
        assert torch.equal(grad, ref_grad)


def test_everything_observed_is_frame_cross_entropy():
    from asr_zoo.align.viterbi import ctc_viterbi

    gen = torch.Generator().manual_seed(2)
    logits, targets, input_lengths, target_lengths = _random_batch(gen)
    lp = logits.log_softmax(-1).requires_grad_(True)
    align = ctc_viterbi(torch.randn(lp.shape, generator=gen, dtype=lp.dtype).log_softmax(-1),
                        targets, input_lengths, target_lengths)
    loss, infeasible = imputer_dp_loss(lp, targets, input_lengths, target_lengths, align,
                                       reduction="none", return_infeasible=True)
    valid = torch.arange(lp.shape[1]) < input_lengths[:, None]
    ce = -(lp.gather(2, align[..., None]).squeeze(2) * valid).sum(1)
    assert not infeasible.any()
    torch.testing.assert_close(loss, ce, rtol=1e-12, atol=1e-10)
    grad, = torch.autograd.grad(loss.sum(), lp)
    ref_grad, = torch.autograd.grad(ce.sum(), lp)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)


def test_infeasible_rows_zeroed_counted_and_never_nan():
    gen = torch.Generator().manual_seed(3)
    logits, targets, input_lengths, target_lengths = _random_batch(gen, batch=4)
    targets[:] = torch.tensor([1, 2, 3, 1, 2, 3, 1, 2])
    observed = torch.full(logits.shape[:2], MASKED)
    observed[1, 0] = 6  # label 6 is in no target
    observed[3, 2] = 5
    lp = logits.log_softmax(-1).requires_grad_(True)
    loss, infeasible = imputer_dp_loss(lp, targets, input_lengths, target_lengths, observed,
                                       reduction="none", return_infeasible=True)
    assert infeasible.tolist() == [False, True, False, True]
    assert loss[1] == 0 and loss[3] == 0 and (loss[[0, 2]] > 0).all()
    grad, = torch.autograd.grad(loss.sum(), lp)
    assert grad[[1, 3]].abs().sum() == 0 and grad[[0, 2]].abs().sum() > 0

    kept = imputer_dp_loss(lp, targets, input_lengths, target_lengths, observed,
                           reduction="none", zero_infinity=False)
    assert torch.isinf(kept[[1, 3]]).all() and torch.equal(kept[[0, 2]], loss[[0, 2]])
    grad_kept, = torch.autograd.grad(kept[[0, 2]].sum() + 0 * kept.sum(), lp)
    assert not grad_kept.isnan().any()

    mean = imputer_dp_loss(lp, targets, input_lengths, target_lengths, observed)
    torch.testing.assert_close(mean, (loss / target_lengths).mean())


def test_gradcheck_finite_differences():
    gen = torch.Generator().manual_seed(4)
    logits, targets, input_lengths, target_lengths = _random_batch(gen, batch=3, num_frames=7,
                                                                    num_classes=4, max_labels=3)
    observed = torch.full(logits.shape[:2], MASKED)
    observed[0, 0], observed[1, 3], observed[2, 6] = BLANK, int(targets[1, 0]), BLANK
    input_lengths = torch.tensor([7, 6, 7])
    logits.requires_grad_(True)

    def fn(x):
        return imputer_dp_loss(x.log_softmax(-1), targets, input_lengths, target_lengths,
                               observed, reduction="none")

    _, infeasible = imputer_dp_loss(logits.log_softmax(-1), targets, input_lengths,
                                    target_lengths, observed, return_infeasible=True)
    assert not infeasible.any()
    assert torch.autograd.gradcheck(fn, (logits,))


def test_certain_alignment_is_feasible_not_infeasible():
    """A loss of exactly 0 (probability 1) must not be mistaken for an infeasible mask."""
    align = torch.tensor([[0, 1, 1, 0, 2], [0, 1, 1, 0, 2]])
    lp = torch.full((2, 5, 3), -1e4, dtype=torch.float64).scatter(2, align[..., None], 0.0)
    targets, lengths = torch.tensor([[1, 2], [1, 2]]), torch.tensor([5, 5])
    observed = torch.tensor([[MASKED] * 5, [0, 1, MASKED, MASKED, 2]])
    loss, infeasible = imputer_dp_loss(lp, targets, lengths, torch.tensor([2, 2]), observed,
                                       reduction="none", return_infeasible=True)
    assert loss.tolist() == [0.0, 0.0]
    assert not infeasible.any()


def test_benchmark_smoke(tmp_path):
    import argparse
    import json

    from asr_zoo.bench import imputer_loss

    parser = argparse.ArgumentParser()
    imputer_loss.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--repeats", "1", "--warmup", "0",
                              "--batch", "2", "--frames", "20", "--vocab", "8", "--labels", "5"])
    assert imputer_loss.run(args) == 0
    records = [json.loads(line) for line in (tmp_path / "imputer_loss.jsonl").read_text().splitlines()]
    assert [r["impl"] for r in records] == ["ctc", "imputer_dp", "ctc_viterbi"]
    assert all(r["median_ms"] > 0 and r["T"] == 20 for r in records)
    assert "| imputer_dp |" in (tmp_path / "imputer_loss.md").read_text()
