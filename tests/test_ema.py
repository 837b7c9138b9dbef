"""EMA of the weights (``optim.ema_decay``, asr_zoo/ema.py): the closed form, training untouched,
validation on the average, steps the NaN guard skipped left out, resume continuing the same
average, and checkpoints (so ``asr-zoo eval``) holding the EMA weights."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import tiny_train_args
from torch import nn

from asr_zoo.cli import main
from asr_zoo.config import ConfigError, compose
from asr_zoo.ema import CHECKPOINT_KEY, EMA
from asr_zoo.objectives import load_run
from asr_zoo.utils import safe_torch_load


def test_update_is_the_closed_form():
    """ema_n = d^n w_0 + (1 - d) sum_k d^(n-k) w_k after n steps; copies until start_step."""
    torch.manual_seed(0)
    layer, d = nn.Linear(3, 2), 0.9
    ema = EMA(decay=d, start_step=2)
    ema.reset(layer)
    weights = []
    for step in range(1, 8):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        weights.append(layer.weight.detach().clone())
        ema.update(layer, step)
    w0, later = weights[1], weights[2:]  # steps 1-2 copied (start_step=2), steps 3-7 averaged
    n = len(later)
    expected = d ** n * w0 + sum((1 - d) * d ** (n - k) * w for k, w in enumerate(later, 1))
    torch.testing.assert_close(ema.average["weight"], expected, rtol=0, atol=1e-6)
    assert ema.updates == n


class _Toy(L.LightningModule):
    """Linear regression with SGD; records the weights each validation batch sees. ``nan_at``:
    optimizer steps whose gradients are dropped like ``ASRModule``'s NaN guard does."""

    def __init__(self, nan_at=()):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.nan_at, self.skipped_steps, self.seen = set(nan_at), 0, []

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[:, :4]).squeeze(-1) - batch[:, 4]).pow(2).mean()

    def on_before_optimizer_step(self, optimizer):
        if self.global_step in self.nan_at:
            for p in self.parameters():
                p.grad = None
            self.skipped_steps += 1

    def validation_step(self, batch, batch_idx):
        self.seen.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(16, 5, generator=torch.Generator().manual_seed(1)), batch_size=4)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 5), batch_size=2)


class _Probe(L.Callback):
    """The EMA's average as validation starts (runs after the EMA callback)."""

    def __init__(self, ema):
        self.ema, self.averages = ema, []

    def on_validation_start(self, trainer, pl_module):
        self.averages.append(self.ema.average["layer.weight"].clone())


def _fit(tmp_path, epochs, callbacks, module=None, ckpt_path=None):
    module = module or _Toy()
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, ckpt_path=ckpt_path)
    return module, trainer


def test_validation_sees_the_average_and_training_is_untouched(tmp_path):
    plain, _ = _fit(tmp_path, 3, [])
    ema = EMA(0.8)
    probe = _Probe(ema)
    averaged, _ = _fit(tmp_path, 3, [ema, probe])
    assert len(averaged.seen) == 3  # one validation batch per epoch
    for seen, average in zip(averaged.seen, probe.averages):
        assert torch.equal(seen, average)
    assert not torch.equal(averaged.seen[-1], averaged.layer.weight)  # the average differs from the weights
    for a, b in zip(plain.state_dict().values(), averaged.state_dict().values()):
        assert torch.equal(a, b)  # the training weights are the same bit for bit as without EMA
    assert ema.updates == 12  # 4 batches x 3 epochs


def test_steps_the_nan_guard_skipped_are_not_averaged(tmp_path):
    ema = EMA(0.8)
    _fit(tmp_path, 2, [ema], module=_Toy(nan_at={1, 5}))
    assert ema.updates == 8 - 2


def test_checkpoint_holds_the_average_and_resume_continues_it(tmp_path):
    ema_ref = EMA(0.7)
    ref, _ = _fit(tmp_path, 3, [ema_ref])

    ema_a = EMA(0.7)
    first, trainer = _fit(tmp_path, 1, [ema_a])
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = safe_torch_load(tmp_path / "last.ckpt")
    for k, v in ckpt["state_dict"].items():  # state_dict: the average; the training weights beside it
        assert torch.equal(v, ema_a.average[k])
        assert torch.equal(ckpt[CHECKPOINT_KEY]["training_state_dict"][k], first.state_dict()[k])
    assert ckpt[CHECKPOINT_KEY]["updates"] == 4

    ema_b = EMA(0.7)
    resumed, _ = _fit(tmp_path, 3, [ema_b], ckpt_path=tmp_path / "last.ckpt")
    assert ema_b.updates == ema_ref.updates == 12
    for k in ref.state_dict():
        assert torch.equal(resumed.state_dict()[k], ref.state_dict()[k])
        torch.testing.assert_close(ema_b.average[k], ema_ref.average[k], rtol=0, atol=0)


def test_ema_config_is_validated():
    assert compose(["optim.ema_decay=0.999"]).optim.ema_decay == 0.999
    assert compose([]).optim.ema_decay == 0.0  # off by default
    for bad in ("optim.ema_decay=1.0", "optim.ema_decay=-0.1", "optim.ema_start_step=-1"):
        with pytest.raises(ConfigError, match="ema_"):
            compose([bad])


def test_train_resume_and_eval_use_the_average(tiny_corpus, tmp_path):
    """Through the CLI: stopped after epoch 1 and resumed equals straight through, for the
    training weights and the average; ``eval`` loads the average; decay 0 writes no EMA state."""
    args = ("optim.ema_decay=0.5", "optim.schedule=constant", "trainer.num_threads=1", "trainer.val_max_utts=2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(tiny_train_args(tiny_corpus, straight, *args, "trainer.max_steps=-1", "trainer.max_epochs=2",
                                "trainer.keep_epoch_checkpoints=2")) == 0
    a = safe_torch_load(straight / "checkpoints" / "last.ckpt")
    epoch1 = safe_torch_load(straight / "checkpoints" / "epoch-000.ckpt")["global_step"]
    assert main(tiny_train_args(tiny_corpus, resumed, *args, f"trainer.max_steps={epoch1}")) == 0
    (resumed / "train_summary.json").unlink()  # as if killed during epoch 2
    assert main(tiny_train_args(tiny_corpus, resumed, *args, f"trainer.max_steps={a['global_step']}")) == 0
    b = safe_torch_load(resumed / "checkpoints" / "last.ckpt")
    assert a[CHECKPOINT_KEY]["updates"] == b[CHECKPOINT_KEY]["updates"] == a["global_step"] > epoch1
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
        assert torch.equal(a[CHECKPOINT_KEY]["training_state_dict"][k], b[CHECKPOINT_KEY]["training_state_dict"][k]), k
    name = next(k for k, v in a["state_dict"].items() if v.is_floating_point() and v.ndim == 2)
    assert not torch.equal(a["state_dict"][name], a[CHECKPOINT_KEY]["training_state_dict"][name])

    module, _ = load_run(straight, checkpoint="last")
    assert torch.equal(module.state_dict()[name], a["state_dict"][name])  # eval decodes the average
    assert main(["eval", str(straight), "--split", "test", "--max-utts", "2"]) == 0

    off = tmp_path / "off"
    assert main(tiny_train_args(tiny_corpus, off, "optim.ema_decay=0", "trainer.max_steps=2")) == 0
    assert CHECKPOINT_KEY not in safe_torch_load(off / "checkpoints" / "last.ckpt")
