"""Shared fixtures: tiny corpora in LibriSpeech layout made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def write_librispeech_split(root: Path, split: str, utts: list[tuple[str, str, np.ndarray]]) -> None:
    """utts: (utt_id 'spk-chap-nnnn', text, float32 audio at 16 kHz)."""
    by_chapter: dict[tuple[str, str], list[str]] = {}
    for utt_id, text, audio in utts:
        spk, chap, _ = utt_id.split("-")
        d = root / "LibriSpeech" / split / spk / chap
        d.mkdir(parents=True, exist_ok=True)
        if audio is not None:
            sf.write(d / f"{utt_id}.flac", audio, 16000)
        by_chapter.setdefault((spk, chap), []).append(f"{utt_id} {text}")
    for (spk, chap), lines in by_chapter.items():
        (root / "LibriSpeech" / split / spk / chap / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def noise_corpus(tmp_path) -> Path:
    """A tiny LibriSpeech-layout corpus of noise with word transcripts (plumbing tests only)."""
    rng = np.random.default_rng(0)
    words = "ALPHA BRAVO CHARLIE DELTA ECHO FOXTROT".split()
    for split, n in [("train", 12), ("dev", 3), ("test", 3)]:
        utts = [(f"100-1-{i:04d}", " ".join(rng.choice(words, size=3)),
                 (0.1 * rng.standard_normal(int(16000 * rng.uniform(1.0, 2.0)))).astype("float32"))
                for i in range(n)]
        write_librispeech_split(tmp_path, split, utts)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The synthetic espeak corpus at toy size (40 / 8 / 8 utterances), made once per session.

    Train on it with ``data.root=<this>``; see ``tiny_train_args`` for a fast model.
    """
    from asr_zoo.cli import main

    root = tmp_path_factory.mktemp("tiny_synth")
    assert main(["prepare", "synth", "--out", str(root), "--num-train", "40", "--num-dev", "8",
                 "--num-test", "8", "--workers", "1"]) == 0
    return root


def tiny_train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long training run on ``tiny_corpus`` (tiny model, few steps)."""
    return ["train", f"data.root={root}", f"run_dir={run_dir}", "data.tokenizer.vocab_size=40",
            "encoder.d_model=32", "encoder.num_layers=1", "encoder.ffn_dim=64", "encoder.frontend_channels=8",
            "trainer.max_steps=4", "trainer.wandb=disabled", "trainer.progress_bar=false",
            "optim.warmup_steps=2", "data.num_workers=0", *extra]
