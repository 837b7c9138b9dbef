"""Imputer (Chan et al. 2020): CTC-style frame predictions conditioned on a partial alignment.

The encoder input gets embeddings of ã — the expert's Viterbi alignment, shifted by up to
``max_shift`` frames and masked by a policy — added after the front-end (the encoder's ``extra``).
Two losses share one module:

* ``imputer_im``: per-frame cross-entropy against the (noisy) expert alignment (Eq. 10);
* ``imputer_dp``: -log Σ over CTC alignments of the transcript that agree with every unmasked
  token of ã (Eq. 11), computed exactly on the native CTC kernels (``imputer_dp_loss``).

Decoding starts from all-MASK and commits one slot per block per iteration (``imputer_decode``).
Legend: B batch, T' encoder frames, V vocabulary incl. blank; MASK id = V.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..align.rollin import fill_masked, rollin
from ..align.store import load_alignments, subsampling_key
from ..config import ConfigError, fill_placeholders
from ..data.tokenizer import BLANK_ID
from ..decoding.ctc import collapse_ctc
from ..decoding.imputer import imputer_decode
from ..losses.imputer_dp import MASKED, imputer_dp_loss
from ..losses.imputer_im import imputer_im_loss
from ..utils import read_json, safe_torch_load
from ..tensors import lengths_to_valid_mask
from ..schemas import ImputerConfig
from .base import ASRModule
from .ctc import ctc_length_filter_for
from .registry import OBJECTIVES

__all__ = [ "ImputerModule"]


class ImputerModule(ASRModule):
    def __init__(self, config: dict, vocab_size: int, feature_dim: int):
        super().__init__(config, vocab_size, feature_dim)
        self.mask_id = vocab_size
        self.align_embed = nn.Embedding(vocab_size + 1, self.cfg.encoder.d_model)  # tokens + blank + MASK
        self.head = nn.Linear(self.cfg.encoder.d_model, vocab_size)
        self.alignments: dict[str, torch.Tensor] = {}

    @classmethod
    def utterance_filter(cls, cfg):
        return ctc_length_filter_for(cfg)

    @classmethod
    def check_training_config(cls, cfg) -> None:
        """The expert must be a trained CTC run aligned on every training split."""
        o = cfg.objective
        if not o.expert:
            raise ConfigError(f"objective={o.name} needs objective.expert=CTC_RUN_DIR (a CTC run aligned "
                              "with `asr-zoo align CTC_RUN_DIR --split train`)")
        expert = Path(fill_placeholders(o.expert, cfg))  # e.g. runs/ctc-s{seed}: one config for every seed
        needed = [expert / "config.yaml"] + ([expert / "checkpoints" / "best.ckpt"] if o.init_from_expert else [])
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise ConfigError(f"objective.expert={expert}: not a trained run (missing {', '.join(missing)})")
        pointer = expert / "alignments.json"
        aligned = read_json(pointer)["splits"] if pointer.exists() else {}
        unaligned = [s for s in cfg.data.train_splits if s not in aligned]
        if unaligned:
            raise ConfigError(f"objective.expert={expert} has no alignments of {', '.join(unaligned)}: run "
                              f"`asr-zoo align {expert} --split {unaligned[0]}` first")

    def setup_from_data(self, dm) -> None:
        """Load the expert's training alignments (and weights): called by ``train`` before fitting."""
        o = self.cfg.objective
        expert = Path(fill_placeholders(o.expert, self.cfg))
        subsampling = subsampling_key(self.cfg.encoder)
        for split in self.cfg.data.train_splits:
            self.alignments.update(load_alignments(expert, split, self.tokenizer.model_proto, subsampling))
        if o.init_from_expert:
            ckpt = safe_torch_load(expert / "checkpoints" / "best.ckpt")
            state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(("encoder.", "head."))}
            missing = self.load_state_dict(state, strict=False).missing_keys
            if [k for k in missing if not k.startswith("align_embed.")]:
                raise ValueError(f"expert {expert} has a different encoder/head: missing {missing[:5]}")
            nn.init.zeros_(self.align_embed.weight)  # the Imputer starts as exactly the expert CTC model

    def frame_log_probs(self, batch: dict, alignment: torch.Tensor):
        """log p(a_t | ã, x) `(B, T', V)` given the model input ã `(B, T')` (MASK = V)."""
        extra = self.align_embed(alignment)
        enc, lengths = self.encode(batch, extra)
        return self.head(enc).log_softmax(-1), lengths

    def _expert_batch(self, batch: dict, num_frames: int, lengths: torch.Tensor) -> torch.Tensor:
        ali = torch.full((len(batch["ids"]), num_frames), BLANK_ID, dtype=torch.long)
        for b, utt in enumerate(batch["ids"]):
            a = self.alignments.get(utt)
            if a is None:
                raise KeyError(f"no expert alignment for training utterance {utt}")
            if len(a) != int(lengths[b]):
                raise ValueError(f"expert alignment of {utt} has {len(a)} frames, the encoder gives {int(lengths[b])}")
            ali[b, : len(a)] = a.long()
        return ali.to(lengths.device)

    def compute_loss(self, batch: dict):
        o = self.cfg.objective
        lengths = self.encoder.output_lengths(batch["feat_lens"])
        T, B = int(lengths.max()), len(batch["ids"])
        valid = lengths_to_valid_mask(lengths, T)  # (B, T')
        if self.training:
            expert = self._expert_batch(batch, T, lengths)
            options = {"block_size": o.block_size} if o.masking == "block" else {}
            noisy, mask = rollin(expert, lengths, o.masking, o.max_shift, BLANK_ID, **options)
        else:  # validation: dev has no expert alignment; score the all-MASK input (first decoding step)
            noisy, mask = torch.full_like(valid, BLANK_ID, dtype=torch.long), valid
        lp, lengths = self.frame_log_probs(batch, fill_masked(noisy, mask, self.mask_id))
        if o.name == "imputer_im" and self.training:
            return imputer_im_loss(lp, noisy, lengths, mask, o.observed_loss_weight) / B, {}
        observed = fill_masked(noisy, mask, MASKED)
        loss, infeasible = imputer_dp_loss(lp.float(), batch["tokens"], lengths, batch["token_lens"], observed,
                                           blank=BLANK_ID, reduction="sum", return_infeasible=True,
                                           observed_weight=o.observed_loss_weight)
        return loss / B, {"infeasible": infeasible.float().sum()}

    def decode(self, batch: dict):
        o = self.cfg.objective
        lengths = self.encoder.output_lengths(batch["feat_lens"])
        block = o.decode_block_size or o.block_size
        ali, steps = imputer_decode(lambda a: self.frame_log_probs(batch, a)[0], lengths, block,
                                    o.decode_strategy, mask_id=self.mask_id, blank=BLANK_ID,
                                    blank_penalty=o.decode_blank_penalty)
        return collapse_ctc(ali, lengths, BLANK_ID), [steps] * len(batch["ids"])


OBJECTIVES.register("imputer_dp", config=ImputerConfig)(ImputerModule)
OBJECTIVES.register("imputer_im", config=ImputerConfig)(ImputerModule)
