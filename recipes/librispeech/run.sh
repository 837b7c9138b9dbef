#!/usr/bin/env bash
# Imputer-DP on LibriSpeech, the paper's setup (Chan et al. 2020): 80 fbank + Δ + ΔΔ, 400 BPE,
# 2 conv layers 11x3 stride 2x1, 16 Transformer layers, 4 heads, d 512, FFN 4096, dropout 0.3.
#
#   make recipe-librispeech-imputer LIBRISPEECH=/path/to/dir-holding-LibriSpeech
#   recipes/librispeech/run.sh --root DIR [--stage N] [--stop-stage M] [--download]
#
# Stages: 0 prepare (optionally download) | 1 CTC expert | 2 align train splits | 3 Imputer-DP |
#         4 evaluate CTC and DP on the eval splits | 5 comparison table.
# Environment: ASR_ZOO (CLI), RUNS (default runs/librispeech-imputer), TRAINER (default gpu; ddp for
# all GPUs), TRAIN_ARGS (extra overrides for both runs, e.g. a smaller model for a smoke test),
# EVAL_SPLITS (default "dev-clean dev-other test-clean test-other").
# Every stage is resumable: finished work is skipped on rerun.
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

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: prepare LibriSpeech under $root"
  $ASR_ZOO prepare librispeech --root "$root" $download
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: CTC expert"
  $ASR_ZOO train $COMMON objective=ctc run_dir="$RUNS/ctc"
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: align the training splits"
  $ASR_ZOO align "$RUNS/ctc"  # default: every training split of the run
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: Imputer-DP from the expert"
  $ASR_ZOO train $COMMON objective=imputer_dp objective.expert="$RUNS/ctc" run_dir="$RUNS/imputer_dp"
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for run in ctc imputer_dp; do
    log "stage 4: evaluate $run on $EVAL_SPLITS"
    $ASR_ZOO eval "$RUNS/$run" $(for s in $EVAL_SPLITS; do echo --split $s; done)
  done
fi
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: comparison table"
  $ASR_ZOO compare "$RUNS/ctc" "$RUNS/imputer_dp" --out "$RUNS/table"
fi
