"""The LightningModule base shared by every objective.

A subclass adds its head(s) and implements :meth:`ASRModule.compute_loss` and
:meth:`ASRModule.decode`; training, validation WER, optimisation, checkpoint contents and the
``transcribe`` contract used by ``asr-zoo eval`` live here once.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics.text import CharErrorRate, WordErrorRate

from ..data.tokenizer import Tokenizer
from ..nn.encoder import build_encoder

__all__ = ["ASRModule", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """Training stopped: the loss or gradients stayed non-finite (the message says what to change)."""


class ASRModule(L.LightningModule):
    """Base objective: encoder from the zoo + objective-specific head, loss and decoder.

    Args:
        config (dict): the whole resolved run config (saved as a hyperparameter).
        vocab_size (int): tokenizer size V (id 0 = blank, 1 = sos/eos).
        feature_dim (int): input feature dim F.
    """

    def __init__(self, config: dict, vocab_size: int, feature_dim: int):
        super().__init__()
        self.save_hyperparameters()
        self.cfg: DictConfig = OmegaConf.create(config)
        self.vocab_size = vocab_size
        self.encoder = build_encoder(feature_dim, self.cfg.encoder, self.cfg.attention)
        self.tokenizer: Optional[Tokenizer] = None  # attached by train/eval; stored in checkpoints
        self.cmvn: Optional[dict] = None  # {"mean", "std"} of the training data; stored in checkpoints
        self.val_wer, self.val_cer = WordErrorRate(), CharErrorRate()
        # optimizer steps skipped for a non-finite gradient: in total (checkpointed) and in a row
        self.skipped_steps, self._bad_in_a_row = 0, 0

    # ---- to implement ------------------------------------------------------------------------
    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the scalar training loss and extra scalars to log."""
        raise NotImplementedError

    def decode(self, batch: dict) -> tuple[list[list[int]], list[int]]:
        """Token ids of each utterance and the decoder steps each took."""
        raise NotImplementedError

    @classmethod
    def check_training_config(cls, cfg: DictConfig) -> None:
        """Checks of what training needs beyond the config's schema (e.g. the Imputer's expert
        run), made before any data is touched; raise ``ConfigError`` naming the key."""

    def setup_from_data(self, dm) -> None:
        """Objective-specific set-up once the data is prepared (e.g. loading expert alignments)."""

    @classmethod
    def utterance_filter(cls, cfg) -> Optional[Callable[[int, list[int]], Optional[str]]]:
        """A ``(num_input_frames, token_ids) -> reason | None`` check for training data, or None."""
        return None

    # ---- shared ------------------------------------------------------------------------------
    def encode(self, batch: dict, extra: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Encoder output `(B, T', D)` and lengths `(B,)`."""
        return self.encoder(batch["feats"], batch["feat_lens"], extra)

    def transcribe(self, batch: dict) -> tuple[list[str], list[int]]:
        """Hypothesis text of each utterance and the decoder steps it took."""
        ids, steps = self.decode(batch)
        return [self.tokenizer.decode(seq) for seq in ids], steps

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, extra = self.compute_loss(batch)
        bs = len(batch["ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in extra.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the gradient norm (before clipping); skip the step when it is not finite.

        A batch whose loss or gradient is NaN/Inf leaves the weights unchanged: its gradients are
        dropped (AdamW skips parameters without one), the step still counts (the LR schedule and
        step counter advance) and ``train/skipped_steps`` counts it. Under DDP the gradients are
        already all-reduced here, so every rank makes the same decision. After
        ``trainer.max_consecutive_bad_steps`` such steps in a row the run stops with an error; no
        checkpoint with non-finite weights is ever written.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        finite = bool(torch.isfinite(norm))
        self.log("train/grad_norm", norm if finite else torch.tensor(float("nan")), batch_size=1)
        if finite:
            self._bad_in_a_row = 0
            return
        for p in self.parameters():
            p.grad = None
        self.skipped_steps += 1
        self._bad_in_a_row += 1
        self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)
        limit = self.cfg.trainer.max_consecutive_bad_steps
        print(f"warning: step {self.global_step}: non-finite loss or gradient, step skipped "
              f"({self.skipped_steps} so far, {self._bad_in_a_row} in a row)", flush=True)
        if self._bad_in_a_row >= limit:
            raise TrainingDiverged(
                f"training diverged: {self._bad_in_a_row} steps in a row had a non-finite loss or gradient "
                f"(trainer.max_consecutive_bad_steps={limit}) at step {self.global_step}; the checkpoints hold "
                "the last finite weights; lower optim.lr or raise optim.warmup_steps and rerun")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, _ = self.compute_loss(batch)
        hyps, _ = self.transcribe(batch)
        self.val_wer.update(hyps, batch["texts"])
        self.val_cer.update(hyps, batch["texts"])
        self.log("val/loss", loss, batch_size=len(batch["ids"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/wer", self.val_wer.compute() * 100, prog_bar=True)
        self.log("val/cer", self.val_cer.compute() * 100)
        self.val_wer.reset(), self.val_cer.reset()

    def configure_optimizers(self):
        o = self.cfg.optim
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(o.schedule, o.warmup_steps, total_optimizer_steps(self.trainer), o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Adds the tokenizer (sentencepiece bytes) and CMVN (tensors): plain data, loadable with
        ``weights_only=True``; refuses to write non-finite weights."""
        bad = [n for n, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"refusing to write a checkpoint with non-finite weights ({', '.join(bad[:3])})")
        checkpoint["tokenizer"] = self.tokenizer.model_proto if self.tokenizer else None
        checkpoint["cmvn"] = self.cmvn
        checkpoint["skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("tokenizer"):
            self.tokenizer = Tokenizer(checkpoint["tokenizer"])
        self.cmvn = checkpoint.get("cmvn")
        self.skipped_steps = checkpoint.get("skipped_steps", 0)


def total_optimizer_steps(trainer) -> Optional[int]:
    """Optimizer steps of the whole run, for the cosine schedule: ``trainer.max_steps`` when set,
    else ``max_epochs`` x ceil(batches per epoch and rank / ``accumulate_grad_batches``), the
    batches counted by a dry pass of the datamodule's training sampler (lhotse's samplers have no
    length), and the smaller of the two when both bound the run. None when neither is known
    (a ``max_time``-only budget): the schedule then stays constant after warm-up.
    """
    max_steps = trainer.max_steps if trainer.max_steps > 0 else None
    dm = getattr(trainer, "datamodule", None)
    if trainer.max_epochs is None or trainer.max_epochs < 0 or not hasattr(dm, "estimated_batches_per_epoch"):
        return max_steps
    per_epoch = math.ceil(dm.estimated_batches_per_epoch(trainer.world_size) / trainer.accumulate_grad_batches)
    by_epochs = per_epoch * max(1, trainer.max_epochs)
    return min(by_epochs, max_steps) if max_steps else by_epochs


def lr_lambda(schedule: str, warmup: int, total: Optional[int], min_ratio: float) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up, then cosine to ``min_ratio`` / noam / constant.

    Cosine needs the total number of steps (:func:`total_optimizer_steps`); without it it stays
    constant after warm-up. Steps past ``total`` (an epoch budget slightly underestimated) stay at
    ``min_ratio``.
    """
    warmup = max(1, warmup)

    def f(step: int) -> float:
        step = step + 1
        if step < warmup:
            return step / warmup
        if schedule == "noam":
            return math.sqrt(warmup / step)
        if schedule == "cosine" and total:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return f
