"""Small shared helpers: atomic writes, JSON I/O, safe loading of checkpoints and stores."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "atomic_write_json", "read_json", "atomic_replace", "remove_stale_temps", "safe_torch_load",
           "UntrustedFileError"]


class UntrustedFileError(ValueError):
    """A file to be loaded holds more than tensors and plain data (a pickle that could run code)."""


def atomic_replace(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same directory, atomic):
    a crash or ``kill -9`` leaves the old file or the new one, never a torn one. The temporary
    is ``.tmp-<random>-<name>`` (it keeps the suffixes, for writers that choose the format by
    them); :func:`remove_stale_temps` clears those a killed write left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(directory: Path, name: str = "*", recursive: bool = False) -> int:
    """Delete the temporaries of :func:`atomic_replace` writes of ``name`` (a glob) that a killed
    process left in ``directory``; returns how many. Call it only where no other process is
    writing (at the start of a stage that owns the directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stale = list((directory.rglob if recursive else directory.glob)(f".tmp-*-{name}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_replace(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def safe_torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings, bytes, lists, tuples
    and dicts only. Checkpoints, expert checkpoints and alignment stores are read this way, so a
    shared run directory can never run code: a crafted pickle is refused, never executed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UntrustedFileError: the file holds other objects (or is not a torch file at all).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise UntrustedFileError(f"{path}: refused to load: it holds objects other than tensors and plain data, "
                                 f"which could run code ({detail.strip()[:200]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UntrustedFileError(f"{path}: not a readable torch file ({str(e).splitlines()[0][:200]})") from None
