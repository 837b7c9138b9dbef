"""``asr-zoo compare`` on made-up run directories: skipping non-runs, seed groups, baseline, report."""

import json
import os

import yaml

from asr_zoo.cli import main
from asr_zoo.report.online import wandb_mode
from asr_zoo.report.plot import pareto_front


def _fake_run(root, name, objective, seed, lr, errors, latency, train_s=100.0):
    run = root / name
    (run / "results").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "run_dir": str(run), "objective": {"name": objective},
                                                     "attention": {"name": "softmax"}, "optim": {"lr": lr}}))
    (run / "train_summary.json").write_text(json.dumps({"train_time_s": train_s, "time_per_epoch_s": 10.0}))
    words = 10
    wer = 100 * sum(errors) / (words * len(errors))
    (run / "results" / "test.json").write_text(json.dumps({
        "objective": objective, "attention": "softmax", "params": 1000, "split": "test", "num_utts": len(errors),
        "wer": wer, "cer": wer / 3, "decode_steps": 1.0, "latency_ms_p50": latency, "latency_ms_p90": latency,
        "rtf": 0.01, "device": "cpu (x86_64, 2 threads)"}))
    (run / "results" / "test.utt_errors.tsv").write_text(
        "utt_id\tword_errors\tref_words\n" + "".join(f"u{i}\t{e}\t{words}\n" for i, e in enumerate(errors)))
    return run


def test_compare_groups_seeds_tests_against_baseline_and_skips_non_runs(tmp_path, capsys):
    n = 120
    good = [1 if i % 4 == 0 else 0 for i in range(n)]   # WER 2.5
    bad = [3 if i % 2 == 0 else 2 for i in range(n)]    # WER 25
    _fake_run(tmp_path, "ctc-s0", "ctc", 0, 0.002, good, 5.0)
    _fake_run(tmp_path, "ctc-s1", "ctc", 1, 0.002, [e + (i % 10 == 0) for i, e in enumerate(good)], 6.0)
    _fake_run(tmp_path, "s2s-s0", "seq2seq", 0, 0.002, bad, 50.0, 300.0)
    _fake_run(tmp_path, "s2s-s1", "seq2seq", 1, 0.002, bad, 40.0, 320.0)
    _fake_run(tmp_path, "ctc-lr-s0", "ctc", 0, 0.001, good, 5.0)
    (tmp_path / "demo-table.md").write_text("| not a run |\n")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "report"
    entries = sorted(str(p) for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(["compare", *entries, "--baseline", "ctc-s0", "--out", f"{out}/"]) == 0
    cap = capsys.readouterr()
    assert "skipped" in cap.err and "demo-table.md: not a run directory" in cap.err and "empty" in cap.err
    table = (out / "table.md").read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ctc") or
             line.startswith("| seq2seq")}
    assert "| 2 |" in lines["ctc/softmax [optim.lr=0.002]"] and "baseline" in lines["ctc/softmax [optim.lr=0.002]"]
    assert "| 1 |" in lines["ctc/softmax [optim.lr=0.001]"]
    s2s = lines["seq2seq/softmax"]
    assert "| 2 |" in s2s and " *" in s2s and "± " in s2s  # seeds pooled, significantly worse
    assert "cpu_capability" in table and "torch" in table
    assert (out / "table.csv").exists() and (out / "pareto.png").stat().st_size > 1000
    # a folder of nothing but non-runs is an error that says so
    assert main(["compare", str(tmp_path / "demo-table.md")]) == 2


def test_pareto_front():
    assert pareto_front([(1, 5), (2, 3), (3, 4), (4, 1), (2, 6)]) == [0, 1, 3]
    assert pareto_front([(1, 1), (2, 2)]) == [0]


def test_online_means_online(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("online", os.environ) == "online"
    assert wandb_mode("offline", os.environ) == "offline" and wandb_mode("disabled", os.environ) == "disabled"
    main(["compare", str(tmp_path)])  # any command: the CLI must not default WANDB_MODE to offline
    assert "WANDB_MODE" not in os.environ
    assert wandb_mode("online", os.environ) == "online"


def test_a_run_saved_before_a_key_existed_groups_with_one_that_has_it_at_its_default(tmp_path):
    """Configs are compared with every schema key filled in: a run whose config.yaml predates
    ``encoder.time_subsampling`` is the same configuration as one saved with it at 4."""
    from omegaconf import OmegaConf

    from asr_zoo.config import compose
    from asr_zoo.report.table import collect_rows, group_rows

    errors = [1, 0, 0, 2] * 10
    runs = [_fake_run(tmp_path, f"ctc-s{seed}", "ctc", seed, 0.002, errors, 5.0) for seed in (0, 1, 2)]
    for seed, run in enumerate(runs):
        saved = OmegaConf.to_container(compose(["objective=ctc", f"seed={seed}", f"run_dir={run}",
                                                *(["encoder.time_subsampling=2"] if seed == 2 else [])]))
        if seed == 0:
            del saved["encoder"]["time_subsampling"]  # written before the key existed
        (run / "config.yaml").write_text(yaml.safe_dump(saved))
    groups = {g["label"]: g["n"] for g in group_rows(collect_rows(runs, "test"))}
    assert groups == {"ctc/softmax [encoder.time_subsampling=4]": 2, "ctc/softmax [encoder.time_subsampling=2]": 1}


def _swap_results(run, tag, errors, words=10):
    """Add an evaluation-time override's results (``results/<tag>.json``) to a fake run."""
    plain = json.loads((run / "results" / "test.json").read_text())
    wer = 100 * sum(errors) / (words * len(errors))
    (run / "results" / f"{tag}.json").write_text(json.dumps({**plain, "wer": wer, "attention": "linear"}))
    (run / "results" / f"{tag}.utt_errors.tsv").write_text(
        "utt_id\tword_errors\tref_words\n" + "".join(f"u{i}\t{e}\t{words}\n" for i, e in enumerate(errors)))


def test_an_evaluation_time_swap_is_compared_with_the_models_own_decoding(tmp_path):
    """thesis Table 5.2: `eval RUN attention=linear` against the same runs decoded as trained, paired per
    utterance; another configuration's swap is compared with the baseline's plain decoding (the baseline,
    a label, has no swap of its own here)."""
    n = 120
    good = [1 if i % 4 == 0 else 0 for i in range(n)]                 # WER 2.5
    worse = [e + (i % 3 == 0) for i, e in enumerate(good)]             # WER 5.8
    runs = [_fake_run(tmp_path, f"ctc-s{s}", "ctc", s, 0.002, good, 5.0) for s in (0, 1)]
    for run in runs:
        _swap_results(run, "test@attention=linear", worse)
    other = _fake_run(tmp_path, "ctc-lr-s0", "ctc", 0, 0.001, good, 5.0)
    _swap_results(other, "test@attention=linear", good)
    out = tmp_path / "report"
    assert main(["compare", *map(str, [*runs, other]), "--baseline", "ctc/softmax [optim.lr=0.002]",
                 "--out", f"{out}/"]) == 0
    table = (out / "table.md").read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ctc")}
    swapped = next(v for k, v in lines.items() if "0.002" in k and "attention=linear" in k)
    assert "+3.33 *" in swapped and "| 2 |" in swapped          # the swap costs 3.3 points, seeds pooled
    other_swap = next(v for k, v in lines.items() if "0.001" in k and "attention=linear" in k)
    assert "+0.00" in other_swap                                   # against the baseline's plain decoding


def test_labels_show_what_departs_from_the_shared_configuration():
    """An ablation: the baseline stays bare, each variant shows every key it changes (not only the
    first three alphabetically, which hid optim.* behind data.*), ties show in every group, and
    groups not told apart by those keys both show the first key where they differ."""
    from asr_zoo.report.table import label_groups

    def group(tag="test", objective="ctc", **changes):
        cfg = {"data.tokenizer.type": "char", "data.norm": "global", "optim.lr": 0.002, "optim.warmup": 200}
        return {"objective": objective, "attention": "softmax", "split": "test", "tag": tag,
                "config": {**cfg, **changes}}

    groups = [group(), group(**{"optim.warmup": 500}), group(**{"optim.lr": 0.004}),
              group(**{"data.norm": "utterance", "data.tokenizer.type": "bpe", "optim.lr": 0.001}),
              group(objective="rnnt", **{"optim.lr": 0.1}), group("test@attention=linear")]
    label_groups(groups)
    assert [g["label"] for g in groups] == [
        "ctc/softmax", "ctc/softmax [optim.warmup=500]", "ctc/softmax [optim.lr=0.004]",
        "ctc/softmax [data.norm=utterance data.tokenizer.type=bpe optim.lr=0.001]", "rnnt/softmax",
        "ctc/softmax [attention=linear]"]

    tie = [group(**{"optim.lr": 0.001}), group(**{"optim.lr": 0.004})]
    label_groups(tie)
    assert [g["label"] for g in tie] == ["ctc/softmax [optim.lr=0.001]", "ctc/softmax [optim.lr=0.004]"]

    # a and b both hold the majority value of x and of y, yet differ (in z)
    a, b = group(x=1, y=1, z=1), group(x=1, y=1, z=2)
    c, d = group(x=2, y=1, z=3), group(x=1, y=2, z=3)
    label_groups([a, b, c, d])
    assert len({g["label"] for g in (a, b, c, d)}) == 4 and "z=1" in a["label"] and "z=2" in b["label"]
