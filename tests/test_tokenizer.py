import pytest

from asr_zoo.data.tokenizer import BLANK_ID, SOS_EOS_ID, UNK_ID, Tokenizer, train_tokenizer

TEXTS = ["THE QUICK BROWN FOX", "JUMPS OVER THE LAZY DOG", "A QUICK DOG"] * 30


@pytest.mark.parametrize("kind,size", [("bpe", 31), ("unigram", 31), ("char", 0)])
def test_special_ids_and_roundtrip(tmp_path, kind, size):
    tok = train_tokenizer(TEXTS, tmp_path / "tok", kind, size)
    assert tok.sp.id_to_piece(BLANK_ID) == "<blk>" and tok.sp.id_to_piece(SOS_EOS_ID) == "<sos/eos>"
    assert tok.sp.id_to_piece(UNK_ID) == "<unk>"
    ids = tok.encode("THE LAZY FOX")
    assert min(ids) > UNK_ID and tok.decode(ids) == "THE LAZY FOX"
    assert tok.decode([BLANK_ID, *ids, SOS_EOS_ID]) == "THE LAZY FOX"  # specials never reach text
    assert Tokenizer.load(tmp_path / "tok.model").encode("THE LAZY FOX") == ids


def test_empty_training_text_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no non-empty transcripts"):
        train_tokenizer(["", "  "], tmp_path / "tok", "bpe", 30)
