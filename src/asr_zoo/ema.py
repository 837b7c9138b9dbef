"""Exponential moving average (EMA) of the weights, as a Lightning callback (``optim.ema_decay``).

After every optimizer step ``t`` (``trainer.global_step`` once the step is done) every floating
entry of the module's ``state_dict`` (parameters and float buffers such as BatchNorm statistics)
is averaged; integer buffers are copied::

    ema = w                                   while t <= optim.ema_start_step
    ema = decay * ema + (1 - decay) * w       afterwards (torch.lerp: exact when ema == w)

A step that the NaN guard skipped (``ASRModule.skipped_steps`` grew: the weights did not move) is
not averaged in.

Where the average is used:

- **Validation** runs on the EMA weights (swapped in at ``on_validation_start``, the training
  weights copied back bit for bit at ``on_validation_end``): dev WER, and so ``best.ckpt``, judge
  the EMA model.
- **Checkpoints** (``best``, ``last``, ``epoch-EEE``) hold the EMA weights as their ``state_dict``,
  so ``asr-zoo eval``, ``align``, ``average`` and an Imputer's expert use the EMA model with no
  option of their own. The training weights travel in ``checkpoint["ema"]["training_state_dict"]``
  (with ``decay``, ``start_step`` and ``updates``); resuming from ``last.ckpt`` puts them back
  into the model and continues the same average. Checkpoints are about twice as large.
- **DDP**: every rank holds the same weights after each step, so every rank keeps an identical
  average with no communication.

>>> import torch
>>> layer = torch.nn.Linear(1, 1, bias=False)
>>> _ = layer.weight.data.fill_(0.0)
>>> ema = EMA(decay=0.5)
>>> ema.reset(layer)
>>> _ = layer.weight.data.fill_(1.0)
>>> ema.update(layer, step=1)
>>> float(ema.average["weight"])
0.5
"""

from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

__all__ = ["EMA", "CHECKPOINT_KEY"]

CHECKPOINT_KEY = "ema"  # checkpoint["ema"]: decay, start_step, updates, training_state_dict


class EMA(Callback):
    """EMA of a module's weights, updated after every optimizer step.

    Args:
        decay (float): weight of the old average per step, in ``[0, 1)``; the average spans about
            ``1 / (1 - decay)`` steps.
        start_step (int): until this optimizer step the average is a copy of the weights.
    """

    def __init__(self, decay: float, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay, self.start_step = float(decay), int(start_step)
        self.average: Optional[dict[str, Tensor]] = None  # state_dict key -> averaged tensor
        self.updates = 0  # steps averaged in (copies before start_step not counted)
        self._backup: Optional[dict[str, Tensor]] = None  # training weights while validating
        self._seen_step = -1
        self._seen_skipped = 0

    # ---- the average ---------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, module: nn.Module) -> None:
        """Start the average from ``module``'s current weights."""
        self.average = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Average ``module``'s current weights in, as after optimizer step ``step``."""
        if self.average is None:
            self.reset(module)
            return
        live = module.state_dict()
        if step <= self.start_step:
            for k, v in live.items():
                self.average[k].copy_(v)
            return
        floats = [k for k, v in live.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.average[k] for k in floats], [live[k] for k in floats], 1.0 - self.decay)
        for k, v in live.items():
            if not v.is_floating_point():
                self.average[k].copy_(v)
        self.updates += 1

    @torch.no_grad()
    def _load_into(self, module: nn.Module, weights: dict[str, Tensor]) -> None:
        for k, v in module.state_dict().items():  # in place: parameters (and the optimizer's references) stay
            v.copy_(weights[k])

    # ---- training --------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if self.average is None:
            self.reset(pl_module)
        else:  # restored from a checkpoint (on the CPU): onto the weights' devices
            live = pl_module.state_dict()
            self.average = {k: v.to(live[k].device) for k, v in self.average.items()}
        self._seen_step = trainer.global_step
        self._seen_skipped = int(getattr(pl_module, "skipped_steps", 0))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._seen_step:  # accumulating gradients: no optimizer step this batch
            return
        self._seen_step = step
        skipped = int(getattr(pl_module, "skipped_steps", 0))
        if skipped != self._seen_skipped:  # the NaN guard dropped this step's gradients
            self._seen_skipped = skipped
            return
        self.update(pl_module, step)

    # ---- validation on the average ---------------------------------------------------------
    def on_validation_start(self, trainer, pl_module) -> None:
        if self.average is None or self._backup is not None:
            return
        self._backup = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self._load_into(pl_module, self.average)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._restore(pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore(pl_module)

    def _restore(self, pl_module) -> None:
        if self._backup is not None:
            self._load_into(pl_module, self._backup)
            self._backup = None

    # ---- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """``state_dict`` <- the EMA weights; the training weights under ``checkpoint["ema"]``."""
        if self.average is None:
            return
        # mid-validation the model holds the average: the training weights are the backup
        training = self._backup if self._backup is not None else checkpoint["state_dict"]
        checkpoint[CHECKPOINT_KEY] = {"decay": self.decay, "start_step": self.start_step,
                                      "updates": self.updates, "training_state_dict": training}
        checkpoint["state_dict"] = {k: self.average.get(k, v) for k, v in training.items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """The model was just loaded with the checkpoint's (EMA) ``state_dict``: the average
        becomes that, the model gets the training weights back. A checkpoint without EMA state
        starts the average from its weights."""
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            return
        self.average = {k: v.detach().clone() for k, v in checkpoint["state_dict"].items()}
        self.updates = int(state["updates"])
        self._load_into(pl_module, state["training_state_dict"])
