"""Training-loader throughput: hours of audio per second delivered as padded feature batches
(what the Trainer consumes), per number of dataloader workers and per feature storage.

Usage:
    asr-zoo bench loader --out runs/bench-loader                    # data/synth, workers 0 1 2 4
    asr-zoo bench loader --out runs/bench-loader --workers 1 2 --storage lilcom_chunky
    asr-zoo bench loader --out runs/bench-loader data.max_duration=600 data.features.deltas=true

Each case iterates the training loader of the data config (``--data``, ``--root``, ``key=value``
overrides) for one epoch (or ``--batches`` batches), ``--repeats`` times, each time through a
new ``DataLoader`` (worker start-up counted). A batch is what ``ASRDataModule`` gives the Trainer:
features loaded, CMVN applied, padded, SpecAugment, Δ/ΔΔ if configured, tokenised transcripts.
Audio seconds are the valid feature frames / 100. Storages:

- ``lilcom_chunky``: what ``prepare`` writes (``fbank80/<split>_feats.lca``: lilcom-compressed
  chunks in one archive per split and extraction job, read by offset) through
  ``ASRDataModule.train_dataloader()`` itself (map-style dataset, sampler in the main process).
- ``shar_lilcom`` / ``shar_numpy``: the same training cuts exported once to lhotse Shar
  (``--shar-dir``, default ``OUT/shar_*``; tar shards read sequentially, features lilcom-
  compressed or raw float32), read by ``CutSet.from_shar(split_for_dataloading=True)`` with the
  same bucketing sampler inside each worker (``IterableDatasetWrapper``); the batches are built
  by the same ``ASRDataset``.

Also measured: bytes, files and bytes per hour of audio of each storage, Python memory per cut
of the eagerly read cut manifest (every worker holds one), and the fbank extraction rate
(``--extract`` utterances of the training split through the path ``prepare`` takes: FLAC
decode + Kaldi fbank + lilcom + write, one process).

Writes ``OUT/loader.jsonl`` and ``OUT/loader.md``; every record carries the CPU capability
(``torch.backends.cpu.get_cpu_capability()``), the core count and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from . import write_records

__all__ = ["STORAGES", "add_arguments", "run", "main", "markdown"]

STORAGES = ("lilcom_chunky", "shar_lilcom", "shar_numpy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench loader`` options to ``parser``."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--data", default="synth", help="data preset (conf/data/NAME.yaml)")
    parser.add_argument("--root", default="data/synth", help="prepared data root (data.root)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4],
                        help="dataloader worker counts (0: batches built in the main process)")
    parser.add_argument("--storage", nargs="+", choices=STORAGES, default=list(STORAGES), help="feature storages")
    parser.add_argument("--batches", type=int, default=0, help="batches per case (0: one epoch)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs (fresh loaders) per case; median reported")
    parser.add_argument("--extract", type=int, default=100, help="utterances for the fbank extraction rate (0: skip)")
    parser.add_argument("--shar-dir", type=Path, default=None, help="where the Shar copies go (default OUT)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("overrides", nargs="*", help="data config overrides, e.g. data.max_duration=600")


# ------------------------------------------------------------------------------------ loaders
def _shar_export(cuts, out: Path, fmt: str, shard_size: int) -> float:
    """Export ``cuts`` with their features to Shar under ``out`` once; seconds taken (0 if there)."""
    done = out.with_name(out.name + ".complete")  # beside it: from_shar reads every file inside
    if done.exists() and done.read_text() == f"{len(cuts)} {shard_size}":
        return 0.0
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    cuts.to_shar(out, fields={"features": fmt}, shard_size=shard_size)
    seconds = time.perf_counter() - t0
    done.write_text(f"{len(cuts)} {shard_size}")
    return seconds


def _shar_loader(dm, shar_dir: Path, workers: int):
    from lhotse import CutSet
    from lhotse.dataset import DynamicBucketingSampler, IterableDatasetWrapper
    from torch.utils.data import DataLoader

    n = len(dm.train_cuts)
    cuts = CutSet.from_shar(in_dir=shar_dir, split_for_dataloading=True, shuffle_shards=True, seed=dm.seed)
    sampler = DynamicBucketingSampler(cuts, max_duration=dm.cfg.max_duration, shuffle=True, seed=dm.seed,
                                      drop_last=False, num_buckets=min(dm.cfg.num_buckets, n),
                                      num_cuts_for_bins_estimate=min(10000, n))
    return DataLoader(IterableDatasetWrapper(dm.train_set, sampler), batch_size=None, num_workers=workers)


def _loader(dm, storage: str, workers: int, shar_dir: Path | None):
    """A fresh training loader over ``storage`` with ``workers`` worker processes."""
    if storage == "lilcom_chunky":
        dm.cfg.num_workers = workers
        return dm.train_dataloader()
    return _shar_loader(dm, shar_dir, workers)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _time_epoch(make_loader, max_batches: int) -> dict:
    """Iterate one loader (fresh workers); time to the first batch and to the end, and the CPU
    seconds of this process and its (ended, reaped) workers."""
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    loader = make_loader()
    first_s, first_frames = None, 0
    batches = utts = frames = padded = 0
    ids, batch = set(), None
    for batch in loader:
        lens = batch["feat_lens"]
        batches, utts = batches + 1, utts + len(lens)
        frames += int(lens.sum())
        padded += int(batch["feats"].shape[0] * batch["feats"].shape[1])
        ids.update(batch["ids"])
        if first_s is None:
            first_s, first_frames = time.perf_counter() - t0, frames
        if max_batches and batches >= max_batches:
            break
    seconds = time.perf_counter() - t0
    del loader, batch  # ends and reaps the workers, so that their CPU time is counted
    gc.collect()
    cpu_s = _cpu_seconds() - cpu0
    audio_h = frames / 100 / 3600
    steady_s = seconds - (first_s or 0.0)
    return {"batches": batches, "utts": utts, "distinct_utts": len(ids), "audio_h": audio_h, "seconds": seconds,
            "first_batch_s": first_s, "hours_per_s": audio_h / seconds,
            "hours_per_s_steady": (frames - first_frames) / 360000 / steady_s if steady_s > 0 and batches > 1 else None,
            "batches_per_s": batches / seconds, "utts_per_s": utts / seconds,
            "cpu_s": cpu_s, "hours_per_cpu_s": audio_h / cpu_s,
            "padding_frac": 1 - frames / padded if padded else 0.0}


def _median_record(runs: list[dict]) -> dict:
    """The run with the median throughput, with every run's hours/s alongside."""
    ordered = sorted(runs, key=lambda r: r["hours_per_s"])
    record = dict(ordered[(len(ordered) - 1) // 2])
    record["hours_per_s_runs"] = [round(r["hours_per_s"], 4) for r in runs]
    return record


# ------------------------------------------------------------------------------------ sizes
def _files_and_bytes(paths: list[Path]) -> tuple[int, int]:
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _cut_memory_bytes(path: Path) -> float:
    """Python heap bytes per cut of an eagerly read cut manifest (tracemalloc)."""
    from lhotse import CutSet

    tracemalloc.start()
    cuts = CutSet.from_file(path).to_eager()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size / max(1, len(cuts))


def _extraction_record(data, n: int) -> dict:
    """Seconds to extract and store fbank for the first ``n`` training utterances, as ``prepare``
    does it (one job), into a temporary directory."""
    from lhotse import LilcomChunkyWriter

    split = data.cfg.train_splits[0]
    cuts = data.manifest(split).subset(first=n)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with_feats = cuts.compute_and_store_features(data.extractor(), storage_path=Path(tmp) / "feats", num_jobs=1,
                                                     storage_type=LilcomChunkyWriter, progress_bar=False)
        seconds = time.perf_counter() - t0
        _, nbytes = _files_and_bytes([Path(tmp)])
    audio_h = sum(c.duration for c in with_feats) / 3600
    return {"section": "extract", "utts": len(with_feats), "audio_h": audio_h, "seconds": seconds,
            "hours_per_s": audio_h / seconds, "bytes_per_hour": nbytes / audio_h}


# ------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> int:
    import lhotse

    from asr_zoo.config import compose
    from asr_zoo.data.datamodule import ASRDataModule

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = compose([f"data={args.data}", f"data.root={args.root}", *args.overrides])
    dm = ASRDataModule(cfg.data, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    n_cuts, hours = len(dm.train_cuts), sum(c.duration for c in dm.train_cuts) / 3600
    common = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "lhotse": lhotse.__version__, "threads": args.threads,
              "data": args.data, "train_utts": n_cuts, "train_hours": round(hours, 4),
              "max_duration": cfg.data.max_duration, "deltas": cfg.data.features.deltas,
              "specaugment": cfg.data.specaugment.enabled}
    print(json.dumps(common), flush=True)
    records = []

    def emit(record: dict) -> None:
        record.update(common, load_avg_1min=round(os.getloadavg()[0], 2))
        records.append(record)
        print(json.dumps({k: v for k, v in record.items() if k not in common}), flush=True)

    # storages: sizes, then Shar copies made where asked for
    feat_paths = [p for split in cfg.data.train_splits for p in dm.data.feat_dir.glob(f"{split}_feats*")]
    files, nbytes = _files_and_bytes(feat_paths)
    manifests = [dm.data.feat_dir / f"{split}_cuts.jsonl.gz" for split in cfg.data.train_splits]
    emit({"section": "storage", "storage": "lilcom_chunky", "files": files + len(manifests), "bytes": nbytes,
          "bytes_per_hour": nbytes / hours, "manifest_bytes": _files_and_bytes(manifests)[1],
          "cut_memory_bytes": _cut_memory_bytes(manifests[0]), "export_s": None})
    shard_size = min(1000, math.ceil(n_cuts / max(1, 2 * max(args.workers))))  # >= 2 shards per worker
    shar_dirs = {}
    for storage in args.storage:
        if storage.startswith("shar_"):
            shar_dirs[storage] = (args.shar_dir or args.out) / storage
            export_s = _shar_export(dm.train_cuts, shar_dirs[storage], storage.split("_")[1], shard_size)
            files, nbytes = _files_and_bytes([shar_dirs[storage]])
            emit({"section": "storage", "storage": storage, "files": files, "bytes": nbytes,
                  "bytes_per_hour": nbytes / hours, "shard_size": shard_size, "export_s": export_s or None})

    for storage in args.storage:
        for workers in args.workers:
            runs = [_time_epoch(lambda: _loader(dm, storage, workers, shar_dirs.get(storage)), args.batches)
                    for _ in range(args.repeats)]
            emit({"section": "loader", "storage": storage, "workers": workers, **_median_record(runs)})

    if args.extract:
        emit(_extraction_record(dm.data, args.extract))

    table = markdown(records)
    write_records(args.out, "loader", records, table)
    print(table)
    return 0


def markdown(records: list[dict]) -> str:
    """Markdown tables: loader throughput, storage sizes, extraction rate."""
    head = records[0] if records else {}
    lines = [f"CPU capability {head.get('cpu_capability')}, {head.get('cpu_count')} cores, torch "
             f"{head.get('torch')}, lhotse {head.get('lhotse')}; {head.get('train_utts')} training utterances, "
             f"{head.get('train_hours')} h, max_duration {head.get('max_duration')} s, deltas {head.get('deltas')}, "
             f"SpecAugment {head.get('specaugment')}", "",
             "| storage | workers | batches | hours/s | hours/s after 1st batch | hours / CPU s | batches/s | utts/s | "
             "1st batch s | padding | runs (hours/s) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["section"] == "loader":
            steady = f"{r['hours_per_s_steady']:.3f}" if r["hours_per_s_steady"] is not None else "-"
            lines.append(f"| {r['storage']} | {r['workers']} | {r['batches']} | {r['hours_per_s']:.3f} | {steady} | "
                         f"{r['hours_per_cpu_s']:.3f} | "
                         f"{r['batches_per_s']:.1f} | {r['utts_per_s']:.0f} | {r['first_batch_s']:.2f} | "
                         f"{r['padding_frac']:.1%} | {r['hours_per_s_runs']} | {r['load_avg_1min']} |")
    lines += ["", "| storage | files | MB | MB per hour of audio | export s |", "|---|---|---|---|---|"]
    for r in records:
        if r["section"] == "storage":
            export = f"{r['export_s']:.1f}" if r["export_s"] else "-"
            lines.append(f"| {r['storage']} | {r['files']} | {r['bytes'] / 1e6:.1f} | "
                         f"{r['bytes_per_hour'] / 1e6:.1f} | {export} |")
    for r in records:
        if r["section"] == "storage" and r.get("cut_memory_bytes"):
            lines += ["", f"Cut manifest: {r['manifest_bytes'] / 1e3:.0f} kB on disk, "
                          f"{r['cut_memory_bytes'] / 1e3:.1f} kB of Python memory per cut when read eagerly."]
        if r["section"] == "extract":
            lines += ["", f"fbank extraction (FLAC decode + fbank + lilcom + write, one process): {r['utts']} "
                          f"utterances, {r['audio_h'] * 3600:.0f} s of audio in {r['seconds']:.1f} s = "
                          f"{r['hours_per_s'] * 3600:.0f} s of audio per second; "
                          f"{r['bytes_per_hour'] / 1e6:.1f} MB per hour."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
