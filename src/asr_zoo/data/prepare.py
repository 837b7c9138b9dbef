"""Resumable preparation stages under a data root (the directory given to ``prepare --out``).

Layout (every file written atomically; a finished stage is skipped on rerun)::

    <root>/LibriSpeech/<split>/...            audio + transcripts (or <root>/<split>.jsonl manifests)
    <root>/manifests/<split>_cuts.jsonl.gz    checked utterances (lhotse CutSet)
    <root>/manifests/<split>_report.json      kept / dropped utterances and why
    <root>/fbank<F>/<split>_cuts.jsonl.gz     cuts with fbank features attached
    <root>/fbank<F>/<split>_feats/            feature storage (lilcom chunky)
    <root>/fbank<F>/cmvn.pt                   global mean / std over the training splits
    <root>/tokenizers/<type><V>.model         sentencepiece model trained on the training splits
"""

from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path

import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter

from ..utils import atomic_replace, atomic_write_json, read_json, safe_torch_load
from .corpora import SAMPLING_RATE, BadUtterance, CorpusReport, check_audio, read_librispeech_split, read_manifest
from .tokenizer import Tokenizer, train_tokenizer

__all__ = ["PreparedData"]

log = logging.getLogger(__name__)


def _save_cuts(cuts: CutSet, path: Path) -> None:
    atomic_replace(path, lambda tmp: cuts.to_file(tmp))  # the temporary keeps the .jsonl.gz suffix


def _feature_paths_relative_to(cuts: CutSet, root: Path) -> CutSet:
    """``cuts`` with feature storage paths relative to ``root`` (where they live under it)."""
    base = Path(root).resolve()

    def rel(cut):
        p = Path(cut.features.storage_path).resolve()
        if p.is_relative_to(base):
            cut.features.storage_path = str(p.relative_to(base))
        return cut

    return CutSet.from_cuts([rel(c) for c in cuts])


def _resolve_feature_paths(cuts: CutSet, root: Path, feat_dir: Path) -> CutSet:
    """Relative feature storage paths of ``cuts`` resolved against ``root`` (as written now), or
    to the archive of that name in ``feat_dir`` (older cut files, whose paths were relative to
    the working directory of ``prepare``); an absolute or unresolvable path is kept."""
    found: dict[str, str] = {}

    def resolve(cut):
        p = cut.features.storage_path
        if p not in found:
            found[p] = p
            q = Path(p)
            if not q.is_absolute():
                tail = q.parts[q.parts.index(Path(feat_dir).name) + 1:] if Path(feat_dir).name in q.parts else (q.name,)
                for cand in (Path(root) / q, Path(feat_dir).joinpath(*tail)):
                    if cand.exists():
                        found[p] = str(cand)
                        break
        cut.features.storage_path = found[p]
        return cut

    return CutSet.from_cuts([resolve(c) for c in cuts])


def _audio_problem(cut) -> str | None:
    """Why the audio of ``cut`` fails :func:`check_audio` now, or None."""
    try:
        check_audio(cut.recording.sources[0].source)
    except ValueError as e:
        return str(e)
    return None


class PreparedData:
    """Access (and lazily build) every prepared artefact of one data config.

    Args:
        cfg: a ``DataConfig`` (root, format, tokenizer, features, on_bad_utterance, ...).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.root = Path(cfg.root)
        self.feat_dir = self.root / f"fbank{cfg.features.num_mel_bins}"

    # -- stage 1: manifests -------------------------------------------------------------------
    def manifest_path(self, split: str) -> Path:
        return self.root / "manifests" / f"{split}_cuts.jsonl.gz"

    def report_path(self, split: str) -> Path:
        return self.root / "manifests" / f"{split}_report.json"

    def report(self, split: str) -> CorpusReport:
        """What the manifest stage (and feature extraction) kept and dropped of ``split``."""
        cuts = self.manifest(split)
        path = self.report_path(split)
        if path.exists():
            return CorpusReport.from_dict(read_json(path))
        return CorpusReport(split, kept=len(cuts), hours=sum(c.duration for c in cuts) / 3600)  # report lost

    def manifest(self, split: str, num_jobs: int | None = None) -> CutSet:
        """Checked cuts of ``split`` (built on first use; bad utterances dropped and reported in
        ``<split>_report.json`` or raising ``BadUtterance``, per ``on_bad_utterance``)."""
        path = self.manifest_path(split)
        if not path.exists():
            if self.cfg.format == "librispeech":
                cuts, report = read_librispeech_split(self.root / "LibriSpeech", split, self.cfg.on_bad_utterance,
                                                      num_jobs)
            else:
                cuts, report = read_manifest(self.root / f"{split}.jsonl", split, self.cfg.on_bad_utterance, num_jobs)
            self.save_report(report)
            _save_cuts(cuts, path)
        return CutSet.from_file(path)

    def save_report(self, report: CorpusReport) -> None:
        """Print the report's summary and write it to ``manifests/<split>_report.json``."""
        log.info(report.summary())
        print(report.summary(), flush=True)
        atomic_write_json(self.report_path(report.split), report.to_dict())

    # -- stage 2: features --------------------------------------------------------------------
    def extractor(self) -> Fbank:
        """The feature extractor of this data config (Kaldi-style fbank at 16 kHz)."""
        return Fbank(FbankConfig(num_mel_bins=self.cfg.features.num_mel_bins, sampling_rate=SAMPLING_RATE))

    def features(self, split: str, num_jobs: int = 2) -> CutSet:
        """Cuts of ``split`` with fbank attached (extracted on first use).

        Feature archives are stored relative to the data root and resolved against it here, so
        a corpus can be moved or used from another working directory (``data.root`` pointing at
        it); older cut files, whose paths are relative to the working directory of ``prepare``,
        are resolved against the root when the archive is found there.
        """
        return _resolve_feature_paths(CutSet.from_file(self._ensure_features(split, num_jobs)), self.root, self.feat_dir)

    def _ensure_features(self, split: str, num_jobs: int) -> Path:
        path = self.feat_dir / f"{split}_cuts.jsonl.gz"
        if not path.exists():
            cuts = self.manifest(split, num_jobs)
            self.feat_dir.mkdir(parents=True, exist_ok=True)
            extractor = self.extractor()
            try:
                with_feats = cuts.compute_and_store_features(
                    extractor, storage_path=self.feat_dir / f"{split}_feats", num_jobs=num_jobs,
                    storage_type=LilcomChunkyWriter, progress_bar=True,
                )
            except Exception as e:
                raise BadUtterance(self._extraction_failure(split, cuts, e)) from e
            with_feats = self._account_for_lost(split, cuts, with_feats)
            _save_cuts(_feature_paths_relative_to(with_feats, self.root), path)
        return path

    def _account_for_lost(self, split: str, cuts: CutSet, with_feats: CutSet) -> CutSet:
        """Report cuts that feature extraction skipped: lhotse only warns when a file fails to
        load (e.g. audio changed after the manifest was checked). Dropped (and added to the
        split's report) or ``BadUtterance``, per ``on_bad_utterance``."""
        done = {c.id for c in with_feats}
        lost = [c for c in cuts if c.id not in done]
        if not lost:
            return with_feats
        report = self.report(split)
        recorded = {d["id"] for d in report.dropped}  # a rerun after a kill between the report and
        for cut in lost:                               # the cut set must not count them twice
            if cut.id in recorded:
                continue
            problem = _audio_problem(cut) or "lhotse could not load it"
            report.drop(cut.id, cut.recording.sources[0].source, f"unreadable audio at feature extraction: {problem} "
                        "(the file changed after the manifest was checked)", self.cfg.on_bad_utterance)
            report.kept -= 1
            report.hours -= cut.duration / 3600
        self.save_report(report)
        if not report.kept:
            raise BadUtterance(f"{split}: no usable utterances left after feature extraction")
        return with_feats

    def _extraction_failure(self, split: str, cuts: CutSet, error: Exception) -> str:
        """Error text for a failed feature extraction, naming the utterances whose audio fails
        the manifest checks now (the cached manifest predates them, or the files changed)."""
        bad = islice(((c.id, problem) for c in cuts if (problem := _audio_problem(c))), 5)
        culprits = "; ".join(f"{i}: {p}" for i, p in bad) or "no utterance fails the audio checks"
        return (f"{split}: feature extraction failed ({type(error).__name__}: {error}); {culprits}. "
                f"Delete {self.manifest_path(split)} to re-check the split.")

    def _cmvn_path(self) -> Path:
        return self.feat_dir / f"cmvn_{'+'.join(self.cfg.train_splits)}.pt"

    def cmvn(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Global per-dimension mean and std `(F,)` of the training splits' fbank."""
        path = self._cmvn_path()
        if not path.exists():
            total, sq, n = 0.0, 0.0, 0
            for split in self.cfg.train_splits:
                for cut in self.features(split):
                    x = torch.from_numpy(cut.load_features()).double()
                    total = total + x.sum(0)
                    sq = sq + (x * x).sum(0)
                    n += x.shape[0]
            mean = total / n
            std = (sq / n - mean * mean).clamp_min(1e-8).sqrt()
            atomic_replace(path, lambda tmp: torch.save({"mean": mean.float(), "std": std.float()}, tmp))
        stats = safe_torch_load(path)
        return stats["mean"], stats["std"]

    # -- stage 3: tokenizer -------------------------------------------------------------------
    def tokenizer_path(self) -> Path:
        t = self.cfg.tokenizer
        size = "" if t.type == "char" else str(t.vocab_size)
        return self.root / "tokenizers" / f"{t.type}{size}_{'+'.join(self.cfg.train_splits)}.model"

    def tokenizer(self) -> Tokenizer:
        path = self.tokenizer_path()
        if not path.exists():
            texts = [s.text for split in self.cfg.train_splits for c in self.manifest(split) for s in c.supervisions]
            train_tokenizer(texts, path.with_suffix(""), self.cfg.tokenizer.type, self.cfg.tokenizer.vocab_size)
        return Tokenizer.load(path)

    def prepare(self, eval_splits: tuple[str, ...] = (), num_jobs: int = 2) -> None:
        """Run every missing stage needed for training (and for ``eval_splits``); finished stages
        cost only an existence check (Lightning calls this again at ``fit``)."""
        for split in dict.fromkeys([*self.cfg.train_splits, self.cfg.dev_split, *eval_splits]):
            self._ensure_features(split, num_jobs)
        if not self._cmvn_path().exists():
            self.cmvn()
        if not self.tokenizer_path().exists():
            self.tokenizer()
