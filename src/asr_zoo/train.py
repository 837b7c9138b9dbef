"""``asr-zoo train``: one resumable training run of any objective x attention type.

The run directory holds ``config.yaml`` (resolved), ``checkpoints/{best,last}.ckpt``,
``logs/`` (CSV + offline wandb) and ``train_summary.json``. Rerunning a crashed run resumes from
``last.ckpt``; rerunning a finished run does nothing.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, load_config, save_config
from .data.datamodule import ASRDataModule
from .objectives import OBJECTIVES
from .utils import atomic_write_json, read_json

__all__ = ["train", "build_module", "resolve_run_dir", "AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename: a crash never leaves a torn checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


class EpochTimer(Callback):
    """Records the wall-clock seconds of every training epoch (for time-per-epoch tables) and the
    step of the last validation."""

    def __init__(self):
        self.durations: list[float] = []
        self.validated_step = -1

    def on_validation_end(self, trainer, pl_module):
        self.validated_step = trainer.global_step

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.durations.append(time.perf_counter() - self._t0)


def build_module(cfg: DictConfig, vocab_size: int, feature_dim: int):
    cls = OBJECTIVES.get(cfg.objective.name).obj
    return cls(OmegaConf.to_container(cfg, resolve=True), vocab_size=vocab_size, feature_dim=feature_dim)


def _check_resume_config(cfg: DictConfig, run_dir: Path) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = OmegaConf.to_container(load_config(saved_path), resolve=True)
    new = OmegaConf.to_container(cfg, resolve=True)
    diff = [k for k in new if k not in ("trainer", "run_dir") and new[k] != saved.get(k)]
    if diff:
        raise ConfigError(
            f"{run_dir} already holds a run with a different config (sections {diff}); "
            "use another run_dir or delete that one"
        )


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``run_dir`` with ``{objective}``, ``{attention}``, ``{encoder}``, ``{data}`` and ``{seed}``
    filled in, so one sweep command line names each run by its choices.

    >>> from asr_zoo.config import compose
    >>> str(resolve_run_dir(compose(["run_dir=runs/{objective}-{attention}", "attention=linear"])))
    'runs/ctc-linear'
    """
    return Path(cfg.run_dir.format(objective=cfg.objective.name, attention=cfg.attention.name,
                                   encoder=cfg.encoder.name, data=cfg.data.name, seed=cfg.seed))


def train(cfg: DictConfig) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run directory."""
    run_dir = resolve_run_dir(cfg)
    cfg.run_dir = str(run_dir)
    done = run_dir / "train_summary.json"
    if done.exists():
        print(f"{run_dir}: training already finished (delete {done} to train again)")
        return run_dir
    _check_resume_config(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    objective = OBJECTIVES.get(cfg.objective.name).obj
    dm = ASRDataModule(cfg.data, objective.utterance_filter(cfg), seed=cfg.seed, val_max_utts=cfg.trainer.val_max_utts)
    dm.prepare_data()  # build features / tokenizer now: the model's vocabulary depends on them
    model = build_module(cfg, dm.tokenizer.vocab_size, dm.feature_dim)
    mean, std = dm.data.cmvn()
    model.tokenizer, model.cmvn = dm.tokenizer, {"mean": mean, "std": std}
    if hasattr(model, "prepare_from_config"):
        model.prepare_from_config(dm)  # objective-specific set-up (e.g. Imputer expert weights)

    t = cfg.trainer
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/wer", mode="min",
                                 save_top_k=1, save_last=True, enable_version_counter=False)
    timer = EpochTimer()
    loggers = [CSVLogger(run_dir, name="logs", version="")]
    if t.wandb != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project=t.wandb_project, save_dir=str(run_dir), offline=t.wandb == "offline",
                                   name=run_dir.name, config=OmegaConf.to_container(cfg, resolve=True)))
    callbacks = [checkpoint, timer, LearningRateMonitor("step")]
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, precision=t.precision,
        max_steps=t.max_steps, max_epochs=t.max_epochs, max_time=t.max_time,
        check_val_every_n_epoch=t.val_every_n_epochs, gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches, log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks, logger=loggers, default_root_dir=run_dir, plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # lhotse samplers shard by rank themselves
        enable_progress_bar=t.progress_bar, num_sanity_val_steps=0, enable_model_summary=False,
    )
    last = ckpt_dir / "last.ckpt"
    t0 = time.perf_counter()
    trainer.fit(model, dm, ckpt_path=str(last) if last.exists() else None)
    best = ckpt_dir / "best.ckpt"
    best_wer = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    if timer.validated_step != trainer.global_step and trainer.global_step > 0:
        # the final weights were never validated (max_steps ended mid-interval): validate them now
        wer = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/wer"]
        if best_wer is None or wer < best_wer:
            trainer.save_checkpoint(best)
            best_wer = wer
    if trainer.global_rank == 0:
        validated = best.exists()
        if not validated:  # no validation ran at all: the last weights are the best we know
            shutil.copyfile(last, best)
        summary = {
            "objective": cfg.objective.name, "attention": cfg.attention.name,
            "params": sum(p.numel() for p in model.parameters()),
            "steps": trainer.global_step, "epochs": trainer.current_epoch,
            "train_time_s": round(time.perf_counter() - t0, 1),
            "time_per_epoch_s": round(sum(timer.durations) / max(1, len(timer.durations)), 2),
            "best_val_wer": best_wer,
            "best_checkpoint": "best by dev WER" if validated else "copy of last (no validation ran)",
        }
        atomic_write_json(done, summary)
        print(f"{run_dir}: trained {summary['steps']} steps in {summary['train_time_s']} s; "
              f"best dev WER {summary['best_val_wer']}")
    return run_dir


def train_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "train_summary.json"
    return read_json(path) if path.exists() else {}
