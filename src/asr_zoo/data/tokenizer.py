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
        """Raises ``ValueError`` when ``model_proto`` is not a sentencepiece model following the
        id convention (garbage bytes, an empty or truncated file, another project's model)."""
        if not isinstance(model_proto, (bytes, bytearray)) or not model_proto:
            raise ValueError("not a sentencepiece model: empty")
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.load_from_serialized_proto(self.model_proto)
        except RuntimeError as e:  # protobuf parse failure, reported by the C++ side
            detail = str(e).strip().removeprefix("INTERNAL: ")
            detail = "no serialized ModelProto" if "ParseFromArray" in detail else detail
            raise ValueError(f"not a sentencepiece model: {len(model_proto)} bytes that do not parse ({detail})") from None
        if self.sp.get_piece_size() <= UNK_ID:
            raise ValueError(f"not a usable sentencepiece model: {self.sp.get_piece_size()} pieces")
        specials = [self.sp.id_to_piece(i) for i in (BLANK_ID, SOS_EOS_ID, UNK_ID)]
        if specials != ["<blk>", "<sos/eos>", "<unk>"]:
            raise ValueError(f"tokenizer model does not follow the <blk>=0, <sos/eos>=1, <unk>=2 convention "
                             f"(its first pieces are {specials})")

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        """Read a ``.model`` file; a ``ValueError`` naming it when it is not a usable model."""
        try:
            return cls(Path(path).read_bytes())
        except ValueError as e:
            raise ValueError(f"tokenizer {path}: {e}") from None

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
