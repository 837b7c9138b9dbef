"""The LibriSpeech recipe on a synthetic corpus in LibriSpeech layout.

``asr-zoo prepare synth --layout librispeech`` writes train-clean-100, dev-clean, dev-other,
test-clean and test-other; ``asr-zoo prepare librispeech --root`` (the real-data path) prepares it.
The recipe's stages then run on it at toy size with its own settings (``data=librispeech
encoder=imputer_paper``, shrunk): CTC expert -> align -> Imputer-DP in this process, eval with
split roles (train/dev/test) and directory names, and ``recipes/librispeech/run.sh`` stages 4-5,
whose rerun finds every result done. The full recipe through ``make`` (and 2 DDP processes) is
``tests/test_recipe_librispeech.py`` and ``tests/test_ddp.py``; docs/scale.md has a measured run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr_zoo.cli import main
from asr_zoo.data.synth import LAYOUTS, plan_synth

REPO = Path(__file__).resolve().parents[1]
SPLITS = ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]
EVAL_SPLITS = SPLITS[1:]
# The recipe's settings (recipes/librispeech/run.sh: COMMON) at toy size, single process.
RECIPE = ["data=librispeech", "encoder=imputer_paper", "trainer=cpu", "data.train_splits=[train-clean-100]",
          "data.tokenizer.vocab_size=40", "data.max_duration=40", "data.num_workers=0", "encoder.d_model=32",
          "encoder.num_layers=1", "encoder.ffn_dim=64", "encoder.frontend_channels=4", "trainer.max_steps=3",
          "trainer.wandb=disabled", "trainer.progress_bar=false", "optim.warmup_steps=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ls_synth")
    assert main(["prepare", "synth", "--layout", "librispeech", "--out", str(root), "--num-train", "40",
                 "--num-dev", "4", "--num-test", "4", "--workers", "1"]) == 0
    return root


def test_librispeech_layout(corpus):
    ls = corpus / "LibriSpeech"
    assert sorted(p.name for p in ls.iterdir()) == sorted(SPLITS)
    speakers = {}
    for split in SPLITS:
        flacs = sorted((ls / split).glob("*/*/*.flac"))
        assert len(flacs) == (40 if split.startswith("train") else 4)
        for flac in flacs:  # <split>/<spk>/<chapter>/<spk>-<chapter>-NNNN.flac, listed in the chapter's trans.txt
            spk, chapter = flac.parent.parent.name, flac.parent.name
            assert flac.stem.startswith(f"{spk}-{chapter}-")
            trans = (flac.parent / f"{spk}-{chapter}.trans.txt").read_text()
            assert any(line.split(" ", 1)[0] == flac.stem for line in trans.splitlines())
        speakers[split] = {f.parent.parent.name for f in flacs}
    assert sum(map(len, speakers.values())) == len(set().union(*speakers.values()))  # one split per speaker
    info = json.loads((corpus / "synth_info.json").read_text())
    assert info["config"]["layout"] == "librispeech" and list(info["splits"]) == SPLITS
    for split in ("dev-other", "test-other"):
        assert set(info["splits"][split]["voices"]).isdisjoint(info["splits"]["train-clean-100"]["voices"])
    # clean: new speakers of the training dialect+variant combinations; other: unseen ones, noisier
    plan = plan_synth(1440, 40, 40, seed=0, layout="librispeech")  # 72 training speakers: every training voice
    voices = {split: {u.speaker.voice for u in utts} for split, utts in plan.items()}
    assert voices["dev-clean"] | voices["test-clean"] <= voices["train-clean-100"]
    assert (voices["dev-other"] | voices["test-other"]).isdisjoint(voices["train-clean-100"])
    snr = {spec.name: spec.snr_db for spec in LAYOUTS["librispeech"]}
    assert snr["dev-other"][1] < snr["dev-clean"][0] and snr["test-other"] == snr["dev-other"]
    from asr_zoo.cli import build_parser

    for name in LAYOUTS:  # every layout is a --layout choice
        assert build_parser().parse_args(["prepare", "synth", "--out", "x", "--layout", name]).layout == name
    # the default layout is unchanged: its plan ignores the new layout
    assert list(plan_synth(6, 2, 2, seed=0)) == ["train", "dev", "test"]
    assert plan_synth(6, 2, 2)["train"][0].text == plan_synth(6, 2, 2, layout="librispeech")["train-clean-100"][0].text


def test_prepare_librispeech_is_the_real_data_path(corpus, tmp_path):
    """`prepare librispeech --root` on a copy without manifests builds the same five manifests."""
    copy = tmp_path / "copy"
    shutil.copytree(corpus / "LibriSpeech", copy / "LibriSpeech")
    assert main(["prepare", "librispeech", "--root", str(copy)]) == 0
    for split in SPLITS:
        name = f"manifests/{split}_report.json"
        assert json.loads((copy / name).read_text()) == json.loads((corpus / name).read_text())
        assert json.loads((copy / name).read_text())["kept"] == (40 if split.startswith("train") else 4)


def test_recipe_stages_with_roles_and_directory_names(corpus, tmp_path, capsys):
    runs = tmp_path / "runs"
    common = [*RECIPE, f"data.root={corpus}"]
    assert main(["train", *common, "objective=ctc", f"run_dir={runs / 'ctc'}"]) == 0
    assert main(["align", str(runs / "ctc"), "--split", "train"]) == 0  # role -> train-clean-100
    assert main(["train", *common, "objective=imputer_dp", f"objective.expert={runs / 'ctc'}",
                 f"run_dir={runs / 'imputer_dp'}"]) == 0

    # roles: dev -> dev-clean, test -> test-other (conf/data/librispeech.yaml); the rest by name
    assert main(["eval", str(runs / "ctc"), "--split", "dev", "--split", "test", "--split", "dev-other",
                 "--split", "test-clean"]) == 0
    assert main(["eval", str(runs / "imputer_dp"), *[a for s in EVAL_SPLITS for a in ("--split", s)]]) == 0
    for run in ("ctc", "imputer_dp"):
        results = sorted(p.name for p in (runs / run / "results").glob("*.json"))
        assert results == sorted(f"{s}.json" for s in EVAL_SPLITS), results
        for split in EVAL_SPLITS:
            assert json.loads((runs / run / "results" / f"{split}.json").read_text())["num_utts"] == 4
    capsys.readouterr()
    assert main(["compare", str(runs / "ctc"), str(runs / "imputer_dp"), "--split", "dev"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ctc") or
            line.startswith("| imputer_dp")]
    assert len(rows) == 2 and all("| dev-clean |" in r for r in rows)

    # the recipe's last stages: everything evaluated already; the table is made once
    env = {**os.environ, "ASR_ZOO": f"{sys.executable} -m asr_zoo", "RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    cmd = ["bash", str(REPO / "recipes/librispeech/run.sh"), "--root", str(corpus), "--stage", "4"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.count("already evaluated on dev-clean dev-other test-clean test-other") == 2
    table = (runs / "table.md").read_text()
    for split in EVAL_SPLITS:
        assert f"| {split} |" in table
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 0 and "table up to date" in again.stdout
