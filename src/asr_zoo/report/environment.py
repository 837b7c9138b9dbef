"""The environment a report was made in (commit, torch, CPU capability, threads, devices)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

__all__ = ["environment", "environment_block"]


def environment(devices: list[str] = ()) -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except Exception:
        commit = "unknown"
    return {"commit": commit, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "devices_in_results": sorted(set(devices))}


def environment_block(env: dict) -> str:
    """Markdown bullet list of ``environment()``."""
    return "\n".join(f"- {k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in env.items()) + "\n"
