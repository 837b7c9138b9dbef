"""Training reliability: kill -9 and resume to the same weights, run directories that never block a
corrected command, NaN/Inf steps skipped, divergence stopped, untrusted pickles refused, one-line
errors, and bf16/int8 arithmetic chosen by what is fast on the running CPU."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from asr_zoo import hardware
from asr_zoo.cli import main
from asr_zoo.objectives.ctc import CTCModule
from asr_zoo.utils import UntrustedFileError, safe_torch_load
from conftest import tiny_train_args
from faults import assert_no_duplicates, assert_nothing_torn, cli_cmd, default_env, kill_and_rerun, kill_points, timed_run

# ------------------------------------------------------------------ kill -9 during training
# 20 epochs of 2 batches, validated every epoch, one thread: deterministic on CPU. Kills are
# drawn between the first checkpoint and the end, so they land while the model trains.
STEPS = 40
KILL_ARGS = (f"trainer.max_steps={STEPS}", "trainer.num_threads=1", "trainer.val_max_utts=4", "trainer.log_every_n_steps=1")


def _train_cmd(corpus: Path, run: Path) -> list[str]:
    return cli_cmd(*tiny_train_args(corpus, run, *KILL_ARGS))


@pytest.fixture(scope="module")
def reference_run(tiny_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    timed = timed_run(_train_cmd(tiny_corpus, run), env=default_env(threads=1), watch=run / "checkpoints")
    assert timed.rc == 0, timed.output[-3000:]
    return run, timed


def _state(run: Path) -> dict:
    ckpt = safe_torch_load(run / "checkpoints" / "last.ckpt")
    return {"weights": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"][0]["state"],
            "scheduler": ckpt["lr_schedulers"][0], "step": ckpt["global_step"]}


@pytest.mark.parametrize("seed", range(int(os.environ.get("ASR_ZOO_KILL9_SEEDS", "3"))))  # kill points
def test_kill9_during_training_resumes_to_the_same_weights(reference_run, tiny_corpus, tmp_path, seed):
    ref_run, ref_timed = reference_run
    run = tmp_path / "run"
    delays = kill_points(seed, ref_timed.work_window(), n=1)
    resumed_from = []  # the step of last.ckpt after the kill (None: killed after finishing)

    def after_kill(kill):
        assert_nothing_torn(tmp_path)
        last = run / "checkpoints" / "last.ckpt"
        finished = (run / "train_summary.json").exists()  # killed while exiting: nothing left to do
        resumed_from.append(None if finished else safe_torch_load(last)["global_step"] if last.exists() else 0)

    report = kill_and_rerun(_train_cmd(tiny_corpus, run), delays, env=default_env(threads=1), cwd=tmp_path,
                            watch=run / "checkpoints", after_kill=after_kill)
    assert report.rerun.rc == 0, report.rerun.output[-3000:]
    assert_nothing_torn(tmp_path)
    assert_no_duplicates(tmp_path)

    got, want = _state(run), _state(ref_run)
    assert got["step"] == want["step"] == STEPS
    for name, tensor in want["weights"].items():
        assert torch.equal(got["weights"][name], tensor), name
    for i, slots in want["optimizer"].items():  # Adam moments and step counters continue exactly
        for key, value in slots.items():
            assert torch.equal(got["optimizer"][i][key], value), (i, key)
    assert got["scheduler"]["last_epoch"] == want["scheduler"]["last_epoch"]
    assert got["scheduler"]["_last_lr"] == want["scheduler"]["_last_lr"]

    summary = json.loads((run / "train_summary.json").read_text())
    ref_summary = json.loads((ref_run / "train_summary.json").read_text())
    assert summary["best_val_wer"] == ref_summary["best_val_wer"]
    print(f"kill at {delays[0]} s after the first checkpoint: landed {report.kills[0].landed}, "
          f"resumed at step {resumed_from[0]}")
    if report.kills[0].landed and resumed_from[0] is not None:  # the rerun trained only what was missing
        assert summary["resumed_at_step"] == resumed_from[0]
        assert summary["steps_this_invocation"] == STEPS - resumed_from[0]
    rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    loss_rows = [r.split(",") for r in rows[1:] if r.split(",")[header.index("train/loss")]]
    logged = [int(float(r[header.index("step")])) for r in loss_rows]
    assert len(logged) == len(set(logged)) == STEPS  # one training-loss row per step: none lost, none twice


def test_restored_epoch_ends_cleanly_and_time_excludes_validation(tiny_corpus, tmp_path):
    """The old EpochTimer crashed at the end of a restored epoch (no on_train_epoch_start)."""
    run = tmp_path / "r"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=4")) == 0
    (run / "train_summary.json").unlink()
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=8")) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["steps_this_invocation"] == 4
    assert 0 < summary["time_per_epoch_s"] < summary["train_time_s"]


# ------------------------------------------------------------------ run directories
def test_failed_starts_leave_nothing_that_blocks_the_corrected_command(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "dp"
    # a bad choice fails at compose, before the run directory or any data is touched
    assert main(tiny_train_args(tiny_corpus, run, "objective.decoder=nosuch")) == 2
    assert "objective.decoder='nosuch'; valid choices: greedy, prefix_beam" in capsys.readouterr().err
    assert not run.exists()
    # a missing expert fails before data preparation
    assert main(tiny_train_args(tiny_corpus, run, "objective=imputer_dp")) == 2
    assert "needs objective.expert" in capsys.readouterr().err
    assert not run.exists()
    # a failure after the config was written (data root missing) blocks nothing either
    assert main(tiny_train_args(tmp_path / "no-data", run, "trainer.max_steps=1")) == 2
    assert (run / "config.yaml").exists() and not (run / "checkpoints").exists()
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1", "encoder.num_layers=2")) == 0


def test_finished_run_with_another_config_names_the_keys(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "done"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1")) == 0
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1", "optim.lr=0.1")) == 2
    err = capsys.readouterr().err
    assert "finished run with a different config" in err and "optim.lr: 0.002 -> 0.1" in err
    # keys that cannot change the result may differ
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1", "trainer.num_threads=1")) == 0
    assert "already finished" in capsys.readouterr().out


# ------------------------------------------------------------------ training faults
def _poison(monkeypatch, bad_steps):
    """Make CTC's loss NaN at the given (0-based) training steps."""
    original = CTCModule.compute_loss

    def compute_loss(self, batch):
        loss, extra = original(self, batch)
        if self.training and (bad_steps is None or self.global_step in bad_steps):
            loss = loss * float("nan")
        return loss, extra

    monkeypatch.setattr(CTCModule, "compute_loss", compute_loss)


def test_nan_steps_are_skipped_counted_and_logged(tiny_corpus, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, {1, 2})
    run = tmp_path / "nan"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=5", "trainer.log_every_n_steps=1")) == 0
    assert "non-finite loss or gradient, step skipped" in capsys.readouterr().out
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 5 and summary["skipped_steps"] == 2
    ckpt = safe_torch_load(run / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    header, *rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("train/grad_norm")
    norms = [r.split(",")[column] for r in rows if r.split(",")[column]]
    assert sum(n == "nan" for n in norms) == 2 and sum(float(n) > 0 for n in norms if n != "nan") == 3


def test_diverging_run_stops_with_a_clear_message_and_no_nan_checkpoint(tiny_corpus, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, None)
    run = tmp_path / "div"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=20", "trainer.max_consecutive_bad_steps=3")) == 2
    err = capsys.readouterr().err
    assert "training diverged: 3 steps in a row" in err and "lower optim.lr" in err
    assert not (run / "train_summary.json").exists()
    for ckpt in (run / "checkpoints").glob("*.ckpt") if (run / "checkpoints").exists() else []:
        assert all(torch.isfinite(v).all() for v in safe_torch_load(ckpt)["state_dict"].values())


# ------------------------------------------------------------------ CLI errors
def test_unexpected_errors_are_not_config_errors_and_debug_shows_the_traceback(tiny_corpus, tmp_path, monkeypatch,
                                                                               capsys):
    def broken(self, batch):
        raise KeyError("feats_typo")

    monkeypatch.setattr(CTCModule, "compute_loss", broken)
    assert main(tiny_train_args(tiny_corpus, tmp_path / "k", "trainer.max_steps=1")) == 1
    err = capsys.readouterr().err
    assert "unexpected error: KeyError: 'feats_typo'" in err and "--debug" in err
    assert "asr-zoo: error:" not in err
    with pytest.raises(KeyError, match="feats_typo"):
        main(["--debug", *tiny_train_args(tiny_corpus, tmp_path / "k", "trainer.max_steps=1")])


# ------------------------------------------------------------------ untrusted files
class _Payload:
    """Unpickling this runs ``Path(target).touch()``: what a crafted checkpoint would do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _write_crafted(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": _Payload(target)}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)


def test_crafted_pickle_is_refused_and_never_executed(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "shared-run"
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1")) == 0
    pwned = tmp_path / "pwned"
    _write_crafted(run / "checkpoints" / "best.ckpt", pwned)
    assert main(["eval", str(run), "--max-utts", "1"]) == 2
    err = capsys.readouterr().err
    assert "best.ckpt: refused to load" in err and "could run code" in err
    assert not pwned.exists()
    # the same loader guards resuming (last.ckpt), expert checkpoints and alignment stores
    _write_crafted(run / "checkpoints" / "last.ckpt", pwned)
    (run / "train_summary.json").unlink()
    assert main(tiny_train_args(tiny_corpus, run, "trainer.max_steps=1")) == 2
    assert "last.ckpt: refused to load" in capsys.readouterr().err
    store = tmp_path / "store.pt"
    _write_crafted(store, pwned)
    with pytest.raises(UntrustedFileError, match="refused to load"):
        safe_torch_load(store)
    assert not pwned.exists()


def test_torn_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "torn.ckpt"
    torch.save({"x": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UntrustedFileError, match="torn.ckpt: not a readable torch file"):
        safe_torch_load(path)


# ------------------------------------------------------------------ arithmetic by CPU speed
@pytest.fixture
def probes(monkeypatch):
    """Clear the per-process probe caches before and after a test that fakes timings."""
    fns = (hardware.cpu_fast_bf16, hardware.cpu_bf16_lstm, hardware.cpu_fast_int8_mm)
    for f in fns:
        f.cache_clear()
    monkeypatch.delenv("ASR_ZOO_CPU_ARITH", raising=False)
    yield monkeypatch
    for f in fns:
        f.cache_clear()


def _fake_timings(monkeypatch, slow_dtype_ratio: float):
    """bf16 / int8 calls take ``slow_dtype_ratio`` x the float32 time (AVX2 emulation: ~20-30)."""
    calls = []

    def median_seconds(fn, reps=5):
        calls.append(fn)
        return 1.0 if len(calls) % 2 == 0 else slow_dtype_ratio  # candidate first, float32 second

    monkeypatch.setattr(hardware, "median_seconds", median_seconds)


def test_slow_bf16_and_int8_are_not_chosen(probes):
    _fake_timings(probes, 25.0)
    assert not hardware.cpu_fast_bf16() and not hardware.cpu_bf16_lstm()
    assert not hardware.cpu_fast_int8_mm() or not hardware.cpu_int8_mm_runs()


def test_fast_bf16_and_int8_are_chosen(probes):
    _fake_timings(probes, 0.5)
    assert hardware.cpu_fast_bf16()
    assert hardware.cpu_fast_int8_mm() == hardware.cpu_int8_mm_runs()


def test_forced_fp32_mode(probes):
    probes.setenv("ASR_ZOO_CPU_ARITH", "fp32")
    assert not hardware.cpu_fast_bf16() and not hardware.cpu_fast_int8_mm() and not hardware.cpu_bf16_lstm()
    probes.setenv("ASR_ZOO_CPU_ARITH", "turbo")
    hardware.cpu_fast_bf16.cache_clear()
    with pytest.raises(ValueError, match="valid choices: probe, fp32, native"):
        hardware.cpu_fast_bf16()


def test_lstm_predictor_runs_in_float32_under_autocast_without_fast_bf16(probes):
    from asr_zoo.nn.transducer import LSTMPredictor

    predictor = LSTMPredictor(10, embed_dim=8, hidden_dim=16)
    tokens = torch.tensor([[3, 4, 0], [1, 2, 2]])
    reference = predictor(tokens)
    probes.setattr("asr_zoo.nn.transducer.cpu_bf16_lstm", lambda: False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = predictor(tokens)
        step, state = predictor.predict(tokens[:, 0], None)
    assert out.dtype == torch.float32 and torch.allclose(out, reference, atol=1e-6)
    assert step.dtype == torch.float32 and state[0].dtype == torch.float32


def test_clustering_keys_follow_the_speed_probe(probes):
    from asr_zoo.nn.attention import hashing

    codes = torch.ones(1, 8, 12)
    probes.setattr(hashing, "cpu_fast_int8_mm", lambda: False)
    assert not hashing.NearestCentroid(codes, bits=10, clusters=3).integer
    if hardware.cpu_int8_mm_runs():
        probes.setattr(hashing, "cpu_fast_int8_mm", lambda: True)
        assert hashing.NearestCentroid(codes, bits=10, clusters=3).integer


def test_bf16_training_falls_back_to_float32_on_a_cpu_without_fast_bf16(probes):
    from omegaconf import OmegaConf

    from asr_zoo.train import _precision

    t = OmegaConf.create({"accelerator": "cpu", "precision": "bf16-mixed"})
    probes.setattr("asr_zoo.train.cpu_fast_bf16", lambda: False)
    assert _precision(t) == "32-true"
    probes.setattr("asr_zoo.train.cpu_fast_bf16", lambda: True)
    assert _precision(t) == "bf16-mixed"


def test_arithmetic_record_names_the_capability():
    record = hardware.cpu_arithmetic()
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(record) == {"cpu_capability", "bf16_fast", "bf16_lstm", "int8_mm_fast"}
