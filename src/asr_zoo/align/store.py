"""``asr-zoo align``: best-path CTC alignments of a trained CTC run, stored with the prepared data.

Layout: ``<data.root>/alignments/<run name>-<tokenizer sha8>/<split>.pt`` holding
``{"alignments": {utt_id: int16 (T',)}, "tokenizer_sha256", "subsampling", "expert_run"}``;
the run directory gets ``alignments.json`` pointing there. Alignments are at the encoder's
frame rate and tied to the tokenizer and front-end that produced them: loading them for a
model with another tokenizer or front-end is an error.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from lhotse.dataset import DynamicCutSampler
from tqdm import tqdm

from ..data.datamodule import ASRDataset
from ..data.prepare import PreparedData
from ..decoding.ctc import collapse_ctc
from ..losses.ctc import ctc_min_frames
from ..utils import atomic_replace, atomic_write_json, read_json, safe_torch_load
from .viterbi import ctc_viterbi

__all__ = ["align_run", "load_alignments", "tokenizer_sha"]


def tokenizer_sha(model_proto: bytes) -> str:
    return hashlib.sha256(model_proto).hexdigest()


def _subsampling(cfg) -> str:
    return f"{cfg.encoder.frontend}/x4"


@torch.inference_mode()
def align_run(run_dir: Path, splits: list[str] | None = None, device: str = "cpu", max_duration: float = 200.0) -> dict:
    """Align every utterance of ``splits`` (default: the run's training splits) with the CTC run
    in ``run_dir``; returns a report.

    Utterances whose encoder output is too short for their labels cannot be aligned and are
    reported (never silently dropped). Finished splits are skipped on rerun; a store or pointer
    write cut short (kill -9) leaves only a temporary file, removed by the next run.
    """
    from ..objectives import load_run

    run_dir = Path(run_dir)
    module, cfg = load_run(run_dir, device=device)
    if cfg.objective.name != "ctc":
        raise ValueError(f"{run_dir} is a {cfg.objective.name} run; alignments come from a CTC run")
    sha = tokenizer_sha(module.tokenizer.model_proto)
    out_dir = Path(cfg.data.root) / "alignments" / f"{run_dir.name}-{sha[:8]}"
    pointer = run_dir / "alignments.json"
    for stale in run_dir.glob(f".{pointer.name}.*.tmp"):  # temporaries of a run killed mid-write
        stale.unlink()
    index = read_json(pointer) if pointer.exists() else {}
    if index.get("dir") != str(out_dir):  # none yet, or it lists the stores of another directory
        index = {"dir": str(out_dir), "splits": {}}  # (run renamed, data moved): never point there
    data = PreparedData(cfg.data)
    for split in splits or list(cfg.data.train_splits):
        path = out_dir / f"{split}.pt"
        if path.exists() and split in index["splits"]:
            print(f"{split}: alignments exist ({path})")
            continue
        for stale in out_dir.glob(f".{path.name}.*.tmp"):
            stale.unlink()
        cuts = data.features(split)
        dataset = ASRDataset(module.tokenizer, module.cmvn["mean"], module.cmvn["std"], cfg.data.features.deltas)
        sampler = DynamicCutSampler(cuts.sort_by_duration(), max_duration=max_duration)
        alignments, unaligned, t0 = {}, [], time.perf_counter()
        for cut_batch in tqdm(sampler, desc=f"align {split}", unit="batch"):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in dataset[cut_batch].items()}
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
        payload = {"alignments": alignments, "tokenizer_sha256": sha, "subsampling": _subsampling(cfg),
                   "expert_run": str(run_dir.resolve())}
        atomic_replace(path, lambda tmp: torch.save(payload, tmp))
        index["splits"][split] = {"aligned": len(alignments), "unaligned": len(unaligned),
                                  "utts_per_s": round(len(alignments) / seconds, 1), "unaligned_examples": unaligned[:20]}
        atomic_write_json(pointer, index)
        print(f"{split}: aligned {len(alignments)} utterances, {len(unaligned)} could not be aligned "
              f"({len(alignments) / seconds:.1f} utt/s); every alignment collapses to its transcript -> {path}")
    return index


def load_alignments(expert_run: Path, split: str, model_proto: bytes, subsampling: str) -> dict[str, torch.Tensor]:
    """The stored alignments of ``expert_run`` for ``split``, checked against the consumer's
    tokenizer and front-end."""
    expert_run = Path(expert_run)
    pointer = expert_run / "alignments.json"
    if not pointer.exists() or split not in read_json(pointer)["splits"]:
        raise FileNotFoundError(f"no {split} alignments for expert {expert_run}: run "
                                f"`asr-zoo align {expert_run} --split {split}` first")
    payload = safe_torch_load(Path(read_json(pointer)["dir"]) / f"{split}.pt")
    if payload["tokenizer_sha256"] != tokenizer_sha(model_proto):
        raise ValueError(f"alignments of {expert_run} were made with another tokenizer than this run's; "
                         "use the same data config (tokenizer type/size, train splits) as the expert")
    if payload["subsampling"] != subsampling:
        raise ValueError(f"alignments of {expert_run} are at the frame rate of front-end {payload['subsampling']}, "
                         f"this model uses {subsampling}")
    return payload["alignments"]
