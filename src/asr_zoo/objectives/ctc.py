"""CTC objective: encoder + linear head, ``F.ctc_loss``, greedy / prefix-beam decoding."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..data.tokenizer import BLANK_ID
from ..decoding.ctc import ctc_greedy_decode, ctc_prefix_beam_search
from ..losses.ctc import ctc_min_frames, ctc_nll
from ..nn.frontend import subsampled_lengths, time_stride_layers
from ..schemas import CTCConfig
from .base import ASRModule
from .registry import OBJECTIVES

__all__ = ["CTCModule", "ctc_length_filter", "ctc_length_filter_for"]


def ctc_length_filter(num_frames: int, ids: list[int], time_layers: int = 2):
    have = int(subsampled_lengths(num_frames, time_layers))
    need = int(ctc_min_frames(torch.tensor([ids]), torch.tensor([len(ids)]))[0])
    return None if have >= need else f"too short for CTC: {have} encoder frames < {need} needed by its labels"


def ctc_length_filter_for(cfg):
    """:func:`ctc_length_filter` at ``cfg``'s encoder frame rate (``encoder.time_subsampling``)."""
    return functools.partial(ctc_length_filter, time_layers=time_stride_layers(cfg.encoder.get("time_subsampling", 4)))


@OBJECTIVES.register("ctc", config=CTCConfig)
class CTCModule(ASRModule):
    def __init__(self, config: dict, vocab_size: int, feature_dim: int):
        super().__init__(config, vocab_size, feature_dim)
        self.head = nn.Linear(self.cfg.encoder.d_model, vocab_size)

    @classmethod
    def utterance_filter(cls, cfg):
        return ctc_length_filter_for(cfg)

    def log_probs(self, batch):
        """Per-frame log-probabilities `(B, T', V)` and lengths `(B,)`."""
        enc, lengths = self.encode(batch)
        return self.head(enc).log_softmax(-1), lengths

    def compute_loss(self, batch):
        lp, lengths = self.log_probs(batch)
        return ctc_nll(lp, lengths, batch["tokens"], batch["token_lens"]) / len(batch["ids"]), {}

    def decode(self, batch):
        lp, lengths = self.log_probs(batch)
        if self.cfg.objective.decoder == "prefix_beam":
            ids = ctc_prefix_beam_search(lp, lengths, self.cfg.objective.beam_size, BLANK_ID)
        else:
            ids = ctc_greedy_decode(lp, lengths, BLANK_ID)
        return ids, [1] * len(ids)  # one non-autoregressive network pass per utterance
