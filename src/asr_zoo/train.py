"""``asr-zoo train``: one resumable training run of any objective x attention type.

The run directory holds ``config.yaml`` (resolved), ``checkpoints/{best,last}.ckpt``,
``logs/`` (CSV + offline wandb) and ``train_summary.json``.

Resuming: ``last.ckpt`` is written atomically at the end of every training epoch, with the
optimizer, LR schedule, step counter and the torch / numpy / Python RNG states; a run killed at
any point (even ``kill -9``) continues from the last finished epoch when the same command is rerun,
and in deterministic CPU mode ends with the same weights as an uninterrupted run
(``tests/test_resume.py``). A killed epoch's partial work is redone, its CSV log rows replaced.

Run-directory rules: the config is binding once a checkpoint exists (a different config is an
error naming the keys that differ; keys that cannot change the result, such as the progress bar
or thread count, may differ); a start that failed before its first checkpoint blocks nothing.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from .config import (RESULT_NEUTRAL_KEYS, RESUMABLE_KEYS, ConfigError, config_differences, fill_placeholders,
                     load_config, save_config)
from .data.datamodule import ASRDataModule
from .ema import EMA
from .hardware import cpu_fast_bf16
from .objectives import OBJECTIVES, build_module
from .report.online import wandb_mode
from .utils import atomic_replace, atomic_write_json, atomic_write_text, safe_torch_load

__all__ = ["train", "resolve_run_dir", "AtomicCheckpointIO"]

class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (a crash never leaves a torn one) and
    read with ``weights_only=True`` (a crafted pickle is refused, never executed)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_replace(Path(path), lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return safe_torch_load(Path(path), map_location=map_location or "cpu")


class EpochTimer(Callback):
    """Training seconds of every epoch, validation excluded (for time-per-epoch tables), and the
    step of the last validation. Timing starts at the first batch, so resumed epochs count too."""

    def __init__(self):
        self.durations: list[float] = []
        self.validated_step = -1
        self._t0: float | None = None
        self._val_s = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0, self._val_s = time.perf_counter(), 0.0

    def on_validation_start(self, trainer, pl_module):
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self.validated_step = trainer.global_step
        self._val_s += time.perf_counter() - self._val_t0

    def on_train_epoch_end(self, trainer, pl_module):
        if self._t0 is not None:
            self.durations.append(time.perf_counter() - self._t0 - self._val_s)
        self._t0 = None


class RNGState(Callback):
    """Saves the torch, numpy and Python RNG states in every checkpoint and restores them on
    resume, so dropout, SpecAugment and the loader's worker seeds continue as if never stopped.

    The states are applied at the start of the first epoch after the restore, not when the
    checkpoint is read: Lightning finishes the restored epoch and builds data iterators in
    between (each draws a seed), which an uninterrupted run never does. Stored as tensors and
    plain types (loadable with ``weights_only=True``).
    """

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                           has_gauss, gauss], "python": random.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


EPOCH_CHECKPOINT = "epoch-{epoch:03d}"  # checkpoints/epoch-007.ckpt (trainer.keep_epoch_checkpoints)


class EstimatedTotalProgressBar(TQDMProgressBar):
    """The progress bar with a total and ETA: lhotse's samplers have no length (Lightning shows
    ``140/?``), so the total is the datamodule's estimate of batches per epoch and rank. The
    estimate is shown only; the loader keeps no ``__len__``, because Lightning ends an epoch after
    ``len(loader)`` batches and an estimate a few batches short would silently drop data."""

    @property
    def total_train_batches(self):
        total = super().total_train_batches
        dm = getattr(self.trainer, "datamodule", None)
        if total == float("inf") and hasattr(dm, "estimated_batches_per_epoch"):
            return dm.estimated_batches_per_epoch(self.trainer.world_size)
        return total


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger deletes ``metrics.csv`` when it starts and buffers rows for 100
    steps; this one writes its rows whenever a checkpoint is written, and on resume keeps the
    rows logged before the checkpoint's step (Lightning logs step k's rows at k - 1; rows from k
    on belong to the redone, killed epoch)."""

    def __init__(self, save_dir: Path, resume_step: int | None):
        super().__init__(save_dir, name="logs", version="")
        self._resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is not None or rank_zero_only.rank != 0:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = []
        if self._resume_step is not None and path.exists():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) < self._resume_step]
        writer = super().experiment  # removes the old file
        writer.metrics = kept + writer.metrics
        return writer

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``run_dir`` with ``{objective}``, ``{attention}``, ``{encoder}``, ``{data}``, ``{trainer}``
    and ``{seed}`` filled in (the presets' names), so one sweep command line names each run by its
    choices.

    >>> from asr_zoo.config import compose
    >>> str(resolve_run_dir(compose(["run_dir=runs/{objective}-{attention}", "attention=linear"])))
    'runs/ctc-linear'
    """
    return Path(fill_placeholders(cfg.run_dir, cfg))


def _claim_run_dir(cfg: DictConfig, run_dir: Path) -> str:
    """``new``, ``resume`` or ``finished``; raises when the directory holds another config's
    checkpoints (a resumed run may change its budget and hardware, a finished one nothing that
    matters). A directory without checkpoints (a start that failed) is simply reused."""
    finished = (run_dir / "train_summary.json").exists()
    has_checkpoint = (run_dir / "checkpoints" / "last.ckpt").exists()
    saved = run_dir / "config.yaml"
    if (finished or has_checkpoint) and saved.exists():
        allowed = RESULT_NEUTRAL_KEYS + (() if finished else RESUMABLE_KEYS)
        diff = config_differences(load_config(saved), cfg, allowed)
        if diff:
            what = "a finished run" if finished else "a run"
            raise ConfigError(f"{run_dir} already holds {what} with a different config ({'; '.join(diff)}); "
                              "use another run_dir, or delete that one to start again")
        changed = config_differences(load_config(saved), cfg, RESULT_NEUTRAL_KEYS)
        if changed and not finished:
            print(f"{run_dir}: resuming with {'; '.join(changed)}")
    if finished:
        return "finished"
    return "resume" if has_checkpoint else "new"


def _precision(t: DictConfig) -> str:
    """The trainer precision, with bf16 on a CPU without fast bf16 (AVX2: ~30x slower, no bf16
    LSTM) replaced by float32."""
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and t.precision.startswith("bf16") and not cpu_fast_bf16():
        print(f"note: trainer.precision={t.precision} on a CPU without fast bf16 "
              f"({torch.backends.cpu.get_cpu_capability()}): training in float32")
        return "32-true"
    return t.precision


def _loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None) -> list:
    loggers = [ResumableCSVLogger(run_dir, resume_step=resume_step)]
    t = cfg.trainer
    if t.wandb != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        # one wandb run per run directory, continued on resume (its id kept beside the config)
        id_file = run_dir / "wandb_id.txt"
        if not id_file.exists():
            atomic_write_text(id_file, os.urandom(6).hex())
        loggers.append(WandbLogger(project=t.wandb_project, save_dir=str(run_dir), mode=wandb_mode(t.wandb),
                                   name=run_dir.name, id=id_file.read_text().strip(), resume="allow",
                                   config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def _trainer(cfg: DictConfig, run_dir: Path, resume_step: int | None) -> tuple[L.Trainer, ModelCheckpoint, EpochTimer]:
    t = cfg.trainer
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/wer", mode="min",
                           save_top_k=1, save_on_train_epoch_end=False, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, every_n_epochs=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    timer = EpochTimer()
    callbacks = [best, last, timer, RNGState(), LearningRateMonitor("step")]
    if cfg.optim.ema_decay:  # validation and every checkpoint's state_dict use the EMA weights (ema.py)
        callbacks.append(EMA(cfg.optim.ema_decay, cfg.optim.ema_start_step))
    if t.keep_epoch_checkpoints:  # checkpoints/epoch-EEE.ckpt of the last N epochs, for `asr-zoo average`
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename=EPOCH_CHECKPOINT, monitor="epoch", mode="max",
                                         save_top_k=t.keep_epoch_checkpoints, every_n_epochs=1,
                                         save_on_train_epoch_end=True, auto_insert_metric_name=False,
                                         enable_version_counter=False))
    if t.progress_bar:
        callbacks.append(EstimatedTotalProgressBar(refresh_rate=10))
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=_precision(t),
        max_steps=t.max_steps, max_epochs=t.max_epochs, max_time=t.max_time,
        check_val_every_n_epoch=t.val_every_n_epochs, gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches, log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks, logger=_loggers(cfg, run_dir, resume_step), default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # lhotse samplers shard by rank themselves
        enable_progress_bar=t.progress_bar, num_sanity_val_steps=0, enable_model_summary=False,
    )
    return trainer, best, timer


def train(cfg: DictConfig) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run directory."""
    # 1. check everything that needs no data: the run directory and the objective's own needs
    run_dir = resolve_run_dir(cfg)
    cfg.run_dir = str(run_dir)
    state = _claim_run_dir(cfg, run_dir)
    if state == "finished":
        print(f"{run_dir}: training already finished (delete {run_dir / 'train_summary.json'} to train again)")
        return run_dir
    objective = OBJECTIVES.get(cfg.objective.name).obj
    objective.check_training_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # 2. data: features, tokenizer, CMVN (built once, shared by every run on this data root)
    dm = ASRDataModule(cfg.data, objective.utterance_filter(cfg), seed=cfg.seed, val_max_utts=cfg.trainer.val_max_utts)
    dm.prepare_data()
    mean, std = dm.data.cmvn()

    # 3. model, with the objective's set-up from its config (e.g. the Imputer's expert)
    model = build_module(cfg, dm.tokenizer.vocab_size, dm.feature_dim, dm.tokenizer, {"mean": mean, "std": std})
    model.setup_from_data(dm)

    # 4. fit, resuming from last.ckpt
    last = run_dir / "checkpoints" / "last.ckpt"
    resume_step = safe_torch_load(last)["global_step"] if state == "resume" else None
    trainer, checkpoint, timer = _trainer(cfg, run_dir, resume_step)
    t0 = time.perf_counter()
    trainer.fit(model, dm, ckpt_path=str(last) if state == "resume" else None)

    # 5. make sure the final weights were validated, then summarise
    best_wer = _validate_final_weights(trainer, checkpoint, timer, model, dm, run_dir / "checkpoints" / "best.ckpt")
    if trainer.global_rank == 0:
        _write_summary(cfg, run_dir, model, trainer, timer, best_wer, time.perf_counter() - t0, resume_step or 0)
    return run_dir


def _validate_final_weights(trainer, checkpoint, timer, model, dm, best: Path) -> float | None:
    best_wer = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    if timer.validated_step != trainer.global_step and trainer.global_step > 0:
        # the final weights were never validated (max_steps ended mid-interval): validate them now
        wer = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/wer"]
        if best_wer is None or wer < best_wer:
            trainer.save_checkpoint(best)
            best_wer = wer
    return best_wer


def _write_summary(cfg, run_dir: Path, model, trainer, timer: EpochTimer, best_wer, seconds: float,
                   resumed_at: int) -> None:
    ckpt_dir = run_dir / "checkpoints"
    validated = (ckpt_dir / "best.ckpt").exists()
    if not validated:  # no validation ran at all: the last weights are the best we know
        atomic_replace(ckpt_dir / "best.ckpt", lambda tmp: shutil.copyfile(ckpt_dir / "last.ckpt", tmp))
    summary = {
        "objective": cfg.objective.name, "attention": cfg.attention.name,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": trainer.global_step, "epochs": trainer.current_epoch,
        "resumed_at_step": resumed_at, "steps_this_invocation": trainer.global_step - resumed_at,
        "train_time_s": round(seconds, 1),
        "time_per_epoch_s": round(sum(timer.durations) / max(1, len(timer.durations)), 2),
        "skipped_steps": int(model.skipped_steps),
        "best_val_wer": best_wer,
        "best_checkpoint": "best by dev WER" if validated else "copy of last (no validation ran)",
    }
    atomic_write_json(run_dir / "train_summary.json", summary)
    print(f"{run_dir}: trained {summary['steps']} steps in {summary['train_time_s']} s "
          f"(this invocation); best dev WER {summary['best_val_wer']}")
