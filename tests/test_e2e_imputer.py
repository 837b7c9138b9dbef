"""CTC expert -> align -> Imputer-DP / Imputer-IM -> eval -> compare on the tiny corpus."""

import json

import torch

from asr_zoo.decoding.ctc import collapse_ctc
from asr_zoo.cli import main
from asr_zoo.data.tokenizer import Tokenizer
from conftest import tiny_train_args


def test_expert_align_imputer_pipeline(tiny_corpus, tmp_path, capsys):
    expert = tmp_path / "ctc"
    assert main(tiny_train_args(tiny_corpus, expert, "trainer.max_steps=3")) == 0

    # training an Imputer before aligning is a clear error
    assert main(tiny_train_args(tiny_corpus, tmp_path / "early", "objective=imputer_dp",
                                f"objective.expert={expert}")) == 2
    assert "asr-zoo align" in capsys.readouterr().err

    assert main(["align", str(expert), "--split", "train", "--device", "cpu"]) == 0
    index = json.loads((expert / "alignments.json").read_text())
    stats = index["splits"]["train"]
    assert stats["aligned"] + stats["unaligned"] == 40 and stats["aligned"] > 30
    payload = torch.load(f"{index['dir']}/train.pt", weights_only=False)
    ckpt = torch.load(expert / "checkpoints" / "best.ckpt", weights_only=False)
    tok = Tokenizer(ckpt["tokenizer"])
    trans = {l.split(" ", 1)[0]: l.split(" ", 1)[1] for p in (tiny_corpus / "LibriSpeech" / "train").rglob("*.trans.txt")
             for l in p.read_text().splitlines()}
    for utt, ali in payload["alignments"].items():  # every stored alignment collapses to its transcript
        assert collapse_ctc(ali.long()[None], torch.tensor([len(ali)]))[0] == tok.encode(trans[utt])

    for objective in ("imputer_dp", "imputer_im"):
        run = tmp_path / objective
        assert main(tiny_train_args(tiny_corpus, run, f"objective={objective}", f"objective.expert={expert}",
                                    "objective.block_size=4")) == 0
        assert main(["eval", str(run), "--max-utts", "3"]) == 0
        result = json.loads((run / "results" / "test.json").read_text())
        assert result["objective"] == objective and result["decode_steps"] == 4
    assert main(["eval", str(tmp_path / "imputer_dp"), "objective.decode_block_size=1", "--max-utts", "2"]) == 0
    one_shot = json.loads((tmp_path / "imputer_dp" / "results" / "test@objective.decode_block_size=1.json").read_text())
    assert one_shot["decode_steps"] == 1
    capsys.readouterr()
    assert main(["compare", str(expert), str(tmp_path / "imputer_dp")]) == 0  # the expert has no results yet:
    assert f"skipped {expert}: no results/*.json (run `asr-zoo eval {expert}` first)" in capsys.readouterr().err
    assert main(["eval", str(expert), "--max-utts", "3"]) == 0
    assert main(["compare", str(expert), str(tmp_path / "imputer_dp"), str(tmp_path / "imputer_im")]) == 0
    assert "| imputer_dp | imputer_dp |" in capsys.readouterr().out


def test_imputer_starts_as_its_expert(tiny_corpus, tmp_path):
    """With init_from_expert the alignment embedding is zero: on an all-MASK input the Imputer's
    first decoding step reproduces the expert's CTC posteriors exactly."""
    from asr_zoo.config import compose
    from asr_zoo.objectives import build_module, load_run

    expert = tmp_path / "ctc"
    assert main(tiny_train_args(tiny_corpus, expert, "trainer.max_steps=1")) == 0
    assert main(["align", str(expert)]) == 0
    ctc, ctc_cfg = load_run(expert)
    overrides = [a for a in tiny_train_args(tiny_corpus, tmp_path / "dp")[1:]]
    cfg = compose([*overrides, "objective=imputer_dp", f"objective.expert={expert}"])
    dp = build_module(cfg, ctc.vocab_size, 80, tokenizer=ctc.tokenizer)
    dp.setup_from_data(None)
    dp.eval()
    batch = {"feats": torch.randn(1, 40, 80), "feat_lens": torch.tensor([40])}
    lp_ctc, _ = ctc.log_probs(batch)
    lp_dp, _ = dp.frame_log_probs(batch, torch.full((1, 10), dp.mask_id))
    torch.testing.assert_close(lp_dp, lp_ctc)
