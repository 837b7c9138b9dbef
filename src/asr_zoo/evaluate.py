"""``asr-zoo eval``: decode a split with a trained run and write ``results/<split>.json``.

Every utterance is decoded at batch 1 (after a short warm-up) so latency is per utterance:
``latency_ms_p50/p90`` is compute (model + decoding, from stored features),
``latency_e2e_ms_p50/p90`` end to end (fbank from the waveform in memory + compute; reading the
file is not counted); ``rtf`` = compute seconds / audio seconds; ``decode_steps`` = mean decoder iterations per
utterance (1 for CTC's single pass, prediction-network calls for RNN-T, decoder steps for
seq2seq, refinement iterations for the Imputer). Overrides (``attention=iclustered``,
``objective.beam_size=4``, ``data.root=...``) apply at evaluation without retraining and are
recorded in the results.
"""

from __future__ import annotations

import csv
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from lhotse import CutSet
from tqdm import tqdm

from .config import load_config
from .data.datamodule import ASRDataset
from .data.prepare import PreparedData
from .data.splits import resolve_split
from .objectives import load_run
from .report.metrics import error_rates, error_type_rates, word_errors
from .tensors import to_device
from .utils import atomic_replace, atomic_write_json, remove_stale_temps

__all__ = ["evaluate", "tune", "result_tag"]


def _git_hash() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def result_tag(split: str, overrides: list[str]) -> str:
    """Results file stem: ``split`` or ``split@key=value,...`` (evaluation-time overrides)."""
    return split + ("" if not overrides else "@" + ",".join(o.replace("/", "_") for o in overrides))


@torch.inference_mode()
def evaluate(run_dir: Path, split: str | None = None, overrides: list[str] = (), device: str = "cpu",
             checkpoint: str = "best", warmup: int = 3, max_utts: int = 0) -> dict:
    """Decode ``split`` (default: the data config's test split) and write results + hypotheses."""
    run_dir = Path(run_dir)
    module, cfg = load_run(run_dir, overrides, checkpoint, device)
    remove_stale_temps(run_dir / "results")  # what a killed evaluation left mid-write
    split = resolve_split(cfg.data, split or "test")  # a role (train/dev/test) or a split name
    data = PreparedData(cfg.data)
    cuts: CutSet = data.features(split, num_jobs=max(1, cfg.data.num_workers))
    extractor = data.extractor()
    if max_utts:
        cuts = cuts.subset(first=max_utts)
    dataset = ASRDataset.from_config(module.tokenizer, module.cmvn["mean"], module.cmvn["std"], cfg.data.features)
    cut_list = list(cuts)
    for cut in cut_list[:warmup]:  # warm-up: allocator, kernels, caches
        module.transcribe(to_device(dataset[CutSet.from_cuts([cut])], device))
        extractor.extract(cut.load_audio(), cut.sampling_rate)

    rows, latencies, feature_s, steps, audio_s = [], [], [], [], 0.0
    for cut in tqdm(cut_list, desc=f"eval {split}", unit="utt"):
        audio = cut.load_audio()  # (1, samples): end-to-end latency starts from the waveform in memory
        t0 = time.perf_counter()
        extractor.extract(audio, cut.sampling_rate)
        feature_s.append(time.perf_counter() - t0)
        batch = to_device(dataset[CutSet.from_cuts([cut])], device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        hyps, n_steps = module.transcribe(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - t0)
        steps.append(n_steps[0])
        audio_s += cut.duration
        rows.append((cut.id, batch["texts"][0], hyps[0]))

    wer, cer = error_rates([r[1] for r in rows], [r[2] for r in rows])
    error_types = error_type_rates([r[1] for r in rows], [r[2] for r in rows])  # sub/del/ins: % and counts
    q = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies * 9
    e2e = [c + f for c, f in zip(latencies, feature_s)]
    q_e2e = statistics.quantiles(e2e, n=10) if len(e2e) > 1 else e2e * 9
    result = {
        "objective": cfg.objective.name, "attention": cfg.attention.name,
        "params": sum(p.numel() for p in module.parameters()), "split": split, "num_utts": len(rows),
        "wer": round(wer, 3), "cer": round(cer, 3), **error_types, "decode_steps": round(sum(steps) / len(steps), 2),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2), "latency_ms_p90": round(q[8] * 1000, 2),
        "latency_e2e_ms_p50": round(statistics.median(e2e) * 1000, 2), "latency_e2e_ms_p90": round(q_e2e[8] * 1000, 2),
        "rtf": round(sum(latencies) / audio_s, 5), "device": _device_name(device),
        "checkpoint": checkpoint, "overrides": list(overrides), "git": _git_hash(),
        "torch": torch.__version__, "run_dir": str(run_dir),
    }
    results_dir = run_dir / "results"
    tag = result_tag(split, overrides)

    def write_hyps(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["utt_id", "reference", "hypothesis"])
            w.writerows(rows)

    def write_errors(tmp: Path) -> None:  # per utterance: what paired significance tests resample
        with open(tmp, "w", newline="") as f:  # new columns after the old ones: old readers still work
            w = csv.writer(f, delimiter="\t")
            w.writerow(["utt_id", "word_errors", "ref_words", "sub", "del", "ins"])
            for utt, ref, hyp in rows:
                e = word_errors(ref, hyp)
                w.writerow([utt, e.edits, e.ref_words, e.sub, e.dels, e.ins])

    atomic_replace(results_dir / f"{tag}.hyps.tsv", write_hyps)
    atomic_replace(results_dir / f"{tag}.utt_errors.tsv", write_errors)
    atomic_write_json(results_dir / f"{tag}.json", result)  # last: a results file always has its hypotheses
    print(f"{run_dir} {tag}: WER {result['wer']:.2f}% (sub {result['sub']:.2f} del {result['del']:.2f} "
          f"ins {result['ins']:.2f})  CER {result['cer']:.2f}%  "
          f"p50 {result['latency_ms_p50']} ms  RTF {result['rtf']}")
    return result


def tune(run_dir: Path, grid: dict[str, list[str]], overrides: list[str] = (), dev_split: str | None = None,
         test_split: str | None = None, **kwargs) -> dict:
    """Honest selection: decode ``dev_split`` (default: the config's dev split) once per point of
    ``grid`` (``{key: [values]}``, every combination), keep the lowest dev WER, then decode
    ``test_split`` with that choice only. The test results record ``tuned_on``, the grid and
    every dev WER; nothing about the test split influences the choice."""
    import itertools

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml", list(overrides))
    dev_split = dev_split or cfg.data.dev_split
    points = [[f"{k}={v}" for k, v in zip(grid, combo)] for combo in itertools.product(*grid.values())]
    dev_wers = []
    for i, point in enumerate(points, 1):
        print(f"tune [{i}/{len(points)}] on {dev_split}: {' '.join(point)}")
        dev_wers.append(evaluate(run_dir, dev_split, [*overrides, *point], **kwargs)["wer"])
    best = min(range(len(points)), key=dev_wers.__getitem__)
    print(f"tune: chose {' '.join(points[best])} (dev WER {dev_wers[best]:.2f}; "
          f"grid {', '.join(f'{w:.2f}' for w in dev_wers)})")
    result = evaluate(run_dir, test_split, [*overrides, *points[best]], **kwargs)
    result.update(tuned_on=dev_split, tune_grid=grid, tune_choice=points[best],
                  tune_dev_wer={" ".join(p): w for p, w in zip(points, dev_wers)})
    atomic_write_json(run_dir / "results" / f"{result_tag(result['split'], [*overrides, *points[best]])}.json", result)
    return result
