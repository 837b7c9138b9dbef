"""Seq2seq-attention objective: encoder + Transformer decoder, label-smoothed cross-entropy,
optional auxiliary CTC (hybrid CTC/attention), optional scheduled sampling; greedy / beam decoding.

Legend: B batch, T' encoder frames, U target length (labels + ``<eos>``), D model dim, V vocabulary.

Teacher forcing: the decoder reads ``<sos> y_1 .. y_n`` and is trained to emit ``y_1 .. y_n <eos>``
(``<sos>`` = ``<eos>`` = id 1). The loss is::

    loss = (1 - ctc_weight) * L_att + ctc_weight * L_ctc

where ``L_att`` is the label-smoothed cross-entropy summed over the valid target positions and
``L_ctc`` the CTC negative log-likelihood of the labels summed over the batch, both divided by the
same normaliser: the number of utterances (``loss_norm: utterance``, the default) or the number
of target tokens incl. ``<eos>`` (``loss_norm: token``).

Decoder memory: with ``memory_positions`` the decoder cross-attends to the encoder output plus
sinusoidal frame positions (unscaled, no parameters). Cross-attention by content alone is blind to
frame order (permuting the memory frames permutes nothing in its output), and the encoder's own
input positions are faint at its output (added to front-end features scaled by sqrt(D)); without
them the attention-only decoder loses its place at repeated or similar-sounding stretches and loops
or skips (docs/seq2seq_decoding.md). The CTC head reads the encoder output without positions.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from ..data.tokenizer import BLANK_ID, SOS_EOS_ID
from ..decoding.seq2seq import beam_search, greedy_search
from ..losses.ctc import ctc_nll
from ..nn.blocks import SinusoidalPositionalEncoding
from ..nn.decoder import TransformerDecoder
from ..tensors import lengths_to_valid_mask
from ..schemas import Seq2SeqConfig
from .base import ASRModule
from .ctc import ctc_length_filter_for
from .registry import OBJECTIVES

__all__ = [ "Seq2SeqModule", "label_smoothed_cross_entropy", "teacher_forcing_io"]


def teacher_forcing_io(tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Decoder inputs and targets for teacher forcing.

    Args:
        tokens (Tensor): shape `(B, U-1)` labels, zero-padded.
        token_lens (Tensor): shape `(B,)`.

    Returns:
        (Tensor, Tensor, Tensor): inputs ``<sos> y`` `(B, U)`, targets ``y <eos>`` `(B, U)` (padding 0),
        and their lengths `(B,)` = ``token_lens + 1``.
    """
    B = tokens.shape[0]
    sos = tokens.new_full((B, 1), SOS_EOS_ID)
    inputs = torch.cat([sos, tokens], 1)
    targets = torch.cat([tokens, tokens.new_zeros(B, 1)], 1)
    targets.scatter_(1, token_lens[:, None], SOS_EOS_ID)
    return inputs, targets, token_lens + 1


def label_smoothed_cross_entropy(logits: Tensor, targets: Tensor, lengths: Tensor, smoothing: float) -> Tensor:
    """Label-smoothed cross-entropy summed over the valid positions (padding ignored).

    Per position: ``(1 - ε) · (-log p[y]) + ε · mean_v(-log p[v])``, i.e. the cross-entropy
    against ``(1 - ε) one-hot(y) + ε / V`` (the ``label_smoothing`` of ``F.cross_entropy``).

    Args:
        logits (Tensor): shape `(B, U, V)`.
        targets (Tensor): shape `(B, U)`.
        lengths (Tensor): shape `(B,)` valid positions.
        smoothing (float): ε in [0, 1).

    Returns:
        Tensor: scalar, the sum over the valid positions (float32).
    """
    log_probs = logits.float().log_softmax(-1)
    nll = -log_probs.gather(2, targets[..., None])[..., 0]  # (B, U)
    uniform = -log_probs.mean(-1)  # (B, U)
    per_token = (1 - smoothing) * nll + smoothing * uniform
    valid = lengths_to_valid_mask(lengths, targets.shape[1])
    return torch.where(valid, per_token, 0.0).sum()


@OBJECTIVES.register("seq2seq", config=Seq2SeqConfig)
class Seq2SeqModule(ASRModule):
    def __init__(self, config: dict, vocab_size: int, feature_dim: int):
        super().__init__(config, vocab_size, feature_dim)
        o = self.cfg.objective
        D = self.cfg.encoder.d_model
        self.decoder = TransformerDecoder(vocab_size, D, o.decoder_layers, o.decoder_heads, o.decoder_ffn_dim,
                                          self.cfg.encoder.dropout if o.decoder_dropout is None else o.decoder_dropout,
                                          o.decoder_attention, o.tie_embedding)
        self.ctc_head = nn.Linear(D, vocab_size) if o.ctc_weight > 0 else None
        self.memory_positions = SinusoidalPositionalEncoding(D, scale=False) if o.memory_positions else None

    def decoder_memory(self, enc: Tensor) -> Tensor:
        """What the decoder cross-attends to: enc `(B, T', D)`, plus frame positions when
        ``memory_positions`` is on. -> `(B, T', D)`."""
        return enc if self.memory_positions is None else self.memory_positions(enc)

    @classmethod
    def utterance_filter(cls, cfg):
        return ctc_length_filter_for(cfg) if cfg.objective.ctc_weight > 0 else None

    def compute_loss(self, batch):
        o = self.cfg.objective
        enc, enc_lens = self.encode(batch)
        memory = self.decoder_memory(enc)
        inputs, targets, lens = teacher_forcing_io(batch["tokens"], batch["token_lens"])
        if self.training and o.scheduled_sampling > 0:
            inputs = self._scheduled_sampling(inputs, lens, memory, enc_lens, o.scheduled_sampling)
        logits = self.decoder(inputs, lens, memory, enc_lens)
        norm = len(batch["ids"]) if o.loss_norm == "utterance" else int(lens.sum())
        att = label_smoothed_cross_entropy(logits, targets, lens, o.label_smoothing) / norm
        valid = lengths_to_valid_mask(lens, targets.shape[1])
        extra = {"att_loss": att.detach(),
                 "token_acc": ((logits.argmax(-1) == targets) & valid).sum() / valid.sum()}
        if self.ctc_head is None:
            return att, extra
        lp = self.ctc_head(enc).log_softmax(-1)
        ctc = ctc_nll(lp, enc_lens, batch["tokens"], batch["token_lens"]) / norm
        extra["ctc_loss"] = ctc.detach()
        return (1 - o.ctc_weight) * att + o.ctc_weight * ctc, extra

    def _scheduled_sampling(self, inputs: Tensor, lens: Tensor, enc: Tensor, enc_lens: Tensor, p: float) -> Tensor:
        """Two-pass scheduled sampling: a teacher-forced pass without gradient predicts every next
        token greedily; each input position after ``<sos>`` is replaced by the prediction made at
        the previous position with probability ``p``. inputs `(B, U)` -> `(B, U)`."""
        with torch.no_grad():
            logits = self.decoder(inputs, lens, enc, enc_lens)
            logits[..., BLANK_ID] = float("-inf")
            predicted = logits.argmax(-1)  # (B, U): guess for inputs[:, 1:]
        replace = torch.rand(inputs.shape, device=inputs.device) < p
        replace[:, 0] = False
        shifted = torch.cat([inputs[:, :1], predicted[:, :-1]], 1)
        return torch.where(replace, shifted, inputs)

    def decode(self, batch):
        o = self.cfg.objective
        enc, enc_lens = self.encode(batch)
        memory = self.decoder_memory(enc)
        if o.decoder == "greedy":
            hyps, _, steps = greedy_search(self.decoder, memory, enc_lens, o.max_len_ratio)
            return hyps, steps
        ctc_lp = self.ctc_head(enc).log_softmax(-1) if self.ctc_head is not None else None
        hyps, _, steps = beam_search(self.decoder, memory, enc_lens, o.beam_size, o.length_penalty, o.max_len_ratio,
                                     ctc_lp, o.ctc_decode_weight if ctc_lp is not None else 0.0, o.ctc_candidates)
        return hyps, steps
