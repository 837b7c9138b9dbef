"""The one LightningDataModule every objective trains on.

Batches are dicts::

    feats       (B, T, F)  float, mean/variance normalised (global or per utterance; + SpecAugment in training)
    feat_lens   (B,)       int64 valid frames
    tokens      (B, U)     int64 token ids, zero padded
    token_lens  (B,)       int64
    texts       list[str]  normalised transcripts
    ids         list[str]  utterance ids
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

import lightning as L
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler, SpecAugment
from torch.utils.data import DataLoader, Dataset

from .corpora import BadUtterance
from .features import add_deltas, normalize_features, pad_features
from .prepare import PreparedData
from .tokenizer import Tokenizer

__all__ = ["ASRDataset", "ASRDataModule", "ExactlyOnceBucketingSampler"]


class ASRDataset(Dataset):
    """Map-style dataset over CutSet batches (lhotse samplers yield whole CutSets).

    Args:
        tokenizer: text -> ids.
        mean, std: `(F,)` global normalisation statistics of the 80-dim fbank.
        deltas: append Δ/ΔΔ after normalisation.
        specaugment: applied to the padded batch (training only), or None.
        normalization: ``global`` (``mean``, ``std``) or ``utterance`` (each utterance's own statistics).
    """

    def __init__(self, tokenizer: Tokenizer, mean: torch.Tensor, std: torch.Tensor, deltas: bool = False,
                 specaugment: Optional[SpecAugment] = None, normalization: str = "global"):
        if normalization not in ("global", "utterance"):
            raise ValueError(f"normalization={normalization!r}: expected 'global' or 'utterance'")
        self.tokenizer, self.mean, self.std = tokenizer, mean, std
        self.deltas, self.specaugment, self.per_utterance = deltas, specaugment, normalization == "utterance"

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, mean: torch.Tensor, std: torch.Tensor, features,
                    specaugment: Optional[SpecAugment] = None) -> "ASRDataset":
        """The dataset a run's ``data.features`` section (``FeatureConfig``) describes."""
        return cls(tokenizer, mean, std, features.deltas, specaugment, features.normalization)

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        feats = []
        for cut in cuts:
            x = torch.from_numpy(cut.load_features())  # (T, F)
            feats.append(normalize_features(x, self.mean, self.std, self.per_utterance))
        feats, feat_lens = pad_features(feats)
        if self.specaugment is not None:
            feats = self.specaugment(feats)
        if self.deltas:
            feats = torch.nn.utils.rnn.pad_sequence(
                [add_deltas(f[:n]) for f, n in zip(feats, feat_lens.tolist())], batch_first=True)
        texts = [cut.supervisions[0].text for cut in cuts]
        ids = [self.tokenizer.encode(t) for t in texts]
        token_lens = torch.tensor([len(i) for i in ids], dtype=torch.long)
        tokens = torch.zeros(len(ids), max(1, int(token_lens.max())), dtype=torch.long)
        for b, seq in enumerate(ids):
            tokens[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return {"feats": feats, "feat_lens": feat_lens, "tokens": tokens, "token_lens": token_lens,
                "texts": texts, "ids": [cut.id for cut in cuts]}

    def __len__(self) -> int:  # sampler-driven; length is unknown up front
        raise TypeError("ASRDataset is indexed by CutSet batches from a lhotse sampler")


class ExactlyOnceBucketingSampler(DynamicBucketingSampler):
    """lhotse's duration-bucketing sampler, sharded by rank, with each training cut drawn exactly
    once per epoch across ranks (when the epoch has at least ``world_size`` cuts).

    lhotse gives the ranks equal batch counts by drawing ``world_size`` batches per step and
    handing batch ``rank`` to each rank; at the end of the epoch it re-splits a short last group
    across the ranks and, when that group holds fewer cuts than ranks, *duplicates* cuts (ids
    ``..._dup0``), so they are trained on twice. Here a last group with fewer cuts than ranks is
    merged into the last batch of the group before it (that batch grows by at most
    ``world_size - 1`` utterances, once per epoch), so nothing is repeated or dropped.
    """

    def __iter__(self):
        self._lookahead: deque = deque()
        self._exhausted, self._drawn = False, 0
        return super().__iter__()

    def _next_batch(self):
        w = self.world_size
        if w == 1:
            return super()._next_batch()
        while not self._exhausted and len(self._lookahead) < 2 * w:  # enough to see the epoch's last group
            try:
                self._lookahead.append(super()._next_batch())
            except StopIteration:
                self._exhausted = True
        if self._exhausted and self._drawn % w == 0 and w < len(self._lookahead) < 2 * w:
            tail = [self._lookahead.pop() for _ in range(len(self._lookahead) - w)]
            if sum(len(b) for b in tail) < w:  # lhotse would duplicate cuts to fill the ranks
                self._lookahead[-1] = CutSet.from_cuts([c for b in [self._lookahead[-1], *tail] for c in b])
            else:
                self._lookahead.extend(reversed(tail))
        if not self._lookahead:
            raise StopIteration
        self._drawn += 1
        return self._lookahead.popleft()


def _rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` outside distributed runs)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ASRDataModule(L.LightningDataModule):
    """Shared datamodule: preparation stages, filtering, bucketing, DDP-aware sampling.

    Args:
        cfg: the ``data`` section of a run config (``DataConfig``).
        utterance_filter: optional ``(num_frames, token_ids) -> reason or None`` from the objective
            (e.g. CTC needs enough encoder frames for its labels); rejected training utterances
            are dropped and reported (or raise when ``on_bad_utterance=fail``).
        seed: sampler shuffling seed.
    """

    def __init__(self, cfg, utterance_filter: Optional[Callable[[int, list], Optional[str]]] = None,
                 seed: int = 0, val_max_utts: int = 0):
        super().__init__()
        self.cfg, self.utterance_filter, self.seed, self.val_max_utts = cfg, utterance_filter, seed, val_max_utts
        self.data = PreparedData(cfg)
        self._tokenizer: Optional[Tokenizer] = None

    # Lightning calls prepare_data on one process per node: build every missing artefact there.
    def prepare_data(self) -> None:
        self.data.prepare(num_jobs=max(1, self.cfg.num_workers))

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = self.data.tokenizer()
        return self._tokenizer

    @property
    def feature_dim(self) -> int:
        return self.cfg.features.num_mel_bins * (3 if self.cfg.features.deltas else 1)

    def setup(self, stage: Optional[str] = None) -> None:
        mean, std = self.data.cmvn()
        sa = self.cfg.specaugment
        specaug = SpecAugment(
            time_warp_factor=sa.time_warp_factor or None, num_feature_masks=sa.num_feature_masks,
            features_mask_size=sa.features_mask_size, num_frame_masks=sa.num_frame_masks,
            frames_mask_size=sa.frames_mask_size, max_frames_mask_fraction=sa.max_frames_mask_fraction, p=1.0,
        ) if sa.enabled else None
        self.train_set = ASRDataset.from_config(self.tokenizer, mean, std, self.cfg.features, specaug)
        self.eval_set = ASRDataset.from_config(self.tokenizer, mean, std, self.cfg.features)
        if stage in (None, "fit"):
            self.train_cuts = self._filtered_train_cuts()
        if stage in (None, "fit", "validate"):  # trainer.validate(module, datamodule) needs the dev split alone
            self.dev_cuts = self.data.features(self.cfg.dev_split)
            if self.val_max_utts:
                self.dev_cuts = self.dev_cuts.subset(first=self.val_max_utts)

    def _filtered_train_cuts(self) -> CutSet:
        """The training splits' cuts fit for training. The others are recorded under
        ``excluded_from_training`` in their split's report (printed, and written to
        ``manifests/<split>_report.json``), or raise ``BadUtterance`` when ``on_bad_utterance=fail``."""
        kept = []
        for split in self.cfg.train_splits:
            report = self.data.report(split)
            report.excluded_from_training = []
            for cut in self.data.features(split):
                reason = self._training_problem(cut)
                if reason is None:
                    kept.append(cut)
                else:
                    report.exclude_from_training(cut.id, cut.recording.sources[0].source, reason,
                                                 self.cfg.on_bad_utterance)
            self.data.save_report(report)
        if not kept:
            raise BadUtterance(f"no training utterances left after filtering {', '.join(self.cfg.train_splits)} "
                               "(see manifests/<split>_report.json)")
        return CutSet.from_cuts(kept)

    def _training_problem(self, cut) -> Optional[str]:
        """Why ``cut`` cannot be trained on (duration limits, tokenizer, objective), or None."""
        cfg = self.cfg
        if cut.duration > cfg.max_utt_duration:
            return f"too long for training: {cut.duration:.2f} s > data.max_utt_duration={cfg.max_utt_duration}"
        if cut.duration < cfg.min_utt_duration:
            return f"too short for training: {cut.duration:.2f} s < data.min_utt_duration={cfg.min_utt_duration}"
        ids = self.tokenizer.encode(cut.supervisions[0].text)
        if not ids:
            return "transcript tokenizes to nothing"
        if self.tokenizer.unk_fraction(ids) > 0.5:
            return "transcript is mostly <unk> under the tokenizer"
        if self.utterance_filter is not None:
            return self.utterance_filter(cut.num_frames, ids)
        return None

    def estimated_batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches one rank draws per epoch: counted by a dry pass of the training
        sampler over epoch 0 (cut metadata only, no features), rank 0 of ``world_size`` (lhotse
        gives every rank the same count). Other epochs' shuffles differ by a batch or two."""
        key = (world_size, self.cfg.max_duration, len(self.train_cuts))
        if getattr(self, "_batches_per_epoch", (None, None))[0] != key:
            sampler = self._train_sampler(self.train_cuts, world_size=world_size, rank=0)
            self._batches_per_epoch = (key, max(1, sum(1 for _ in sampler)))
        return self._batches_per_epoch[1]

    def _train_sampler(self, cuts: CutSet, **rank_and_world) -> ExactlyOnceBucketingSampler:
        """Duration buckets keep padding low; lhotse shards by rank (equal batch counts)."""
        return ExactlyOnceBucketingSampler(
            cuts, max_duration=self.cfg.max_duration, shuffle=True, seed=self.seed, drop_last=False,
            num_buckets=min(self.cfg.num_buckets, len(cuts)), num_cuts_for_bins_estimate=min(10000, len(cuts)),
            **rank_and_world,
        )

    def _loader(self, cuts: CutSet, dataset: ASRDataset, shuffle: bool) -> DataLoader:
        if shuffle:  # training
            sampler = self._train_sampler(cuts)
        else:  # evaluation: sorted by duration, deterministic, each utterance on exactly one rank
            rank, world = _rank_and_world_size()
            shard = CutSet.from_cuts(list(cuts.sort_by_duration())[rank::world])
            sampler = DynamicCutSampler(shard, max_duration=self.cfg.max_duration, shuffle=False, world_size=1, rank=0)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.cfg.num_workers,
                          persistent_workers=self.cfg.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_cuts, self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dev_cuts, self.eval_set, shuffle=False)
