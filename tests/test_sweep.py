"""Offline sweeps (Optuna in the sweep dir): a grid of 2 configs x 2 seeds makes 4 runs, a rerun
none; a sweep killed mid-trial is completed by its rerun."""

import itertools
import json

import pytest
import yaml
from omegaconf import OmegaConf

from asr_zoo.cli import main
from asr_zoo.config import compose, conf_dir
from asr_zoo.sweep import load_sweep, search_space, trial_overrides
from conftest import tiny_train_args
from faults import cli_cmd, default_env, kill_and_rerun


def _sweep_yaml(path, corpus, runs, attentions, seeds, steps=4):
    train = [a for a in tiny_train_args(corpus, runs / "{attention}-s{seed}", f"trainer.max_steps={steps}")
             if not a.startswith("trainer.max_steps=4")]
    spec = {"program": "asr-zoo", "method": "grid", "metric": {"name": "dev/wer", "goal": "minimize"},
            "parameters": {"attention": {"values": attentions}, "seed": {"values": seeds}},
            "command": ["${env}", "asr-zoo", *train, "${args_no_hyphens}"]}
    path.write_text(yaml.safe_dump(spec))
    return path


def _finished(runs):
    return sorted(p.name for p in runs.iterdir() if (p / "train_summary.json").exists()
                  and (p / "results" / "dev.json").exists())


def test_grid_sweep_runs_each_point_once(tiny_corpus, tmp_path, capsys):
    runs, sweep_dir = tmp_path / "runs", tmp_path / "sweep"
    y = _sweep_yaml(tmp_path / "s.yaml", tiny_corpus, runs, ["softmax", "linear"], [0, 1])
    assert main(["sweep", str(y), "--offline", "--dir", str(sweep_dir), "--workers", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert _finished(runs) == ["linear-s0", "linear-s1", "softmax-s0", "softmax-s1"]
    assert "[sweep 4/4 done, 0 running, 0 failed | best" in out
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["complete"] == 4 and summary["failed"] == 0
    assert all(t["value"] is not None for t in summary["trials"])
    logs = sorted((sweep_dir / "logs").iterdir())
    # a rerun starts no trial
    assert main(["sweep", str(y), "--offline", "--dir", str(sweep_dir)]) == 0
    assert "started" not in capsys.readouterr().out
    assert sorted((sweep_dir / "logs").iterdir()) == logs
    assert len(json.loads((sweep_dir / "summary.json").read_text())["trials"]) == 4
    # and seeds group in compare
    assert main(["compare", *map(str, runs.iterdir()), "--split", "dev"]) == 0
    assert "| 2 |" in capsys.readouterr().out


def test_killed_sweep_is_completed_by_rerun(tiny_corpus, tmp_path):
    runs, sweep_dir = tmp_path / "runs", tmp_path / "sweep"
    y = _sweep_yaml(tmp_path / "s.yaml", tiny_corpus, runs, ["softmax"], [0, 1], steps=40)
    cmd = cli_cmd("sweep", y, "--offline", "--dir", sweep_dir, "--threads", "1")
    report = kill_and_rerun(cmd, [6.0], env=default_env(1), watch=runs, timeout=600)
    assert report.kills[0].landed, report.summary()
    assert report.rerun.rc == 0, report.rerun.output[-3000:]
    assert _finished(runs) == ["softmax-s0", "softmax-s1"]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["complete"] == 2 and summary["failed"] == 0


def test_trial_overrides_fill_run_dir_and_threads():
    cmd = ["${env}", "asr-zoo", "train", "run_dir=r/{objective}-{attention.clusters}-s{seed}", "${args_no_hyphens}"]
    got = trial_overrides(cmd, {"attention.clusters": 8, "seed": 1}, threads=2)
    assert got == ["run_dir=r/{objective}-8-s1", "attention.clusters=8", "seed=1", "trainer.num_threads=2"]


def test_sigterm_to_the_sweep_stops_its_trainers(tiny_corpus, tmp_path):
    """`kill PID` / `scancel` reach only the sweep process: it must stop the trainers it started
    (they run in worker threads, whose cleanup never runs on SIGTERM), and a rerun completes."""
    import os
    import signal
    import subprocess
    import time

    runs, sweep_dir = tmp_path / "runs", tmp_path / "sweep"
    y = _sweep_yaml(tmp_path / "s.yaml", tiny_corpus, runs, ["softmax"], [0, 1], steps=400)
    proc = subprocess.Popen(cli_cmd("sweep", y, "--offline", "--dir", sweep_dir, "--workers", "2", "--threads", "1"),
                            env=default_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def trainers() -> list[int]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if str(runs) in cmdline and "train" in cmdline and int(pid) != proc.pid:
                pids.append(int(pid))
        return pids

    try:
        deadline = time.monotonic() + 300
        while len(trainers()) < 2 and time.monotonic() < deadline:  # both trials started
            assert proc.poll() is None, "the sweep ended before its trials started"
            time.sleep(0.5)
        assert trainers(), "no trainer started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while trainers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trainers() == [], "trainers outlived the sweep"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in trainers():
            os.kill(pid, signal.SIGKILL)


def _grid_points(space: dict):
    """Every combination of the listed values; a distribution contributes its lower bound."""
    names = list(space)
    choices = [v if isinstance(v, list) else [v.low] for v in space.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


@pytest.mark.parametrize("path", sorted((conf_dir() / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_point_composes(path):
    """A bad key or choice in a shipped sweep fails here, not an hour into the sweep."""
    spec = load_sweep(path)
    points = _grid_points(search_space(spec["parameters"]))
    assert points
    for params in points:
        cfg = compose(trial_overrides(spec["command"], params, threads=1))
        for key, value in params.items():
            assert OmegaConf.select(cfg, key) == value or cfg[key].name == value, (path.name, key, value)
