"""Tests for asr_zoo.losses.rnnt: published vectors, brute force, finite differences, parity.

Gradients are checked w.r.t. the *logits* (torchaudio/NeMo convention), never w.r.t. log-probs.
"""

import doctest
import itertools

import pytest
import torch

from asr_zoo.bench.memory import peak_memory_bytes
from asr_zoo.losses import rnnt as rnnt_module
from asr_zoo.losses.rnnt import rnnt_loss, rnnt_loss_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _torchaudio_imports() -> bool:
    try:
        import torchaudio.functional  # noqa: F401
    except Exception:  # not installed, or a CUDA-linked wheel on a machine without CUDA
        return False
    return True


HAVE_TORCHAUDIO = _torchaudio_imports()

# Published vectors (warp-transducer, torchaudio, NeMo test suites): shared/docs/references.md.
SMALL_LOGITS = [
    [[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1], [0.1, 0.1, 0.2, 0.8, 0.1]],
    [[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.1, 0.1], [0.7, 0.1, 0.2, 0.1, 0.1]],
]
SMALL_GRAD_BLANK0 = [  # NeMo: d loss / d logits, blank = 0
    [[-0.13116688, -0.3999269, 0.17703125, 0.17703125, 0.17703125],
     [-0.18572757, 0.12247056, -0.18168412, 0.12247056, 0.12247056],
     [-0.32091254, 0.06269141, 0.06928472, 0.12624499, 0.06269141]],
    [[0.05456069, -0.21824276, 0.05456069, 0.05456069, 0.05456069],
     [0.12073959, 0.12073959, -0.48295835, 0.12073959, 0.12073959],
     [-0.6925882, 0.16871116, 0.18645467, 0.16871116, 0.16871116]],
]
BIG_LOGITS = [
    0.065357, 0.787530, 0.081592, 0.529716, 0.750675, 0.754135, 0.609764, 0.868140, 0.622532,
    0.668522, 0.858039, 0.164539, 0.989780, 0.944298, 0.603168, 0.946783, 0.666203, 0.286882,
    0.094184, 0.366674, 0.736168, 0.166680, 0.714154, 0.399400, 0.535982, 0.291821, 0.612642,
    0.324241, 0.800764, 0.524106, 0.779195, 0.183314, 0.113745, 0.240222, 0.339470, 0.134160,
    0.505562, 0.051597, 0.640290, 0.430733, 0.829473, 0.177467, 0.320700, 0.042883, 0.302803,
    0.675178, 0.569537, 0.558474, 0.083132, 0.060165, 0.107958, 0.748615, 0.943918, 0.486356,
    0.418199, 0.652408, 0.024243, 0.134582, 0.366342, 0.295830, 0.923670, 0.689929, 0.741898,
    0.250005, 0.603430, 0.987289, 0.592606, 0.884672, 0.543450, 0.660770, 0.377128, 0.358021,
]
BIG_COSTS = [4.2806528590890736, 3.9384369822503591]


def _small(dtype=torch.float32, device="cpu"):
    logits = torch.tensor([SMALL_LOGITS], dtype=dtype, device=device, requires_grad=True)
    targets = torch.tensor([[1, 2]], device=device)
    return logits, targets, torch.tensor([2], device=device), torch.tensor([2], device=device)


def _random_batch(B, T, U, V, blank=0, dtype=torch.float64, seed=0, device="cpu", full=False):
    """Random logits `(B, T, U+1, V)` with large garbage past each length, and -1 target padding."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, T, U + 1, V, generator=gen, dtype=dtype)
    labels = [v for v in range(V) if v != blank]
    targets = torch.tensor(labels)[torch.randint(len(labels), (B, U), generator=gen)]
    if full:
        logit_lengths, target_lengths = torch.full((B,), T), torch.full((B,), U)
    else:
        logit_lengths = torch.randint(1, T + 1, (B,), generator=gen)
        target_lengths = torch.randint(0, U + 1, (B,), generator=gen)
        logit_lengths[0], target_lengths[0] = T, U  # keep the padded shape tight
    for b in range(B):
        logits[b, logit_lengths[b]:] = 50.0
        logits[b, :, target_lengths[b] + 1:] = -50.0
        targets[b, target_lengths[b]:] = -1
    to = dict(device=device)
    return (logits.to(**to).requires_grad_(), targets.to(**to), logit_lengths.to(**to),
            target_lengths.to(**to))


def _brute_force(logits, targets, T_b, U_b, blank):
    """-log P(y|x) of one utterance by summing over every alignment (autograd-differentiable)."""
    log_probs = logits.log_softmax(-1)  # (T, U+1, V)
    scores = []
    for label_steps in itertools.combinations(range(T_b + U_b - 1), U_b):
        t = u = 0
        score = log_probs.new_zeros(())
        for step in range(T_b + U_b - 1):
            if step in label_steps:
                score = score + log_probs[t, u, targets[u]]
                u += 1
            else:
                score = score + log_probs[t, u, blank]
                t += 1
        scores.append(score + log_probs[T_b - 1, U_b, blank])
    return -torch.logsumexp(torch.stack(scores), 0)


def _grad(loss, logits):
    return torch.autograd.grad(loss, logits, retain_graph=True)[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("blank, cost", [(0, 4.495666773770733), (4, 5.09566688538)])
def test_small_vector_cost(device, blank, cost):
    loss = rnnt_loss(*_small(device=device), blank=blank)
    assert loss.item() == pytest.approx(cost, rel=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_small_vector_gradient_wrt_logits(device):
    logits, *rest = _small(device=device)
    grad = _grad(rnnt_loss(logits, *rest, blank=0), logits)
    torch.testing.assert_close(grad.cpu(), torch.tensor([SMALL_GRAD_BLANK0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_big_vector_costs(device):
    logits = torch.tensor(BIG_LOGITS, dtype=torch.float64, device=device).view(2, 4, 3, 3)
    targets = torch.tensor([[1, 2], [1, 1]], device=device)
    lengths = torch.tensor([4, 4], device=device), torch.tensor([2, 2], device=device)
    losses = rnnt_loss(logits, targets, *lengths, blank=0, reduction="none")
    # The published costs differ from a float64 evaluation by ~4e-8 relative (a float32 origin).
    torch.testing.assert_close(losses.cpu(), torch.tensor(BIG_COSTS, dtype=torch.float64),
                               atol=0, rtol=1e-7)


@pytest.mark.parametrize("T, U, V, blank", [(1, 0, 3, 0), (1, 3, 4, 0), (4, 1, 2, 1),
                                            (3, 3, 5, 2), (5, 2, 4, 3), (4, 4, 3, 0)])
def test_matches_brute_force_over_alignments(T, U, V, blank):
    logits, targets, logit_lengths, target_lengths = _random_batch(3, T, U, V, blank, seed=T + U)
    losses = rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=blank,
                       reduction="none")
    grad = _grad(losses.sum(), logits)
    for b in range(3):
        T_b, U_b = int(logit_lengths[b]), int(target_lengths[b])
        expected = _brute_force(logits[b], targets[b], T_b, U_b, blank)
        torch.testing.assert_close(losses[b], expected, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(grad[b], _grad(expected, logits)[b], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck_float64(fused):
    logits, targets, logit_lengths, target_lengths = _random_batch(3, 4, 2, 3, seed=1)
    logits = logits.detach().div(10).requires_grad_()  # keep the garbage padding in gradcheck range
    def f(x):
        return rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none",
                         fused_log_softmax=fused)
    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_variable_lengths_equal_one_by_one(device):
    logits, targets, logit_lengths, target_lengths = _random_batch(
        5, 9, 5, 7, dtype=torch.float32, seed=3, device=device)
    losses = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    grad = _grad(losses.sum(), logits)
    for b in range(5):
        T_b, U_b = int(logit_lengths[b]), int(target_lengths[b])
        alone = logits[b:b + 1, :T_b, :U_b + 1].detach().clone().requires_grad_()
        loss = rnnt_loss(alone, targets[b:b + 1, :U_b], logit_lengths[b:b + 1],
                         target_lengths[b:b + 1], reduction="sum")
        torch.testing.assert_close(losses[b], loss, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(grad[b, :T_b, :U_b + 1], _grad(loss, alone)[0],
                                   atol=1e-6, rtol=1e-5)
        assert torch.count_nonzero(grad[b, T_b:]) == 0  # exactly zero past the lengths
        assert torch.count_nonzero(grad[b, :, U_b + 1:]) == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 13, 6, 11), (4, 7, 12, 33), (3, 20, 1, 9)])
def test_agrees_with_reference_float32(device, shape):
    logits, targets, logit_lengths, target_lengths = _random_batch(
        *shape, dtype=torch.float32, seed=sum(shape), device=device)
    ours = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    ref = rnnt_loss_reference(logits, targets, logit_lengths, target_lengths, reduction="none")
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(_grad(ours.sum(), logits), _grad(ref.sum(), logits),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "mean_per_token"])
def test_reductions(reduction):
    logits, targets, logit_lengths, target_lengths = _random_batch(4, 6, 3, 5, seed=5)
    ours = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction=reduction)
    per_utt = rnnt_loss_reference(logits, targets, logit_lengths, target_lengths, reduction="none")
    expected = {"none": per_utt, "sum": per_utt.sum(), "mean": per_utt.mean(),
                "mean_per_token": per_utt.sum() / target_lengths.sum()}[reduction]
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(_grad(ours.sum(), logits), _grad(expected.sum(), logits),
                               atol=1e-10, rtol=1e-10)


def test_mean_per_token_with_no_targets_is_finite():
    logits, targets, logit_lengths, _ = _random_batch(2, 3, 2, 4, seed=6)
    zero = torch.zeros(2, dtype=torch.long)
    loss = rnnt_loss(logits, targets, logit_lengths, zero, reduction="mean_per_token")
    expected = rnnt_loss_reference(logits, targets, logit_lengths, zero, reduction="sum")
    torch.testing.assert_close(loss, expected)


def test_clamp_bounds_each_utterance_gradient_before_scaling():
    logits, targets, logit_lengths, target_lengths = _random_batch(3, 5, 3, 4, seed=7)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    clamp = 0.05
    ref_losses = rnnt_loss_reference(logits, targets, logit_lengths, target_lengths,
                                     reduction="none")
    ref_grad = torch.stack([_grad(ref_losses[b], logits)[b] for b in range(3)])  # per utterance
    assert (ref_grad.abs() > clamp).any()  # the clamp binds
    expected = ref_grad.clamp(-clamp, clamp) * weights[:, None, None, None]
    losses = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none",
                       clamp=clamp)
    torch.testing.assert_close(_grad((losses * weights).sum(), logits), expected,
                               atol=1e-12, rtol=1e-10)
    mean = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="mean", clamp=clamp)
    torch.testing.assert_close(_grad(mean, logits), ref_grad.clamp(-clamp, clamp) / 3,
                               atol=1e-12, rtol=1e-10)


def test_unfused_takes_log_probs():
    logits, targets, logit_lengths, target_lengths = _random_batch(3, 5, 4, 6, seed=8)
    fused = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    unfused = rnnt_loss(logits.log_softmax(-1), targets, logit_lengths, target_lengths,
                        reduction="none", fused_log_softmax=False)
    torch.testing.assert_close(unfused, fused, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(_grad(unfused.sum(), logits), _grad(fused.sum(), logits),
                               atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, grad_atol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_low_precision_input_accumulates_in_float32(device, dtype, grad_atol):
    logits, targets, logit_lengths, target_lengths = _random_batch(
        4, 30, 8, 64, dtype=torch.float32, seed=9, device=device)
    low = logits.detach().to(dtype).requires_grad_()
    exact = low.detach().float().requires_grad_()  # the same rounded values, in float32
    loss_low = rnnt_loss(low, targets, logit_lengths, target_lengths, reduction="none")
    loss_exact = rnnt_loss(exact, targets, logit_lengths, target_lengths, reduction="none")
    assert loss_low.dtype == torch.float32
    torch.testing.assert_close(loss_low, loss_exact, atol=1e-5, rtol=1e-6)
    grad_low = _grad(loss_low.sum(), low)
    assert grad_low.dtype == dtype
    torch.testing.assert_close(grad_low.float(), _grad(loss_exact.sum(), exact),
                               atol=grad_atol, rtol=0)


def test_chunked_log_normaliser_matches_logsumexp(monkeypatch):
    monkeypatch.setattr(rnnt_module, "_CHUNK_ELEMENTS", 40)  # many ragged chunks
    logits, targets, logit_lengths, target_lengths = _random_batch(2, 7, 3, 9, seed=10)
    lse = rnnt_module._log_normaliser(logits.detach(), torch.float64)
    torch.testing.assert_close(lse, logits.detach().logsumexp(-1))
    ours = rnnt_loss(logits, targets, logit_lengths, target_lengths)
    ref = rnnt_loss_reference(logits, targets, logit_lengths, target_lengths)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(_grad(ours, logits), _grad(ref, logits))


def test_saves_only_small_tensors_besides_logits():
    logits, targets, logit_lengths, target_lengths = _random_batch(
        2, 20, 10, 256, dtype=torch.float32, full=True, seed=11)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        rnnt_loss(logits, targets, logit_lengths, target_lengths)
    others = [t for t in saved if t.data_ptr() != logits.data_ptr()]
    assert len(others) < len(saved)  # the logits themselves are saved, by reference
    assert sum(t.numel() for t in others) < 0.05 * logits.numel()


def test_extra_memory_beyond_logits_and_gradient_is_small():
    logits, targets, logit_lengths, target_lengths = _random_batch(
        4, 40, 16, 256, dtype=torch.float32, full=True, seed=12)
    def step():
        rnnt_loss(logits, targets, logit_lengths, target_lengths).backward()
    size = logits.numel() * logits.element_size()
    extra = peak_memory_bytes(step) - size  # the gradient is allocated inside step
    assert logits.grad is not None
    assert extra < 0.2 * size


def test_rejects_bad_inputs():
    logits, targets, logit_lengths, target_lengths = _small()
    with pytest.raises(ValueError, match="lengths"):
        rnnt_loss(logits, targets, torch.tensor([3]), target_lengths)
    with pytest.raises(ValueError, match="lengths"):
        rnnt_loss(logits, targets, torch.tensor([0]), target_lengths)
    with pytest.raises(ValueError, match="targets"):
        rnnt_loss(logits, targets[:, :1], logit_lengths, target_lengths)
    with pytest.raises(ValueError, match="blank"):
        rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=5)
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="avg")


def test_docstring_example_runs():
    result = doctest.testmod(rnnt_module, extraglobs={"torch": torch}, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not HAVE_TORCHAUDIO, reason="torchaudio does not import here (optional backend)")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "mean", "mean_per_token"])
def test_torchaudio_backend_matches_ours(device, reduction):
    logits, targets, T, U = _random_batch(3, 7, 4, 6, dtype=torch.float32, device=device)
    ours = logits.detach().clone().requires_grad_(True)
    theirs = logits.detach().clone().requires_grad_(True)
    a = rnnt_loss(ours, targets, T, U, reduction=reduction)
    b = rnnt_loss(theirs, targets, T, U, reduction=reduction, backend="torchaudio")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    a.sum().backward(), b.sum().backward()
    valid = rnnt_module._valid_nodes(7, 5, T, U)[..., None]  # torchaudio leaves garbage outside
    torch.testing.assert_close(ours.grad * valid, theirs.grad * valid, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(HAVE_TORCHAUDIO, reason="torchaudio imports here")
def test_torchaudio_backend_without_torchaudio_is_a_clear_error():
    logits, targets, T, U = _small()
    with pytest.raises(RuntimeError, match="needs an importable torchaudio.*backend='asr_zoo'"):
        rnnt_loss(logits, targets, T, U, backend="torchaudio")
    with pytest.raises(ValueError, match="asr_zoo, torchaudio"):
        rnnt_loss(logits, targets, T, U, backend="warp")
