"""`make recipe-librispeech-imputer` end to end on a tiny corpus in LibriSpeech layout.

The corpus is the tiny synthetic one with its splits renamed to LibriSpeech's; the recipe runs
through the real Makefile target with size overrides (tiny model, few steps, CPU).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_librispeech_imputer_recipe_through_make(tiny_corpus, tmp_path):
    root = tmp_path / "ls"
    for src, dst in [("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean")]:
        shutil.copytree(tiny_corpus / "LibriSpeech" / src, root / "LibriSpeech" / dst)
    runs = tmp_path / "runs"
    size = ("data.train_splits=[train-clean-100] data.test_split=test-clean data.tokenizer.vocab_size=40 "
            "data.features.deltas=true encoder.d_model=32 encoder.num_layers=1 encoder.ffn_dim=64 "
            "encoder.frontend_channels=4 trainer.accelerator=cpu trainer.precision=32-true trainer.max_steps=3 "
            "trainer.wandb=disabled trainer.progress_bar=false data.num_workers=0 optim.warmup_steps=1")
    env = {**os.environ, "RUNS": str(runs), "TRAIN_ARGS": size, "EVAL_SPLITS": "dev-clean test-clean"}
    cmd = ["make", "-C", str(REPO), "recipe-librispeech-imputer", f"LIBRISPEECH={root}", "RECIPE_DEPS=",
           f"ASR_ZOO={sys.executable} -m asr_zoo"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = (runs / "table.md").read_text()
    assert "| ctc | ctc |" in table and "| imputer_dp | imputer_dp |" in table
    for run in ("ctc", "imputer_dp"):
        for split in ("dev-clean", "test-clean"):
            assert json.loads((runs / run / "results" / f"{split}.json").read_text())["split"] == split
    cfg = (runs / "imputer_dp" / "config.yaml").read_text()
    assert "frontend: imputer_conv" in cfg and "deltas: true" in cfg

    # rerun: every stage finds its work done
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "already finished" in again.stdout and "alignments exist" in again.stdout
