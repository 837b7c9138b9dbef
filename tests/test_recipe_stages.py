"""The recipes' orchestration (recipes/synth/*.sh, recipes/fsdd/run.sh), with a stub in place of the CLI.

Their real runs take hours, so what is checked here is what a typo would break unnoticed until
then: which runs each stage trains, from which expert, with which overrides; that every expert
is aligned before its Imputer runs; that stage 3 decodes only what is missing (resumable) and
that stage 4 tables the documented groups against the documented baselines.
"""

import os
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STUB = """#!/usr/bin/env bash
# records each call; makes what the recipe checks for (run dirs, eval results)
echo "$*" >> "$CALLS"
case "$1" in
  train) for a in "$@"; do case "$a" in run_dir=*) mkdir -p "${a#run_dir=}" ;; esac; done ;;
  eval) mkdir -p "$2/results" && echo '{}' > "$2/results/$4.json" ;;
esac
"""


def _run_recipe(tmp_path: Path, script: str, *args: str, **env: str) -> list[list[str]]:
    stub, calls = tmp_path / "asr-zoo-stub", tmp_path / "calls.txt"
    stub.write_text(STUB)
    stub.chmod(0o755)
    calls.write_text("")
    full_env = {**os.environ, "ASR_ZOO": str(stub), "CALLS": str(calls), **env}
    out = subprocess.run(["bash", str(REPO / "recipes" / script), *args], cwd=REPO, env=full_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return [shlex.split(line) for line in calls.read_text().splitlines()]


def _trained(calls: list[list[str]]) -> dict[str, list[str]]:
    """run_dir -> the overrides it was trained with."""
    runs = {}
    for call in calls:
        if call[0] == "train":
            run_dir = next(a.split("=", 1)[1] for a in call if a.startswith("run_dir="))
            runs[run_dir] = call[1:]
    return runs


def test_equal_compute_recipe_trains_evaluates_and_tables_every_documented_run(tmp_path):
    runs = tmp_path / "runs"
    env = dict(RUNS=str(runs), SEEDS="0 1", POLICY_SEEDS="1", DATA="data/x", WORKERS="2")
    calls = _run_recipe(tmp_path, "synth/equal_compute.sh", "--stage", "1", **env)

    assert calls[0][:2] == ["sweep", "conf/sweeps/imputer_equal_compute.yaml"]
    trained = _trained(calls)
    expected = {f"imputer_dp_eq11-s{s}" for s in (0, 1)} | {f"imputer_dp-s{s}" for s in (0, 1)} \
        | {"imputer_dp_eq11_bernoulli-s1", "imputer_dp_eq11_uniform-s1", "imputer_im_eq11-s1"}
    assert {Path(r).name for r in trained} == expected
    for run_dir, args in trained.items():
        seed = run_dir[-1]
        assert f"seed={seed}" in args and f"objective.expert={runs}/ctc_3000-s{seed}" in args
        assert "trainer.max_steps=3000" in args and "data.root=data/x" in args
        name = Path(run_dir).name
        assert ("objective.observed_loss_weight=0" in args) == name.startswith("imputer_dp-")
        assert ("objective.masking=bernoulli" in args) == ("bernoulli" in name)
        assert ("objective.masking=uniform" in args) == ("uniform" in name)
        assert ("objective=imputer_im" in args) == name.startswith("imputer_im")
        first_use = next(i for i, c in enumerate(calls) if c[0] == "train" and f"run_dir={run_dir}" in c)
        assert ["align", f"{runs}/ctc_3000-s{seed}", "--split", "train"] in calls[:first_use]

    evaluated = {Path(c[1]).name for c in calls if c[0] == "eval"}
    assert expected <= evaluated
    compares = [c for c in calls if c[0] == "compare"]
    assert [c[c.index("--baseline") + 1] for c in compares] == [f"{runs}/ctc_6000-s0",
                                                                 f"{runs}/imputer_dp_eq11-s0"]
    policy_table = {Path(a).name for a in compares[1] if a.startswith(f"{runs}/")}
    assert policy_table == {n for n in expected if "eq11" in n}  # block, bernoulli, uniform, IM; all Eq. 11

    # resumable: a rerun of the evaluation stage decodes nothing that has results
    again = _run_recipe(tmp_path, "synth/equal_compute.sh", "--stage", "3", "--stop-stage", "3", **env)
    assert [c for c in again if c[0] == "eval"] == []


def test_seeds_recipe_trains_each_imputer_variant_from_its_seeds_expert(tmp_path):
    runs = tmp_path / "runs"
    env = dict(RUNS=str(runs), SEEDS="0 1", POLICY_SEEDS="1", EQ11_POLICY_SEEDS="0", RNNT="0", DP_STEPS="750")
    calls = _run_recipe(tmp_path, "synth/seeds.sh", "--stage", "1", **env)

    assert [c[1] for c in calls if c[0] == "sweep"] == ["conf/sweeps/objectives_x_seeds.yaml"]  # RNNT=0
    trained = _trained(calls)
    assert {Path(r).name for r in trained} == {
        "imputer_dp-s0", "imputer_dp-s1", "imputer_dp_w0-s0", "imputer_dp_w0-s1",
        "imputer_dp_w0_bernoulli-s1", "imputer_dp_w0_uniform-s1", "imputer_im_w0-s1",
        "imputer_dp_bernoulli-s0", "imputer_dp_uniform-s0", "imputer_im-s0"}
    for run_dir, args in trained.items():
        name, seed = Path(run_dir).name, run_dir[-1]
        assert f"seed={seed}" in args and "trainer.max_steps=750" in args
        assert f"objective.expert={runs}/ctc-s{{seed}}" in args  # the config fills {seed} in
        assert ("objective.observed_loss_weight=0" in args) == ("_w0" in name)
        assert f"objective=imputer_{'im' if name.startswith('imputer_im') else 'dp'}" in args
        masking = [a for a in args if a.startswith("objective.masking=")]
        assert masking == ([f"objective.masking={p}" for p in ("bernoulli", "uniform") if p in name] or [])
    assert [c[1] for c in calls if c[0] == "align"] == [f"{runs}/ctc-s0", f"{runs}/ctc-s1"]
    assert {Path(c[1]).name for c in calls if c[0] == "eval"} >= {Path(r).name for r in trained}
    compare = next(c for c in calls if c[0] == "compare")
    assert compare[compare.index("--baseline") + 1] == "ctc/softmax"


def test_fsdd_recipe_prepares_trains_both_normalisations_per_seed_and_tables(tmp_path):
    runs = tmp_path / "runs"
    env = dict(RUNS=str(runs), SEEDS="0 1", FSDD="/clone", DATA="data/f", STEPS="20", TRAIN_ARGS="a.b=1 c.d=2")
    calls = _run_recipe(tmp_path, "fsdd/run.sh", **env)

    assert calls[0] == ["prepare", "fsdd", "--src", "/clone", "--out", "data/f"]
    trained = _trained(calls)
    assert {Path(r).name for r in trained} == {f"ctc_{n}-s{s}" for n in ("global", "utterance") for s in (0, 1)}
    for run_dir, args in trained.items():
        name = Path(run_dir).name
        assert {"preset=small_corpus", "data=fsdd", "data.root=data/f", "trainer.max_steps=20", f"seed={name[-1]}",
                f"data.features.normalization={name[4:-3]}", "a.b=1", "c.d=2"} <= set(args)
    assert {Path(c[1]).name for c in calls if c[0] == "eval"} == {Path(r).name for r in trained}
    compare = next(c for c in calls if c[0] == "compare")
    assert compare[compare.index("--baseline") + 1] == f"{runs}/ctc_global-s0"

    out = subprocess.run(["bash", str(REPO / "recipes" / "fsdd" / "run.sh")], cwd=tmp_path, capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items() if k != "FSDD"})
    assert out.returncode == 2 and "set FSDD to a clone" in out.stderr
