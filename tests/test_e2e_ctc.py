"""End to end through the CLI on the tiny synthetic corpus: prepare -> train -> eval -> compare."""

import json


from asr_zoo.cli import main
from conftest import tiny_train_args

RESULT_KEYS = {"objective", "attention", "params", "split", "num_utts", "wer", "cer", "decode_steps",
               "latency_ms_p50", "latency_ms_p90", "rtf", "device"}


def test_train_eval_compare(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "ctc"
    assert main(tiny_train_args(tiny_corpus, run)) == 0
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["objective"] == "ctc"
    # training stopped mid-epoch: the final weights are validated and compete for best.ckpt
    assert summary["best_checkpoint"] == "best by dev WER" and summary["best_val_wer"] is not None

    assert main(["eval", str(run), "--split", "test", "--device", "cpu"]) == 0
    result = json.loads((run / "results" / "test.json").read_text())
    assert RESULT_KEYS <= result.keys() and result["num_utts"] == 8 and result["decode_steps"] == 1
    hyps = (run / "results" / "test.hyps.tsv").read_text().splitlines()
    assert hyps[0] == "utt_id\treference\thypothesis" and len(hyps) == 9

    capsys.readouterr()
    assert main(["compare", str(run), "--out", str(tmp_path / "table")]) == 0
    table = capsys.readouterr().out
    assert "| run | objective | attention |" in table and "| ctc | ctc | softmax |" in table
    assert (tmp_path / "table.md").exists() and (tmp_path / "table.csv").exists()

    # a finished run is not trained again
    assert main(tiny_train_args(tiny_corpus, run)) == 0
    assert "already finished" in capsys.readouterr().out


def test_resume_from_last_checkpoint(tiny_corpus, tmp_path):
    run = tmp_path / "resume"
    assert main(tiny_train_args(tiny_corpus, run)) == 0
    (run / "train_summary.json").unlink()  # as if it had crashed after the last checkpoint
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=6")) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert (summary["steps"], summary["resumed_at_step"], summary["steps_this_invocation"]) == (6, 4, 2)


def test_changed_config_in_existing_run_dir_is_refused(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "x"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1")) == 0
    (run / "train_summary.json").unlink()
    assert main(tiny_train_args(tiny_corpus, run, "encoder.num_layers=2")) == 2
    assert "different config" in capsys.readouterr().err


def test_config_typo_exits_nonzero_naming_the_key(tmp_path, capsys):
    assert main(["train", "encoder.d_modle=3", f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "d_modle" in err and "d_model" in err


def test_eval_of_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_swap_attention_at_eval_records_override(tiny_corpus, tmp_path):
    run = tmp_path / "swap"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1")) == 0
    assert main(["eval", str(run), "--max-utts", "2", "attention=linear"]) == 0  # overrides after options
    result = json.loads((run / "results" / "test@attention=linear.json").read_text())
    assert result["attention"] == "linear" and result["overrides"] == ["attention=linear"]
