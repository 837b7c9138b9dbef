"""Pruned RNN-T: the simple loss, the pruning bounds, the pruned loss, the warm-up weights."""

import itertools

import pytest
import torch

from asr_zoo.losses.rnnt import rnnt_loss
from asr_zoo.losses.rnnt_pruned import (gather_pruned, prune_ranges, pruned_loss_scales, pruned_rnnt_loss,
                                        simple_rnnt_loss, simple_rnnt_loss_reference)


def _inputs(B=3, T=7, U=4, V=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(B, T, V, generator=g, dtype=dtype)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=dtype)
    targets = torch.randint(1, V, (B, U), generator=g)
    T_lens = torch.randint(max(1, T - 3), T + 1, (B,), generator=g)
    U_lens = torch.randint(0, U + 1, (B,), generator=g)
    T_lens[0], U_lens[0] = T, U  # one utterance fills the padded shape
    return am, lm, targets, T_lens, U_lens


def _brute_force(logits, targets, T_b, U_b):
    """-log of the sum over every alignment: sequences of T_b blanks and U_b labels ending in blank."""
    lp = logits.log_softmax(-1)
    total = []
    for label_slots in itertools.combinations(range(T_b + U_b - 1), U_b):
        t = u = 0
        score = 0.0
        for i in range(T_b + U_b):
            if i in label_slots:
                score = score + lp[t, u, targets[u]]
                u += 1
            else:
                score = score + lp[t, u, 0]
                t += 1
        total.append(score)
    return -torch.logsumexp(torch.stack(total), 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_simple_loss_equals_brute_force_over_alignments(seed):
    am, lm, targets, T_lens, U_lens = _inputs(B=3, T=4, U=3, V=5, seed=seed)
    am.requires_grad_(True)
    lm.requires_grad_(True)
    ours = simple_rnnt_loss(am, lm, targets, T_lens, U_lens, reduction="none")
    brute = torch.stack([_brute_force(am[b, :, None] + lm[b, None], targets[b], int(T_lens[b]), int(U_lens[b]))
                         for b in range(3)])
    torch.testing.assert_close(ours, brute)
    for a, b in zip(torch.autograd.grad(ours.sum(), [am, lm]), torch.autograd.grad(brute.sum(), [am, lm])):
        torch.testing.assert_close(a, b)


def test_simple_loss_matches_full_lattice_reference_and_never_builds_it():
    am, lm, targets, T_lens, U_lens = _inputs(B=4, T=9, U=5, V=7, seed=3, dtype=torch.float32)
    for reduction in ("none", "mean", "mean_per_token", "sum"):
        torch.testing.assert_close(simple_rnnt_loss(am, lm, targets, T_lens, U_lens, reduction=reduction),
                                   simple_rnnt_loss_reference(am, lm, targets, T_lens, U_lens, reduction=reduction))
    big = 40.0 * torch.randn(2, 6, 9)  # large scores: the max-shifted product must not overflow
    loss = simple_rnnt_loss(big, 40.0 * torch.randn(2, 3, 9), torch.ones(2, 2, dtype=torch.long),
                            torch.tensor([6, 6]), torch.tensor([2, 2]))
    assert torch.isfinite(loss)


def test_simple_and_pruned_gradcheck_float64():
    am, lm, targets, T_lens, U_lens = _inputs(B=2, T=5, U=3, V=4, seed=4)
    am.requires_grad_(True)
    lm.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, m: simple_rnnt_loss(a, m, targets, T_lens, U_lens, reduction="none"), (am, lm))
    _, occ = simple_rnnt_loss(am, lm, targets, T_lens, U_lens, return_occupancy=True)
    ranges = prune_ranges(occ, T_lens, U_lens, 2)
    logits = torch.randn(2, 5, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: pruned_rnnt_loss(x, ranges, targets, T_lens, U_lens, reduction="none"), (logits,))


def _band(logits, ranges):
    """Full lattice `(B, T, U+1, V)` -> its band `(B, T, S, V)` (what the joiner computes directly)."""
    return logits.gather(2, ranges[..., None].expand(-1, -1, -1, logits.shape[-1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_with_full_range_equals_full_loss_values_and_gradients(seed):
    am, lm, targets, T_lens, U_lens = _inputs(B=3, T=8, U=5, V=6, seed=seed)
    _, occ = simple_rnnt_loss(am, lm, targets, T_lens, U_lens, return_occupancy=True)
    logits = torch.randn(3, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    full = rnnt_loss(logits, targets, T_lens, U_lens, reduction="none")
    full_grad = torch.autograd.grad(full.sum(), logits)[0]
    for s_range in (6, 9):  # S >= U + 1 (taken as U + 1)
        ranges = prune_ranges(occ, T_lens, U_lens, s_range)
        assert ranges.shape == (3, 8, 6) and int(ranges[..., 0].max()) == 0
        pruned = pruned_rnnt_loss(_band(logits, ranges), ranges, targets, T_lens, U_lens, reduction="none")
        torch.testing.assert_close(pruned, full)
        torch.testing.assert_close(torch.autograd.grad(pruned.sum(), logits)[0], full_grad)


@pytest.mark.parametrize("seed", range(4))
def test_pruned_never_below_full_and_ranges_form_a_valid_band(seed):
    B, T, U, V = 4, 12, 8, 7
    am, lm, targets, T_lens, U_lens = _inputs(B, T, U, V, seed=seed)
    _, occ = simple_rnnt_loss(am, lm, targets, T_lens, U_lens, return_occupancy=True)
    logits = torch.randn(B, T, U + 1, V, dtype=torch.float64) + 2 * am[:, :, None] + lm[:, None]
    full = rnnt_loss(logits, targets, T_lens, U_lens, reduction="none")
    for S in (2, 3, 4, 6):
        ranges = prune_ranges(occ, T_lens, U_lens, S)
        start = ranges[..., 0]
        assert (ranges - start[..., None] == torch.arange(S)).all()
        assert (start[:, 1:] >= start[:, :-1]).all() and (start[:, 1:] - start[:, :-1] <= S - 1).all()
        assert (start >= 0).all() and (start <= U + 1 - S).all() and (start[:, 0] == 0).all()
        assert (start <= (U_lens + 1 - S).clamp(min=0)[:, None]).all()
        last = start.gather(1, (T_lens - 1)[:, None]).squeeze(1)
        assert ((last <= U_lens) & (U_lens <= last + S - 1)).all()  # the last frame's band holds U_b
        pruned = pruned_rnnt_loss(_band(logits, ranges), ranges, targets, T_lens, U_lens, reduction="none")
        assert (pruned >= full - 1e-9).all(), (S, pruned, full)
        assert torch.isfinite(pruned).all()


def test_variable_lengths_batched_equal_one_by_one():
    B, T, U, V = 4, 10, 6, 8
    am, lm, targets, T_lens, U_lens = _inputs(B, T, U, V, seed=7)
    simple, occ = simple_rnnt_loss(am, lm, targets, T_lens, U_lens, reduction="none", return_occupancy=True)
    joint = torch.randn(B, T, U + 1, V, dtype=torch.float64)
    ranges = prune_ranges(occ, T_lens, U_lens, 3)
    pruned = pruned_rnnt_loss(_band(joint, ranges), ranges, targets, T_lens, U_lens, reduction="none")
    for b in range(B):
        Tb, Ub = int(T_lens[b]), int(U_lens[b])
        args = (targets[b:b + 1, :Ub], T_lens[b:b + 1], U_lens[b:b + 1])
        s1, occ1 = simple_rnnt_loss(am[b:b + 1, :Tb], lm[b:b + 1, :Ub + 1], *args, reduction="none",
                                    return_occupancy=True)
        torch.testing.assert_close(s1[0], simple[b])
        torch.testing.assert_close(occ1[0], occ[b, :Tb, :Ub + 1])
        r1 = prune_ranges(occ1, T_lens[b:b + 1], U_lens[b:b + 1], 3)
        if Ub + 1 >= 3:  # same band (alone, a short target takes S = U_b + 1)
            assert torch.equal(r1[0], ranges[b, :Tb])
        p1 = pruned_rnnt_loss(_band(joint[b:b + 1, :Tb, :Ub + 1], r1), r1, *args, reduction="none")
        torch.testing.assert_close(p1[0], pruned[b])


def test_gather_pruned_and_joiner_band_equals_full_joiner_band():
    from asr_zoo.nn.transducer import Joiner

    j = Joiner(6, 5, 4, 3)
    enc, pred = torch.randn(2, 7, 6), torch.randn(2, 4, 5)
    ranges = torch.tensor([0, 0, 1, 1, 2, 2, 2])[None, :, None].expand(2, 7, 1) + torch.arange(2)
    band = j.join(j.encoder_proj(enc)[:, :, None], gather_pruned(j.predictor_proj(pred), ranges))
    torch.testing.assert_close(band, _band(j(enc, pred), ranges))


def test_warm_up_schedule_is_icefalls():
    assert pruned_loss_scales(0, 2000) == (1.0, 0.1)
    s, p = pruned_loss_scales(1000, 2000)
    assert s == pytest.approx(0.75) and p == pytest.approx(0.55)
    assert pruned_loss_scales(2000, 2000) == (0.5, 1.0) == pruned_loss_scales(10 ** 6, 2000)
    assert pruned_loss_scales(5, 0, 0.25) == (0.25, 1.0)


def test_prune_ranges_rejects_a_band_of_one():
    with pytest.raises(ValueError, match="s_range"):
        prune_ranges(torch.rand(1, 3, 4), torch.tensor([3]), torch.tensor([3]), 1)


# ------------------------------------------------------------------------ objective.loss=pruned
def _module(*overrides):
    from omegaconf import OmegaConf

    from asr_zoo.config import compose
    from asr_zoo.objectives.rnnt import RNNTModule

    torch.manual_seed(0)
    tiny = ["encoder.d_model=32", "encoder.num_layers=1", "encoder.ffn_dim=64", "encoder.frontend_channels=8",
            "objective.embed_dim=16", "objective.hidden_dim=24", "objective.joint_dim=32", "objective.dropout=0.0",
            "encoder.dropout=0.0"]
    cfg = compose(["objective=rnnt", *tiny, *overrides])
    return RNNTModule(OmegaConf.to_container(cfg, resolve=True), 12, 20)


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"feats": torch.randn(3, 48, 20, generator=g), "feat_lens": torch.tensor([48, 40, 20]),
            "tokens": torch.tensor([[3, 5, 7, 4], [9, 9, 0, 0], [6, 0, 0, 0]]), "token_lens": torch.tensor([4, 2, 1]),
            "ids": ["a", "b", "c"], "texts": ["", "", ""]}


def test_objective_pruned_loss_trains_and_full_range_matches_full_loss():
    from asr_zoo.config import ConfigError

    module, batch = _module("objective.loss=pruned", "objective.prune_range=3"), _batch()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss, extra = module.compute_loss(batch)
        assert torch.isfinite(loss) and {"simple_loss", "pruned_loss", "ctc_loss"} <= set(extra)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert module.simple_am_proj.weight.grad is not None and module.joiner.out.weight.grad is not None
    # with the band covering the lattice, the pruned term is the full loss of the same joiner
    full, pruned = _module("objective.ctc_weight=0"), _module("objective.ctc_weight=0", "objective.loss=pruned",
                                                              "objective.prune_range=5")
    pruned.load_state_dict(full.state_dict(), strict=False)
    full.eval(), pruned.eval()
    torch.testing.assert_close(pruned.compute_loss(batch)[1]["pruned_loss"], full.compute_loss(batch)[0])
    with pytest.raises(ConfigError, match="objective.loss"):
        _module("objective.loss=tiny")
