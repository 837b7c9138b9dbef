"""Transducer prediction networks and joint network (torchaudio's predictor / joiner split).

Legend: B batch, T encoder frames, U target length, N hypotheses scored together, W token
embedding dim, P predictor output dim, D encoder dim, J joint dim, V vocabulary incl. blank.

A predictor summarises the tokens emitted so far. Training runs it over a whole target sequence
at once (:meth:`forward`: the start symbol, id 0 = blank, followed by the targets -> `(B, U+1, P)`);
decoders run it one token at a time (:meth:`predict`) and carry its ``state``, a tuple of
batch-first tensors so that decoders can select, stack and cache states without knowing the type:

- :class:`LSTMPredictor`: embedding -> LSTM; state ``(h, c)``, each `(N, num_layers, P)`.
- :class:`StatelessPredictor` (Ghodsi et al. 2020, as in icefall): embedding of the last
  ``context_size`` tokens, mixed by a depthwise 1-D convolution over the context window (or
  concatenated); no recurrence. State ``(history,)``: the previous ``context_size - 1`` ids `(N, C-1)`.

:class:`Joiner`: ``join(enc, pred) = out(tanh(W_enc enc + W_pred pred))`` with broadcasting, so the
training lattice `(B, T, U+1, V)` and a decoder's `(N, V)` come from the same method.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..hardware import cpu_bf16_lstm

__all__ = ["LSTMPredictor", "StatelessPredictor", "Joiner", "build_predictor", "PredictorState"]

PredictorState = tuple[Tensor, ...]  # batch-first tensors; None = the start state


class LSTMPredictor(nn.Module):
    """Embedding of the previous token -> stacked LSTM.

    Args:
        vocab_size (int): V; id ``start_id`` is the start symbol.
        embed_dim (int): W.
        hidden_dim (int): LSTM hidden size P (= :attr:`output_dim`).
        num_layers (int): LSTM layers.
        dropout (float): after the embedding and after the LSTM.
        start_id (int): token fed at the first step. (Default: 0, blank)

    >>> p = LSTMPredictor(10, embed_dim=8, hidden_dim=16, num_layers=2)
    >>> p(torch.tensor([[3, 4, 0]])).shape
    torch.Size([1, 4, 16])
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, num_layers: int = 1,
                 dropout: float = 0.0, start_id: int = 0):
        super().__init__()
        self.start_id, self.output_dim = start_id, hidden_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)

    def forward(self, targets: Tensor) -> Tensor:
        """Outputs for the start symbol followed by the targets.

        Args:
            targets (Tensor): shape `(B, U)`, int; padding after each length is harmless (causal).

        Returns:
            Tensor: shape `(B, U + 1, P)`; row u summarises the first u targets.
        """
        out, _ = self._run(_prepend_start(targets, self.start_id), None)
        return out

    def predict(self, tokens: Tensor, state: Optional[PredictorState]) -> tuple[Tensor, PredictorState]:
        """One step for N hypotheses.

        Args:
            tokens (Tensor): shape `(N,)`, int, the last emitted token (``start_id`` at the start).
            state: ``None`` (start) or ``(h, c)``, each `(N, num_layers, P)`.

        Returns:
            (Tensor, state): output `(N, P)` and the new state.
        """
        out, state = self._run(tokens[:, None], state)
        return out[:, 0], state

    def _run(self, tokens: Tensor, state: Optional[PredictorState]) -> tuple[Tensor, PredictorState]:
        x = self.dropout(self.embed(tokens))  # (B, S, W)
        hc = None if state is None else tuple(s.transpose(0, 1).contiguous() for s in state)  # (L, B, P)
        if _float32_recurrence(x):
            with torch.autocast("cpu", enabled=False):
                hc = None if hc is None else tuple(s.float() for s in hc)
                out, (h, c) = self.lstm(x.float(), hc)  # (B, S, P)
        else:
            out, (h, c) = self.lstm(x, hc)  # (B, S, P)
        return self.dropout(out), (h.transpose(0, 1), c.transpose(0, 1))  # states (B, L, P)


def _float32_recurrence(x: Tensor) -> bool:
    """Under CPU bf16 autocast on a CPU whose oneDNN has no (fast) bf16 LSTM, run the recurrence
    in float32: AVX2-only CPUs cannot run it in bf16 at all (see :mod:`asr_zoo.hardware`)."""
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not cpu_bf16_lstm())


class StatelessPredictor(nn.Module):
    """Embeddings of the last ``context_size`` tokens, no recurrence.

    With ``conv`` (icefall's choice) a depthwise convolution of kernel ``context_size`` mixes the
    window channel by channel, then ReLU: ``P = W``. Without it the window's embeddings are
    concatenated: ``P = context_size * W``. Before the first tokens the window holds ``start_id``.

    Args:
        vocab_size (int): V.
        embed_dim (int): W.
        context_size (int): tokens of left context C (1 = bigram-like, 2 = trigram-like).
        conv (bool): mix the window with a depthwise conv (else concatenate). Ignored for C = 1.
        dropout (float): on the output.
        start_id (int): left padding / start symbol. (Default: 0, blank)

    >>> p = StatelessPredictor(10, embed_dim=8, context_size=2)
    >>> out, state = p.predict(torch.tensor([0, 5]), None)
    >>> out.shape, state[0].tolist()
    (torch.Size([2, 8]), [[0], [5]])
    """

    def __init__(self, vocab_size: int, embed_dim: int, context_size: int = 2, conv: bool = True,
                 dropout: float = 0.0, start_id: int = 0):
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.start_id, self.context_size = start_id, context_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.conv = (nn.Conv1d(embed_dim, embed_dim, context_size, groups=embed_dim, bias=False)
                     if conv and context_size > 1 else None)
        self.output_dim = embed_dim if self.conv is not None else embed_dim * context_size
        self.dropout = nn.Dropout(dropout)

    def forward(self, targets: Tensor) -> Tensor:
        """Outputs for the start symbol followed by the targets.

        Args:
            targets (Tensor): shape `(B, U)`, int.

        Returns:
            Tensor: shape `(B, U + 1, P)`; row u depends on targets ``u - C + 1 .. u`` (1-based).
        """
        tokens = _prepend_start(targets, self.start_id)  # (B, U+1)
        left = tokens.new_full((tokens.shape[0], self.context_size - 1), self.start_id)  # (B, C-1)
        return self._window(torch.cat([left, tokens], 1))

    def predict(self, tokens: Tensor, state: Optional[PredictorState]) -> tuple[Tensor, PredictorState]:
        """One step for N hypotheses.

        Args:
            tokens (Tensor): shape `(N,)`, int, the last emitted token.
            state: ``None`` (start) or ``(history,)``, history `(N, C - 1)` int.

        Returns:
            (Tensor, state): output `(N, P)` and the new state.
        """
        tokens = tokens.long()
        history = (tokens.new_full((tokens.shape[0], self.context_size - 1), self.start_id)
                   if state is None else state[0])
        window = torch.cat([history, tokens[:, None]], 1)  # (N, C)
        return self._window(window)[:, 0], (window[:, 1:],)

    def _window(self, tokens: Tensor) -> Tensor:
        """`(B, S + C - 1)` ids -> `(B, S, P)`: one output per full window of C tokens."""
        x = self.embed(tokens)  # (B, S+C-1, W)
        if self.conv is not None:
            x = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, S, W)
        else:
            C, S = self.context_size, tokens.shape[1] - self.context_size + 1
            x = torch.cat([x[:, i:i + S] for i in range(C)], 2)  # (B, S, C*W), oldest first
        return self.dropout(x)


class Joiner(nn.Module):
    """Joint network: project both inputs to J, add, tanh, project to V.

    Args:
        encoder_dim (int): D.
        predictor_dim (int): P.
        joint_dim (int): J.
        vocab_size (int): V, blank included.

    >>> j = Joiner(6, 5, 4, 3)
    >>> j(torch.randn(2, 7, 6), torch.randn(2, 4, 5)).shape
    torch.Size([2, 7, 4, 3])
    """

    def __init__(self, encoder_dim: int, predictor_dim: int, joint_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joint_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joint_dim, bias=False)
        self.out = nn.Linear(joint_dim, vocab_size)

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """The training lattice.

        Args:
            enc (Tensor): shape `(B, T, D)` encoder output.
            pred (Tensor): shape `(B, U + 1, P)` predictor output.

        Returns:
            Tensor: logits `(B, T, U + 1, V)`.
        """
        return self.join(self.encoder_proj(enc)[:, :, None], self.predictor_proj(pred)[:, None])

    def join(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """Logits from already-projected inputs; any broadcastable shapes `(..., J)` -> `(..., V)`.

        Decoders project the encoder output once (:attr:`encoder_proj`) and each predictor output
        once (:attr:`predictor_proj`), then call this per frame with `(N, J)` and `(N, J)`.
        """
        hidden = (enc_proj + pred_proj).tanh_()  # (..., J); in place: the sum is not kept for backward
        return self.out(hidden)


def build_predictor(kind: str, vocab_size: int, *, embed_dim: int, hidden_dim: int, num_layers: int,
                    context_size: int, conv: bool, dropout: float, start_id: int = 0) -> nn.Module:
    """``kind``: ``lstm`` | ``stateless``; the other kind's arguments are ignored."""
    if kind == "lstm":
        return LSTMPredictor(vocab_size, embed_dim, hidden_dim, num_layers, dropout, start_id)
    if kind == "stateless":
        return StatelessPredictor(vocab_size, embed_dim, context_size, conv, dropout, start_id)
    raise ValueError(f"unknown predictor {kind!r}; valid choices: lstm, stateless")


def _prepend_start(targets: Tensor, start_id: int) -> Tensor:
    """`(B, U)` -> `(B, U + 1)` with ``start_id`` in front."""
    start = torch.full((targets.shape[0], 1), start_id, dtype=torch.long, device=targets.device)
    return torch.cat([start, targets.long()], 1)
