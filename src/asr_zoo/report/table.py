"""``asr-zoo compare``: one row per (run, split) from ``results/*.json`` + ``train_summary.json``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..utils import atomic_write_text, read_json

__all__ = ["collect_rows", "markdown_table", "csv_table", "COLUMNS"]

COLUMNS = ["run", "objective", "attention", "params", "split", "num_utts", "wer", "cer", "decode_steps",
           "latency_ms_p50", "latency_ms_p90", "rtf", "time_per_epoch_s", "device"]


def collect_rows(run_dirs: list[Path], split: str | None = None) -> list[dict]:
    """Read every results file of every run (optionally only one split)."""
    rows = []
    for run in map(Path, run_dirs):
        files = sorted((run / "results").glob("*.json"))
        if not files:
            raise FileNotFoundError(f"{run}: no results/*.json; run `asr-zoo eval {run}` first")
        summary = read_json(run / "train_summary.json") if (run / "train_summary.json").exists() else {}
        for f in files:
            r = read_json(f)
            if split and r["split"] != split:
                continue
            tag = f.stem
            name = run.name + (tag[len(r["split"]):] if tag != r["split"] else "")
            rows.append({"run": name, **r, "time_per_epoch_s": summary.get("time_per_epoch_s", "")})
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.4f}"
    if isinstance(v, int) and v >= 10000:
        return f"{v / 1e6:.2f}M"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_tables(rows: list[dict], out: Path) -> list[Path]:
    """Write ``out`` as .md and/or .csv (by suffix; no suffix writes both)."""
    out = Path(out)
    targets = [out] if out.suffix in (".md", ".csv") else [out.with_suffix(".md"), out.with_suffix(".csv")]
    for t in targets:
        atomic_write_text(t, markdown_table(rows) if t.suffix == ".md" else csv_table(rows))
    return targets
