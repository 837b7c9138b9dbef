"""RNN-T objective: the shared encoder as transcription network + prediction and joint networks.

Legend: B batch, T encoder frames, U target length, D encoder dim, P predictor dim, J joint dim,
V vocabulary incl. blank (id 0, also the predictor's start symbol).

Training builds the joint lattice `(B, T, U+1, V)` once per batch (the big tensor; it stays in the
autocast dtype under AMP) and hands it to :func:`asr_zoo.losses.rnnt.rnnt_loss`, which applies
the log-softmax itself and accumulates in float32. Decoding: :mod:`asr_zoo.decoding.rnnt`.

An auxiliary CTC head on the encoder (``ctc_weight`` > 0, as in icefall and ESPnet) gives the
transcriber a per-frame target from the first step; a transducer trained from scratch otherwise
spends its first thousands of steps emitting only blanks. The loss is::

    loss = (1 - ctc_weight) * L_rnnt + ctc_weight * L_ctc

with ``L_ctc`` normalised like ``L_rnnt`` (per utterance, per target token, or summed). Decoding
uses only the transducer.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from ..data.tokenizer import BLANK_ID
from ..decoding.rnnt import RNNTHypotheses, rnnt_beam_search, rnnt_greedy_decode
from ..losses.ctc import ctc_nll
from ..losses.rnnt import rnnt_loss
from ..losses.rnnt_pruned import gather_pruned, prune_ranges, pruned_loss_scales, pruned_rnnt_loss, simple_rnnt_loss
from ..nn.transducer import Joiner, build_predictor
from ..schemas import RNNTConfig
from .base import ASRModule
from .ctc import ctc_length_filter_for
from .registry import OBJECTIVES

__all__ = [ "RNNTModule"]


@OBJECTIVES.register("rnnt", config=RNNTConfig)
class RNNTModule(ASRModule):
    """Transducer: ``self.encoder`` (transcriber), ``self.predictor`` and ``self.joiner``."""

    def __init__(self, config: dict, vocab_size: int, feature_dim: int):
        super().__init__(config, vocab_size, feature_dim)
        o = self.cfg.objective
        self.predictor = build_predictor(o.predictor, vocab_size, embed_dim=o.embed_dim, hidden_dim=o.hidden_dim,
                                         num_layers=o.num_layers, context_size=o.context_size,
                                         conv=o.stateless_conv, start_id=BLANK_ID,
                                         dropout=self.cfg.encoder.dropout if o.dropout is None else o.dropout)
        self.joiner = Joiner(self.cfg.encoder.d_model, self.predictor.output_dim, o.joint_dim, vocab_size)
        self.ctc_head = nn.Linear(self.cfg.encoder.d_model, vocab_size) if o.ctc_weight > 0 else None
        if o.get("loss", "full") == "pruned":  # the simple (additive) joiner's projections, as icefall's
            self.simple_am_proj = nn.Linear(self.cfg.encoder.d_model, vocab_size)
            self.simple_lm_proj = nn.Linear(self.predictor.output_dim, vocab_size)

    @classmethod
    def utterance_filter(cls, cfg):
        return ctc_length_filter_for(cfg) if cfg.objective.ctc_weight > 0 else None

    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.cfg.objective
        enc, lengths = self.encode(batch)  # (B, T, D), (B,)
        tokens, token_lens = batch["tokens"], batch["token_lens"]  # (B, U), (B,)
        pred = self.predictor(tokens)  # (B, U+1, P)
        extra: dict[str, Tensor] = {}
        if o.get("loss", "full") == "pruned":
            loss, extra = self._pruned_loss(enc, pred, lengths, tokens, token_lens)
        else:
            logits = self.joiner(enc, pred)  # (B, T, U+1, V)
            loss = rnnt_loss(logits, tokens, lengths, token_lens, blank=BLANK_ID, reduction=o.reduction,
                             clamp=o.clamp, backend=o.loss_backend)
        if self.ctc_head is None:
            return loss, extra
        ctc = ctc_nll(self.ctc_head(enc).log_softmax(-1), lengths, tokens, token_lens, o.reduction)
        return (1 - o.ctc_weight) * loss + o.ctc_weight * ctc, {"rnnt_loss": loss.detach(), "ctc_loss": ctc.detach(),
                                                                **extra}

    def _pruned_loss(self, enc: Tensor, pred: Tensor, lengths: Tensor, tokens: Tensor, token_lens: Tensor):
        """icefall's weighted ``simple * L_simple + pruned * L_pruned`` (:mod:`asr_zoo.losses.rnnt_pruned`):
        enc `(B, T, D)`, pred `(B, U+1, P)`; the joint runs on `(B, T, prune_range, V)` only."""
        o = self.cfg.objective
        simple, occupancy = simple_rnnt_loss(self.simple_am_proj(enc), self.simple_lm_proj(pred), tokens, lengths,
                                             token_lens, BLANK_ID, o.reduction, return_occupancy=True)
        ranges = prune_ranges(occupancy, lengths, token_lens, o.prune_range)  # (B, T, S)
        band = gather_pruned(self.joiner.predictor_proj(pred), ranges)  # (B, T, S, J)
        logits = self.joiner.join(self.joiner.encoder_proj(enc)[:, :, None], band)  # (B, T, S, V)
        del band  # backward does not need it: free it before the loss's allocations
        pruned = pruned_rnnt_loss(logits, ranges, tokens, lengths, token_lens, BLANK_ID, o.reduction)
        w_simple, w_pruned = pruned_loss_scales(self.global_step, o.prune_warm_step, o.simple_loss_scale)
        return w_simple * simple + w_pruned * pruned, {"simple_loss": simple.detach(), "pruned_loss": pruned.detach()}

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
