"""Sentencepiece tokenizer shared by every objective.

Id convention (same for all objectives): 0 = ``<blk>`` (CTC / RNN-T / Imputer blank),
1 = ``<sos/eos>`` (seq2seq), 2 = ``<unk>``, then the pieces. ``vocab_size`` counts all of them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from ..utils import atomic_replace

__all__ = ["Tokenizer", "train_tokenizer", "BLANK_ID", "SOS_EOS_ID", "UNK_ID"]

BLANK_ID, SOS_EOS_ID, UNK_ID = 0, 1, 2


class Tokenizer:
    """Text <-> token ids. Serialisable as bytes (stored inside checkpoints).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(["HELLO WORLD", "HELLO THERE"] * 20, d / "tok", "char", 0)
    >>> tok.decode(tok.encode("HELLO"))
    'HELLO'
    """

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.id_to_piece(BLANK_ID) != "<blk>" or self.sp.id_to_piece(SOS_EOS_ID) != "<sos/eos>":
            raise ValueError("tokenizer model does not follow the <blk>=0, <sos/eos>=1 convention")

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        return cls(Path(path).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) >= UNK_ID]  # drop <blk>, <sos/eos>
        return self.sp.decode(ids)

    def unk_fraction(self, ids: list[int]) -> float:
        return sum(i == UNK_ID for i in ids) / max(len(ids), 1)


def train_tokenizer(texts: Iterable[str], prefix: Path, model_type: str, vocab_size: int) -> Tokenizer:
    """Train a sentencepiece model on ``texts`` and store it at ``<prefix>.model`` atomically.

    Args:
        texts: training transcripts.
        prefix: output path without suffix.
        model_type: ``bpe`` | ``unigram`` | ``char``.
        vocab_size: total size including the 3 special ids (ignored for ``char``).
    """
    prefix = Path(prefix)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("cannot train a tokenizer: no non-empty transcripts")
    kwargs = dict(
        sentence_iterator=iter(texts), model_type=model_type, character_coverage=1.0,
        unk_id=UNK_ID, bos_id=-1, eos_id=-1, pad_id=-1,
        control_symbols=["<blk>", "<sos/eos>"], num_threads=2, minloglevel=2,
        hard_vocab_limit=model_type != "char",
    )
    if model_type == "char":
        chars = sorted(set("".join(texts)))
        kwargs["vocab_size"] = len(chars) + 3 + 1  # + specials + the word boundary piece
        kwargs["hard_vocab_limit"] = False
    else:
        kwargs["vocab_size"] = vocab_size
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(model_writer=model, **kwargs)
    tok = Tokenizer(model.getvalue())
    atomic_replace(prefix.with_suffix(".model"), lambda tmp: tmp.write_bytes(tok.model_proto))
    return tok
