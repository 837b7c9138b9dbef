#!/usr/bin/env bash
# Imputer-DP on LibriSpeech, the paper's setup (Chan et al. 2020): 80 fbank + Δ + ΔΔ, 400 BPE,
# 2 conv layers 11x3 stride 2x1, 16 Transformer layers, 4 heads, d 512, FFN 4096, dropout 0.3.
#
#   make recipe-librispeech-imputer LIBRISPEECH=/path/to/dir-holding-LibriSpeech
#   recipes/librispeech/run.sh --root DIR [--stage N] [--stop-stage M] [--download]
#
# On CPU, on a synthetic corpus in LibriSpeech layout (a few minutes; docs/scale.md has a run):
#   asr-zoo prepare synth --layout librispeech --out data/ls-synth --num-train 320 --num-dev 40 --num-test 40
#   make recipe-librispeech-imputer LIBRISPEECH=data/ls-synth TRAINER=ddp_cpu \
#     TRAIN_ARGS="data.train_splits=[train-clean-100] data.max_duration=40 data.num_workers=0 \
#       encoder.d_model=96 encoder.num_layers=3 encoder.ffn_dim=384 encoder.frontend_channels=8 \
#       trainer.num_threads=1 trainer.wandb=disabled optim.warmup_steps=10" \
#     EXPERT_ARGS=trainer.max_steps=50 IMPUTER_ARGS=trainer.max_steps=30
#
# Stages: 0 prepare (optionally download) | 1 CTC expert | 2 align train splits | 3 Imputer-DP |
#         4 evaluate CTC and DP on the eval splits | 5 comparison table.
# Environment (or make variables): ASR_ZOO (CLI), RUNS (default runs/librispeech-imputer), TRAINER
# (default gpu; ddp for all GPUs, ddp_cpu for 2 CPU processes), TRAIN_ARGS (extra overrides for both
# runs, e.g. a smaller model or data.train_splits=[train-clean-100]), EXPERT_ARGS / IMPUTER_ARGS
# (extra overrides for the CTC expert / the Imputer, e.g. their trainer.max_steps), EVAL_SPLITS
# (default "dev-clean dev-other test-clean test-other").
# Every stage is resumable: finished work is skipped on rerun (training: train_summary.json; align:
# the alignment store; eval: results/<split>.json newer than the checkpoint; table: table.md newer
# than every result).
set -euo pipefail
stage=0; stop_stage=100; root=""; download=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --download) download=--download; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$root" ] || { echo "usage: $0 --root DIR (DIR holds or receives LibriSpeech/)" >&2; exit 2; }
ASR_ZOO=${ASR_ZOO:-asr-zoo}
RUNS=${RUNS:-runs/librispeech-imputer}
TRAINER=${TRAINER:-gpu}
EVAL_SPLITS=${EVAL_SPLITS:-dev-clean dev-other test-clean test-other}
COMMON="data=librispeech data.root=$root encoder=imputer_paper trainer=$TRAINER ${TRAIN_ARGS:-}"
log() { echo "$(date '+%H:%M:%S') [recipe-librispeech-imputer] $*"; }
trap 'log "exit $? after ${SECONDS}s"' EXIT

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: prepare LibriSpeech under $root"
  $ASR_ZOO prepare librispeech --root "$root" $download
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: CTC expert"
  $ASR_ZOO train $COMMON objective=ctc run_dir="$RUNS/ctc" ${EXPERT_ARGS:-}
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: align the training splits"
  $ASR_ZOO align "$RUNS/ctc"  # default: every training split of the run
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: Imputer-DP from the expert"
  $ASR_ZOO train $COMMON objective=imputer_dp objective.expert="$RUNS/ctc" run_dir="$RUNS/imputer_dp" \
    ${IMPUTER_ARGS:-}
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for run in ctc imputer_dp; do
    todo=""
    for s in $EVAL_SPLITS; do  # a result newer than the best checkpoint is done
      [ "$RUNS/$run/results/$s.json" -nt "$RUNS/$run/checkpoints/best.ckpt" ] || todo="$todo --split $s"
    done
    if [ -z "$todo" ]; then log "stage 4: $run already evaluated on $EVAL_SPLITS"; continue; fi
    log "stage 4: evaluate $run:$todo"
    $ASR_ZOO eval "$RUNS/$run" $todo
  done
fi
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  if [ -f "$RUNS/table.md" ] && [ -z "$(find "$RUNS/ctc/results" "$RUNS/imputer_dp/results" -name '*.json' \
        -newer "$RUNS/table.md")" ]; then
    log "stage 5: table up to date: $RUNS/table.md"
  else
    log "stage 5: comparison table"
    $ASR_ZOO compare "$RUNS/ctc" "$RUNS/imputer_dp" --out "$RUNS/table"
  fi
fi
