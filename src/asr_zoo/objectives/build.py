"""Build an objective's LightningModule from a config, or rebuild a trained run from its
directory (``config.yaml`` + a checkpoint read with ``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import load_config
from ..utils import safe_torch_load
from .registry import OBJECTIVES

__all__ = ["build_module", "load_run"]


def build_module(cfg: DictConfig, vocab_size: int, feature_dim: int, tokenizer=None, cmvn=None):
    """The objective's LightningModule for ``cfg``; ``tokenizer`` and ``cmvn`` ({"mean", "std"})
    are attached when given (training; a loaded run restores them from its checkpoint)."""
    cls = OBJECTIVES.get(cfg.objective.name).obj
    module = cls(OmegaConf.to_container(cfg, resolve=True), vocab_size=vocab_size, feature_dim=feature_dim)
    module.tokenizer, module.cmvn = tokenizer, cmvn
    return module


def load_run(run_dir: Path, overrides: list[str] = (), checkpoint: str = "best", device: str = "cpu"):
    """Rebuild a trained module from ``run_dir`` (config + checkpoint), applying overrides.

    Returns:
        (module, cfg): the module in eval mode on ``device`` and the resolved config.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(cfg_path, overrides)
    ckpt_path = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not ckpt_path.exists():
        have = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.ckpt"))
        raise FileNotFoundError(f"{ckpt_path} does not exist (checkpoints: {have or 'none'}); train the run first")
    ckpt = safe_torch_load(ckpt_path)
    hp = ckpt["hyper_parameters"]
    module = build_module(cfg, hp["vocab_size"], hp["feature_dim"])
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    return module.eval().to(device), cfg
