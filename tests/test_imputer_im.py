"""Imputer-IM loss (Eq. 10) against a per-frame loop, at the paper's weight and masked-frames-only."""

from __future__ import annotations

import pytest
import torch

from asr_zoo.losses.imputer_im import imputer_im_loss


def _loop_reference(lp, alignment, lengths, masked, observed_weight):
    total = torch.zeros((), dtype=lp.dtype)
    for b in range(lp.shape[0]):
        for t in range(int(lengths[b])):
            w = 1.0 if masked[b, t] else observed_weight
            total = total - w * lp[b, t, alignment[b, t]]
    return total


def _case(seed=0, B=3, T=7, V=5):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(B, T, V, generator=g, dtype=torch.float64).log_softmax(-1).requires_grad_()
    lengths = torch.tensor([T, T - 2, 3])
    alignment = torch.randint(0, V, (B, T), generator=g)
    alignment[1, T - 2:] = 99  # padding may hold anything
    masked = torch.rand(B, T, generator=g) < 0.5
    return lp, alignment, lengths, masked


@pytest.mark.parametrize("observed_weight", [1.0, 0.5, 0.0])
def test_matches_per_frame_loop_values_and_gradients(observed_weight):
    lp, alignment, lengths, masked = _case()
    got = imputer_im_loss(lp, alignment, lengths, masked, observed_weight)
    (grad,) = torch.autograd.grad(got, lp)
    want = _loop_reference(lp, alignment.clamp(max=lp.shape[-1] - 1), lengths, masked, observed_weight)
    (want_grad,) = torch.autograd.grad(want, lp)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, want_grad)


def test_weight_one_is_cross_entropy_over_valid_frames_and_zero_ignores_given_frames():
    lp, alignment, lengths, masked = _case(seed=1)
    valid = torch.arange(lp.shape[1])[None] < lengths[:, None]
    ce = torch.nn.functional.nll_loss(lp[valid], alignment[valid], reduction="sum")
    torch.testing.assert_close(imputer_im_loss(lp, alignment, lengths, masked, 1.0), ce)
    everything_given = torch.zeros_like(masked)
    assert imputer_im_loss(lp, alignment, lengths, everything_given, 0.0).item() == 0.0
    (grad,) = torch.autograd.grad(imputer_im_loss(lp, alignment, lengths, masked, 0.0), lp)
    assert grad[~masked | ~valid].abs().sum() == 0  # given frames and padding get no gradient at weight 0


def test_half_precision_input_is_computed_in_float32():
    lp, alignment, lengths, masked = _case(seed=2)
    got = imputer_im_loss(lp.detach().to(torch.bfloat16), alignment, lengths, masked)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), imputer_im_loss(lp.detach(), alignment, lengths, masked), rtol=2e-2, atol=0.1)
