"""``asr-zoo align``: best-path CTC alignments of a trained CTC run (the Imputer's expert),
written to the alignment store (:mod:`asr_zoo.align.store`) with the prepared data.

Usage::

    asr-zoo align runs/ctc --split train
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lhotse.dataset import DynamicCutSampler
from tqdm import tqdm

from .align.store import save_alignments, tokenizer_sha
from .align.viterbi import ctc_viterbi
from .config import ConfigError
from .data.datamodule import ASRDataset
from .data.prepare import PreparedData
from .data.splits import split_names
from .decoding.ctc import collapse_ctc
from .losses.ctc import ctc_min_frames
from .objectives import load_run
from .tensors import to_device
from .utils import atomic_write_json, read_json, remove_stale_temps

__all__ = ["align_run"]


@torch.inference_mode()
def align_run(run_dir: Path, splits: list[str] | None = None, device: str = "cpu", max_duration: float = 200.0) -> dict:
    """Align every utterance of ``splits`` (default: the run's training splits) with the CTC run
    in ``run_dir``; returns a report.

    Utterances whose encoder output is too short for their labels cannot be aligned and are
    reported (never silently dropped). Finished splits are skipped on rerun; a store or pointer
    write cut short (kill -9) leaves only a temporary file, removed by the next run.
    """
    run_dir = Path(run_dir)
    module, cfg = load_run(run_dir, device=device)
    if cfg.objective.name != "ctc":
        raise ConfigError(f"{run_dir} is a {cfg.objective.name} run; alignments come from a CTC run")
    sha = tokenizer_sha(module.tokenizer.model_proto)
    out_dir = Path(cfg.data.root) / "alignments" / f"{run_dir.name}-{sha[:8]}"
    pointer = run_dir / "alignments.json"
    remove_stale_temps(run_dir, pointer.name)  # temporaries of a run killed mid-write
    index = read_json(pointer) if pointer.exists() else {}
    if index.get("dir") != str(out_dir):  # none yet, or it lists the stores of another directory
        index = {"dir": str(out_dir), "splits": {}}  # (run renamed, data moved): never point there
    data = PreparedData(cfg.data)
    for split in [s for name in (splits or ["train"]) for s in split_names(cfg.data, name)]:  # roles resolved
        path = out_dir / f"{split}.pt"
        if path.exists() and split in index["splits"]:
            print(f"{split}: alignments exist ({path})")
            continue
        remove_stale_temps(out_dir, path.name)
        cuts = data.features(split)
        dataset = ASRDataset.from_config(module.tokenizer, module.cmvn["mean"], module.cmvn["std"], cfg.data.features)
        sampler = DynamicCutSampler(cuts.sort_by_duration(), max_duration=max_duration)
        alignments, unaligned, t0 = {}, [], time.perf_counter()
        for cut_batch in tqdm(sampler, desc=f"align {split}", unit="batch"):
            batch = to_device(dataset[cut_batch], device)
            lp, lengths = module.log_probs(batch)
            tokens, token_lens = batch["tokens"], batch["token_lens"]
            need = ctc_min_frames(tokens, token_lens)
            ok = need <= lengths
            for b in (~ok).nonzero().flatten().tolist():
                unaligned.append({"id": batch["ids"][b], "reason": f"{int(lengths[b])} frames < {int(need[b])} needed"})
            if not ok.any():
                continue
            idx = ok.nonzero().flatten()
            ali = ctc_viterbi(lp[idx].float(), tokens[idx], lengths[idx], token_lens[idx])
            collapsed = collapse_ctc(ali, lengths[idx])
            for j, b in enumerate(idx.tolist()):
                if collapsed[j] != tokens[b, : token_lens[b]].tolist():  # cannot happen for a correct Viterbi
                    raise RuntimeError(f"alignment of {batch['ids'][b]} does not collapse to its transcript")
                alignments[batch["ids"][b]] = ali[j, : lengths[b]].to(torch.int16).cpu()
        seconds = time.perf_counter() - t0
        save_alignments(path, alignments, module.tokenizer.model_proto, cfg.encoder, run_dir)
        index["splits"][split] = {"aligned": len(alignments), "unaligned": len(unaligned),
                                  "utts_per_s": round(len(alignments) / seconds, 1), "unaligned_examples": unaligned[:20]}
        atomic_write_json(pointer, index)
        print(f"{split}: aligned {len(alignments)} utterances, {len(unaligned)} could not be aligned "
              f"({len(alignments) / seconds:.1f} utt/s); every alignment collapses to its transcript -> {path}")
    return index
