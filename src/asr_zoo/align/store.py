"""The alignment store: best-path CTC alignments of an expert run, kept with the prepared data.

Layout: ``<data.root>/alignments/<run name>-<tokenizer sha8>/<split>.pt`` holding
``{"alignments": {utt_id: int16 (T',)}, "tokenizer_sha256", "subsampling", "expert_run"}``;
the run directory gets ``alignments.json`` pointing there. Alignments are at the encoder's
frame rate and tied to the tokenizer and front-end that produced them: loading them for a
model with another tokenizer or front-end is an error. Written by ``asr-zoo align``
(:mod:`asr_zoo.aligner`), read by the Imputer; stores are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..utils import atomic_replace, read_json, safe_torch_load

__all__ = ["load_alignments", "save_alignments", "tokenizer_sha", "subsampling_key"]


def tokenizer_sha(model_proto: bytes) -> str:
    return hashlib.sha256(model_proto).hexdigest()


def subsampling_key(encoder_cfg) -> str:
    """The frame rate alignments are stored at: the front-end and its 4x time subsampling."""
    return f"{encoder_cfg.frontend}/x4"


def save_alignments(path: Path, alignments: dict[str, torch.Tensor], model_proto: bytes, encoder_cfg,
                    expert_run: Path) -> None:
    """Write one split's store atomically: ``alignments`` maps utterance ids to int16 `(T',)`."""
    payload = {"alignments": alignments, "tokenizer_sha256": tokenizer_sha(model_proto),
               "subsampling": subsampling_key(encoder_cfg), "expert_run": str(Path(expert_run).resolve())}
    atomic_replace(path, lambda tmp: torch.save(payload, tmp))


def load_alignments(expert_run: Path, split: str, model_proto: bytes, subsampling: str) -> dict[str, torch.Tensor]:
    """The stored alignments of ``expert_run`` for ``split``, checked against the consumer's
    tokenizer and front-end."""
    expert_run = Path(expert_run)
    pointer = expert_run / "alignments.json"
    if not pointer.exists() or split not in read_json(pointer)["splits"]:
        raise FileNotFoundError(f"no {split} alignments for expert {expert_run}: run "
                                f"`asr-zoo align {expert_run} --split {split}` first")
    payload = safe_torch_load(Path(read_json(pointer)["dir"]) / f"{split}.pt")
    if payload["tokenizer_sha256"] != tokenizer_sha(model_proto):
        raise ValueError(f"alignments of {expert_run} were made with another tokenizer than this run's; "
                         "use the same data config (tokenizer type/size, train splits) as the expert")
    if payload["subsampling"] != subsampling:
        raise ValueError(f"alignments of {expert_run} are at the frame rate of front-end {payload['subsampling']}, "
                         f"this model uses {subsampling}")
    return payload["alignments"]
