"""RNN-T objective: the shared encoder as transcription network + prediction and joint networks.

Legend: B batch, T encoder frames, U target length, D encoder dim, H predictor dim, J joint dim,
V vocabulary incl. blank (id 0, also the predictor's start symbol).

Training builds the joint lattice `(B, T, U+1, V)` once per batch (the big tensor; it stays in the
autocast dtype under AMP) and hands it to :func:`asr_zoo.losses.rnnt.rnnt_loss`, which applies
the log-softmax itself and accumulates in float32. Decoding: :mod:`asr_zoo.decoding.rnnt`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.tokenizer import BLANK_ID
from ..decoding.rnnt import RNNTHypotheses, rnnt_beam_search, rnnt_greedy_decode
from ..losses.rnnt import rnnt_loss
from ..nn.transducer import Joiner, build_predictor
from .base import ASRModule, ObjectiveConfig
from .registry import OBJECTIVES

__all__ = ["RNNTConfig", "RNNTModule"]


@dataclass
class RNNTConfig(ObjectiveConfig):
    name: str = "rnnt"
    predictor: str = "lstm"  # lstm (embedding -> LSTM) | stateless (last context_size tokens, no recurrence)
    embed_dim: int = 128  # token embedding size of the predictor
    hidden_dim: int = 256  # LSTM hidden size (lstm)
    num_layers: int = 1  # LSTM layers (lstm)
    context_size: int = 2  # tokens of left context (stateless; 1 or 2)
    stateless_conv: bool = True  # stateless: mix the context with a depthwise conv (icefall), else concatenate
    dropout: float = 0.1  # predictor dropout
    joint_dim: int = 256  # joint network width J
    decoder: str = "greedy"  # greedy | beam (modified beam search, one symbol per frame)
    beam_size: int = 4  # prefixes kept per frame (beam)
    max_symbols_per_frame: int = 3  # greedy: tokens emitted per frame at most
    reduction: str = "mean"  # loss over the batch: mean (per utterance, like ctc) | mean_per_token | sum
    clamp: float = -1.0  # clamp the loss gradient w.r.t. the logits to [-clamp, clamp]; <= 0: off


@OBJECTIVES.register("rnnt", config=RNNTConfig)
class RNNTModule(ASRModule):
    """Transducer: ``self.encoder`` (transcriber), ``self.predictor`` and ``self.joiner``."""

    def __init__(self, config: dict, vocab_size: int, feature_dim: int):
        super().__init__(config, vocab_size, feature_dim)
        o = self.cfg.objective
        if o.decoder not in ("greedy", "beam"):
            raise ValueError(f"objective.decoder={o.decoder!r}; valid choices: greedy, beam")
        if o.reduction not in ("mean", "mean_per_token", "sum"):
            raise ValueError(f"objective.reduction={o.reduction!r}; valid choices: mean, mean_per_token, sum")
        self.predictor = build_predictor(o.predictor, vocab_size, embed_dim=o.embed_dim, hidden_dim=o.hidden_dim,
                                         num_layers=o.num_layers, context_size=o.context_size,
                                         conv=o.stateless_conv, dropout=o.dropout, start_id=BLANK_ID)
        self.joiner = Joiner(self.cfg.encoder.d_model, self.predictor.output_dim, o.joint_dim, vocab_size)

    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        enc, lengths = self.encode(batch)  # (B, T, D), (B,)
        tokens, token_lens = batch["tokens"], batch["token_lens"]  # (B, U), (B,)
        logits = self.joiner(enc, self.predictor(tokens))  # (B, T, U+1, V)
        loss = rnnt_loss(logits, tokens, lengths, token_lens, blank=BLANK_ID,
                         reduction=self.cfg.objective.reduction, clamp=self.cfg.objective.clamp)
        return loss, {}

    @torch.no_grad()
    def decode(self, batch: dict) -> tuple[list[list[int]], list[int]]:
        hyps = self.search(batch)
        return hyps.tokens, hyps.steps

    def search(self, batch: dict) -> RNNTHypotheses:
        """Run the configured decoder; tokens, frames, scores and predictor steps per utterance."""
        enc, lengths = self.encode(batch)
        enc_proj = self.joiner.encoder_proj(enc)  # (B, T, J)
        o = self.cfg.objective
        if o.decoder == "beam":
            return rnnt_beam_search(enc_proj, lengths, self._predict, self.joiner.join, o.beam_size, BLANK_ID)
        return rnnt_greedy_decode(enc_proj, lengths, self._predict, self.joiner.join, BLANK_ID,
                                  o.max_symbols_per_frame)

    def _predict(self, tokens: Tensor, state):
        """One predictor step mapped into the joint space: tokens `(N,)` -> `(N, J)`, state."""
        out, state = self.predictor.predict(tokens, state)
        return self.joiner.predictor_proj(out), state
