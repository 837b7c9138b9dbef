#!/usr/bin/env bash
# Real recordings: CTC with `preset=small_corpus` on the Free Spoken Digit Dataset joined into
# connected digits (asr_zoo/data/fsdd.py: 4 training voices, dev and test voices unseen, all but two
# speakers non-native), global and per-utterance feature normalisation x seeds, every run on test,
# and the table with paired-bootstrap intervals (docs/small_corpora.md).
#
#   git clone https://github.com/Jakobovski/free-spoken-digit-dataset /path/to/fsdd
#   make recipe-fsdd FSDD=/path/to/fsdd            # or: recipes/fsdd/run.sh [--stage N] [--stop-stage M]
#
# Stages: 0 prepare | 1 train | 2 evaluate on test | 3 table.
# Environment: ASR_ZOO (the CLI, default: asr-zoo), FSDD (the clone; stage 0 only), DATA (default
# data/fsdd), RUNS (default runs/fsdd), SEEDS (default "0 1 2"), STEPS (default 1000), WORKERS (default
# 2), TRAINER (default demo: 1 CPU thread per run), TRAIN_ARGS (extra overrides for every run).
# Every stage is resumable: rerun the same command.
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
parse_stage_options "$@"
ASR_ZOO=${ASR_ZOO:-asr-zoo}
DATA=${DATA:-data/fsdd}
RUNS=${RUNS:-runs/fsdd}
SEEDS=${SEEDS:-0 1 2}
STEPS=${STEPS:-1000}
WORKERS=${WORKERS:-2}
TRAINER=${TRAINER:-demo}
log() { echo "$(date '+%H:%M:%S') [recipe-fsdd] $*"; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  [ -n "${FSDD:-}" ] || { echo "set FSDD to a clone of github.com/Jakobovski/free-spoken-digit-dataset" >&2; exit 2; }
  log "stage 0: connected digits from $FSDD into $DATA"
  $ASR_ZOO prepare fsdd --src "$FSDD" --out "$DATA"
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  for seed in $SEEDS; do
    for norm in global utterance; do
      log "stage 1: CTC, $norm normalisation, seed $seed ($STEPS steps)"
      train_in_background "$RUNS/ctc_${norm}-s$seed" preset=small_corpus trainer="$TRAINER" data=fsdd \
        data.root="$DATA" trainer.max_steps="$STEPS" trainer.val_every_n_epochs=1 seed="$seed" \
        data.features.normalization="$norm" ${TRAIN_ARGS:-}
    done
  done
  wait
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: every run on test"
  evaluate_missing test "$RUNS"/*-s*
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: table (seeds grouped, paired bootstrap against global normalisation)"
  $ASR_ZOO compare "$RUNS"/*-s* --split test --baseline "$RUNS/ctc_global-s0" --out "$RUNS-report/"
fi
