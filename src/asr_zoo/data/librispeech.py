"""LibriSpeech: download (openslr.org resource 12) and preparation of every split present.

No network is needed when the corpus is already under ``<root>/LibriSpeech``; the preparation
is the same for the real corpus and for anything in its layout (the synthetic corpus, tests).
"""

from __future__ import annotations

import tarfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .prepare import PreparedData

__all__ = ["LIBRISPEECH_PARTS", "download_librispeech", "prepare_librispeech"]

LIBRISPEECH_URL = "https://www.openslr.org/resources/12"
LIBRISPEECH_PARTS = ["dev-clean", "dev-other", "test-clean", "test-other",
                     "train-clean-100", "train-clean-360", "train-other-500"]


def download_librispeech(root: Path, parts: list[str] = LIBRISPEECH_PARTS, base_url: str = LIBRISPEECH_URL) -> None:
    """Download and extract ``parts`` into ``<root>/LibriSpeech``; finished parts are skipped.

    Downloads go to ``<name>.tar.gz.part`` and are renamed when complete; extraction is marked
    with ``<root>/LibriSpeech/<part>/.extracted``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if part not in LIBRISPEECH_PARTS:
            raise ValueError(f"unknown LibriSpeech part {part!r}; valid: {', '.join(LIBRISPEECH_PARTS)}")
        marker = root / "LibriSpeech" / part / ".extracted"
        if marker.exists():
            continue
        archive = root / f"{part}.tar.gz"
        if not archive.exists():
            partial = archive.with_name(archive.name + ".part")
            with urllib.request.urlopen(f"{base_url}/{part}.tar.gz", timeout=60) as r, open(partial, "wb") as f:
                total = int(r.headers.get("Content-Length", 0)) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {part}") as bar:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
            partial.rename(archive)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        marker.touch()


def prepare_librispeech(root: Path, splits: list[str] | None = None, on_bad: str = "drop") -> list[str]:
    """Build the checked manifests of every split under ``<root>/LibriSpeech`` (or ``splits``)."""
    from ..schemas import DataConfig

    corpus = Path(root) / "LibriSpeech"
    if not corpus.is_dir():
        raise FileNotFoundError(f"{corpus} does not exist: download with --download or place the corpus there")
    splits = splits or sorted(p.name for p in corpus.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    if not splits:
        raise FileNotFoundError(f"{corpus}: no split directories in LibriSpeech layout")
    data = PreparedData(DataConfig(root=str(root), on_bad_utterance=on_bad))
    for split in splits:
        data.manifest(split)
    return splits
