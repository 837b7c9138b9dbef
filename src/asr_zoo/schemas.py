"""Typed defaults of every config group: one dataclass per group (attention types and objectives
one per choice), each field with its default, a comment, and where it matters its valid choices or
range (:func:`choice`, :func:`bounded`), checked by :func:`asr_zoo.config.compose` before any data
is touched. This module is the config layer's: it imports nothing from the model code, so
composing a config loads neither Lightning nor the zoo. An attention type or objective registers
its implementation against the schema named here (``ATTENTION_SCHEMAS``, ``OBJECTIVE_SCHEMAS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "choice", "bounded", "TokenizerConfig", "FeatureConfig", "SpecAugmentConfig", "DataConfig", "EncoderConfig",
    "TrainerConfig", "OptimConfig", "RunConfig", "AttentionConfig", "LinearAttentionConfig",
    "ClusteredAttentionConfig", "ImprovedClusteredAttentionConfig", "PooledAttentionConfig", "ObjectiveConfig",
    "CTCConfig", "RNNTConfig", "Seq2SeqConfig", "ImputerConfig", "ATTENTION_SCHEMAS", "OBJECTIVE_SCHEMAS",
]


def choice(default, *others):
    """A field (string or number) that must be one of ``default, *others``: declared once, next
    to the field, and checked whenever a config is composed (before any data is touched)."""
    return field(default=default, metadata={"choices": (default, *others)})


def bounded(default, low=None, high=None, *, high_open: bool = False):
    """A number field that must lie in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    return field(default=default, metadata={"range": (low, high, high_open)})


# ----------------------------------------------------------------------------------- run
@dataclass
class TokenizerConfig:
    type: str = choice("bpe", "unigram", "char")  # sentencepiece model type
    vocab_size: int = 256  # including <blk>, <sos/eos>, <unk>; ignored for char


@dataclass
class FeatureConfig:
    num_mel_bins: int = 80  # Kaldi-style log-mel filterbank channels
    deltas: bool = False  # append Δ and ΔΔ (x3 feature dim), computed on the fly
    # mean/variance normalisation: global (statistics of the training splits, cmvn.pt) | utterance
    # (each utterance's own statistics: removes a recording's channel and level, docs/small_corpora.md)
    normalization: str = choice("global", "utterance")


@dataclass
class SpecAugmentConfig:
    enabled: bool = True
    num_frame_masks: int = 2  # time masks per utterance (scaled by length, lhotse semantics)
    frames_mask_size: int = 40  # max width of a time mask (input frames)
    num_feature_masks: int = 2  # frequency masks
    features_mask_size: int = 15  # max width of a frequency mask (mel bins)
    time_warp_factor: int = 0  # 0 disables time warping
    max_frames_mask_fraction: float = 0.15  # cap of masked time fraction


@dataclass
class DataConfig:
    name: str = "synth"  # label of this data config
    root: str = "data/synth"  # the directory given to `asr-zoo prepare ... --out`
    format: str = choice("librispeech", "manifest")  # LibriSpeech/<split>/... layout | JSONL manifests
    train_splits: list = field(default_factory=lambda: ["train"])  # split names (dirs or manifests)
    dev_split: str = "dev"  # validation split (WER each epoch, best checkpoint)
    test_split: str = "test"  # default split of `asr-zoo eval`
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    max_duration: float = 120.0  # seconds of audio per training batch (before padding)
    num_buckets: int = 10  # duration buckets of the dynamic bucketing sampler
    max_utt_duration: float = 30.0  # drop longer training utterances (reported)
    min_utt_duration: float = 0.3  # drop shorter training utterances (reported)
    num_workers: int = 1  # dataloader worker processes
    on_bad_utterance: str = choice("drop", "fail")  # drop (and report) | fail


@dataclass
class EncoderConfig:
    name: str = "transformer"  # label of this encoder preset (run_dir {encoder})
    block: str = choice("transformer", "conformer")  # block type
    frontend: str = choice("conv2d", "imputer_conv")  # 2 x 3x3 conv, stride 2 | 2 x 11x3 conv, stride 2x1
    frontend_channels: int = 64  # channels of the conv front-end
    time_subsampling: int = choice(4, 2)  # 4 (40 ms encoder frames) | 2 (20 ms: dense labels, e.g. characters, under CTC)
    d_model: int = 144
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 576
    dropout: float = 0.1
    pre_ln: bool = True  # pre-LayerNorm (stable) or post-LayerNorm (the thesis' choice)
    scale_input: bool = True  # multiply the front-end output by sqrt(d_model) before adding positions
    conv_kernel: int = 15  # depthwise kernel of the Conformer convolution module


@dataclass
class TrainerConfig:
    name: str = "cpu"  # label of this trainer preset (run_dir {trainer})
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = 1  # number of devices or "auto" (per node)
    num_nodes: int = bounded(1, 1)  # machines (torchrun / SLURM / MASTER_ADDR+NODE_RANK env); docs/scale.md
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = choice("32-true", "bf16-mixed", "16-mixed", "64-true")  # bf16 falls back to 32 on CPUs without fast bf16
    max_steps: int = -1  # -1: bounded by max_epochs
    max_epochs: int = 30
    max_time: Optional[str] = None  # "DD:HH:MM:SS" wall-clock cap
    val_every_n_epochs: int = 1
    val_max_utts: int = 0  # 0: validate on the whole dev split; >0: its first N utterances
    gradient_clip_val: float = 5.0
    max_consecutive_bad_steps: int = bounded(20, 1)  # stop when this many steps in a row have a NaN/Inf loss or gradient
    accumulate_grad_batches: int = bounded(1, 1)  # batches per optimizer step (also divides the cosine schedule's step count)
    keep_epoch_checkpoints: int = bounded(0, 0)  # also keep checkpoints/epoch=E.ckpt of the last N epochs (asr-zoo average --last N)
    log_every_n_steps: int = 20
    num_threads: int = 0  # torch intra-op threads (0: leave torch's default)
    progress_bar: bool = True
    wandb: str = choice("offline", "online", "disabled")
    wandb_project: str = "asr-zoo"


@dataclass
class OptimConfig:
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-2
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 500
    schedule: str = choice("cosine", "noam", "constant")  # all after linear warm-up
    min_lr_ratio: float = 0.02  # cosine floor as a fraction of lr
    ema_decay: float = bounded(0.0, 0.0, 1.0, high_open=True)  # EMA decay per optimizer step (0: off); validation, checkpoints and eval use the EMA
    ema_start_step: int = bounded(0, 0)  # the EMA copies the weights until this optimizer step


@dataclass
class RunConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)


# ----------------------------------------------------------------------------------- attention
@dataclass
class AttentionConfig:
    """Config shared by every attention type (``conf/attention/<name>.yaml``)."""

    name: str = "softmax"  # registry key: softmax | linear | clustered | iclustered | pooled
    dropout: float = bounded(0.0, 0.0, 1.0, high_open=True)  # dropout on attention weights (types that form them explicitly)


@dataclass
class LinearAttentionConfig(AttentionConfig):
    """``conf/attention/linear.yaml``. ``dropout`` is unused: linear attention forms no weights."""

    name: str = "linear"
    eps: float = 1e-6  # added to the normaliser φ(Q)Σφ(K)


@dataclass
class ClusteredAttentionConfig(AttentionConfig):
    """``conf/attention/clustered.yaml``."""

    name: str = "clustered"
    clusters: int = bounded(100, 1)  # C: centroids per utterance and head (the thesis sweeps 100/200/300)
    bits: int = bounded(63, 1, 63)  # hash bits (random hyperplanes with bias), at most 63
    iterations: int = bounded(10, 1)  # Lloyd assignments of the Hamming K-means
    seed: int = 0  # hyperplane seed in eval mode (training draws fresh hyperplanes every call)
    short_exact: bool = True  # a batch whose longest utterance has <= clusters frames takes exact
    # softmax (SDPA): what clustering gives it anyway (one cluster per frame), without the K-means


@dataclass
class ImprovedClusteredAttentionConfig(ClusteredAttentionConfig):
    """``conf/attention/iclustered.yaml``."""

    name: str = "iclustered"
    topk: int = bounded(32, 1)  # keys per cluster that get exact per-query attention


@dataclass
class PooledAttentionConfig(AttentionConfig):
    """``conf/attention/pooled.yaml``."""

    name: str = "pooled"
    q_stride: int = bounded(2, 1)  # query pooling window = stride S_q (1 = no pooling)
    kv_stride: int = bounded(2, 1)  # key/value pooling window = stride S_k (1 = no pooling)


# ----------------------------------------------------------------------------------- objectives
@dataclass
class ObjectiveConfig:
    name: str = "ctc"


@dataclass
class CTCConfig(ObjectiveConfig):
    name: str = "ctc"
    decoder: str = choice("greedy", "prefix_beam")
    beam_size: int = 8  # prefix beam width


@dataclass
class RNNTConfig(ObjectiveConfig):
    name: str = "rnnt"
    predictor: str = choice("lstm", "stateless")  # lstm (embedding -> LSTM) | stateless (last context_size tokens, no recurrence)
    embed_dim: int = 128  # token embedding size of the predictor
    hidden_dim: int = 256  # LSTM hidden size (lstm)
    num_layers: int = 1  # LSTM layers (lstm)
    context_size: int = 2  # tokens of left context (stateless; 1 or 2)
    stateless_conv: bool = True  # stateless: mix the context with a depthwise conv (icefall), else concatenate
    dropout: Optional[float] = bounded(None, 0.0, 1.0, high_open=True)  # predictor dropout; None: encoder.dropout
    joint_dim: int = 256  # joint network width J
    decoder: str = choice("greedy", "beam")  # beam: (modified beam search, one symbol per frame)
    beam_size: int = 4  # prefixes kept per frame (beam)
    max_symbols_per_frame: int = 3  # greedy: tokens emitted per frame at most
    reduction: str = choice("mean", "mean_per_token", "sum")  # loss over the batch (mean: per utterance, like ctc)
    clamp: float = -1.0  # clamp the loss gradient w.r.t. the logits to [-clamp, clamp]; <= 0: off
    loss_backend: str = choice("asr_zoo", "torchaudio")  # asr_zoo (pure PyTorch) | torchaudio (its C++/CUDA kernel, if importable)
    ctc_weight: float = bounded(0.3, 0.0, 1.0, high_open=True)  # auxiliary CTC loss on the encoder; 0 = no CTC head
    loss: str = choice("full", "pruned")  # full: joint on (B,T,U+1,V) | pruned: simple loss + joint on (B,T,prune_range,V) (docs/rnnt_pruned.md)
    prune_range: int = bounded(5, 2)  # pruned: label positions S kept per frame
    simple_loss_scale: float = bounded(0.5, 0.0, 1.0)  # pruned: weight of the simple loss after warm-up (icefall)
    prune_warm_step: int = bounded(2000, 0)  # pruned: steps of icefall's warm-up (simple 1.0 -> scale, pruned 0.1 -> 1.0)


@dataclass
class Seq2SeqConfig(ObjectiveConfig):
    name: str = "seq2seq"
    decoder_layers: int = bounded(2, 1)  # Transformer decoder layers (d_model = encoder.d_model)
    decoder_heads: int = 4
    decoder_ffn_dim: int = 576
    decoder_dropout: Optional[float] = bounded(None, 0.0, 1.0, high_open=True)  # None: encoder.dropout
    decoder_attention: str = choice("softmax", "linear")  # causal self-attention type
    tie_embedding: bool = True  # share the token embedding with the output layer
    # add sinusoidal frame positions to the decoder's memory (cross-attention keys/values); False
    # here so that runs saved before the option keep decoding as trained; conf/objective/seq2seq.yaml
    # turns it on for new runs (docs/seq2seq_decoding.md)
    memory_positions: bool = False
    label_smoothing: float = bounded(0.1, 0.0, 1.0, high_open=True)  # ε: target = (1 - ε) one-hot + ε uniform over all V classes
    loss_norm: str = choice("utterance", "token")  # divide summed losses by: batch size | target tokens
    ctc_weight: float = bounded(0.3, 0.0, 1.0, high_open=True)  # auxiliary CTC loss on the encoder; 0 = no CTC head
    scheduled_sampling: float = bounded(0.0, 0.0, 1.0, high_open=True)  # probability of feeding the model's own greedy prediction per position
    decoder: str = choice("beam", "greedy")
    beam_size: int = bounded(4, 1)
    length_penalty: float = 1.0  # alpha: hypotheses ranked by score / length ** alpha
    max_len_ratio: float = 1.0  # at most ceil(ratio x encoder frames) tokens per utterance
    ctc_decode_weight: float = bounded(0.3, 0.0, 1.0, high_open=True)  # CTC prefix-score weight in beam search (needs ctc_weight > 0)
    ctc_candidates: int = bounded(8, 1)  # top attention candidates per hypothesis scored by CTC


@dataclass
class ImputerConfig(ObjectiveConfig):
    name: str = "imputer_dp"  # imputer_dp | imputer_im (the loss)
    expert: str = ""  # run directory of the CTC expert (after `asr-zoo align EXPERT`)
    init_from_expert: bool = True  # start from the expert's encoder + head (alignment embedding at 0)
    block_size: int = 8  # training block size B (block masking policy)
    masking: str = choice("block", "bernoulli", "uniform")  # roll-in masking policy
    max_shift: int = 1  # roll-in shift noise in frames (0 disables it)
    observed_loss_weight: float = bounded(1.0, 0.0, 1.0)  # weight of -log p(ã_t) at the given (unmasked) frames: 1 = Eq. 10/11 (also learn to repeat them); 0 = masked frames only (better for short DP runs, worse for long ones: docs/imputer_deletions.md)
    decode_block_size: int = 0  # inference B (0: same as block_size; 1: one-shot, CTC-like)
    decode_strategy: str = choice("default", "alternate_subblock", "rightmost_last", "topk")  # commit order at inference
    decode_blank_penalty: float = 0.0  # subtracted from log p(blank) at every decoding step (argmax and commit order); > 0: fewer deletions


ATTENTION_SCHEMAS: dict[str, type] = {
    "softmax": AttentionConfig, "linear": LinearAttentionConfig, "clustered": ClusteredAttentionConfig,
    "iclustered": ImprovedClusteredAttentionConfig, "pooled": PooledAttentionConfig,
}
OBJECTIVE_SCHEMAS: dict[str, type] = {
    "ctc": CTCConfig, "rnnt": RNNTConfig, "seq2seq": Seq2SeqConfig, "imputer_dp": ImputerConfig,
    "imputer_im": ImputerConfig,
}
