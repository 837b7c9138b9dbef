"""Two-process DDP on CPU (gloo), launched as users launch it: `asr-zoo train trainer=ddp_cpu`."""

import json
import os
import subprocess
import sys

from conftest import tiny_train_args


def test_two_process_ddp_trains_and_checkpoints(tiny_corpus, tmp_path):
    run = tmp_path / "ddp"
    args = tiny_train_args(tiny_corpus, run, "trainer=ddp_cpu", "trainer.max_steps=3", "trainer.num_threads=1",
                           "trainer.val_every_n_epochs=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "asr_zoo", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 3  # optimizer steps are global: both ranks step together
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "checkpoints" / "best.ckpt").exists()
