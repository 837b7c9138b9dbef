#!/usr/bin/env bash
# Imputer on the synthetic corpus: CTC expert -> align -> Imputer-DP and Imputer-IM -> eval -> table.
#
#   recipes/synth/run.sh [--stage N] [--stop-stage M]        (or: make recipe-synth-imputer)
#
# Environment: ASR_ZOO (the CLI, default: asr-zoo), DATA (default data/synth), RUNS (default
# runs/synth-imputer), EXPERT (the CTC run dir, default $RUNS/ctc), TRAIN_ARGS (extra overrides for every training run), EXPERT_ARGS / IMPUTER_ARGS
# (extra overrides for the expert / the Imputers), PREPARE_ARGS (e.g. "--num-train 200").
# Every stage is resumable: finished runs and alignments are skipped on rerun.
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
parse_stage_options "$@"
ASR_ZOO=${ASR_ZOO:-asr-zoo}
DATA=${DATA:-data/synth}
RUNS=${RUNS:-runs/synth-imputer}
EXPERT=${EXPERT:-$RUNS/ctc}  # the CTC expert's run dir (`make` passes the demo's run: no retraining)
TRAIN_ARGS=${TRAIN_ARGS:-trainer=demo encoder=conformer}
log() { echo "$(date '+%H:%M:%S') [recipe-synth-imputer] $*"; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: synthesise the corpus into $DATA"
  $ASR_ZOO prepare synth --out "$DATA" ${PREPARE_ARGS:-}
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: train the CTC expert"
  $ASR_ZOO train data=synth data.root="$DATA" objective=ctc run_dir="$EXPERT" $TRAIN_ARGS ${EXPERT_ARGS:-}
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: Viterbi-align the training data with the expert"
  $ASR_ZOO align "$EXPERT" --split train
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for objective in imputer_dp imputer_im; do
    log "stage 3: train $objective from the expert"
    $ASR_ZOO train data=synth data.root="$DATA" objective=$objective objective.expert="$EXPERT" \
      run_dir="$RUNS/$objective" $TRAIN_ARGS ${IMPUTER_ARGS:-}
  done
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for run in "$EXPERT" "$RUNS/imputer_dp" "$RUNS/imputer_im"; do
    log "stage 4: evaluate $run"
    $ASR_ZOO eval "$run" --split test
  done
fi
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: comparison table"
  $ASR_ZOO compare "$EXPERT" "$RUNS/imputer_dp" "$RUNS/imputer_im" --split test --out "$RUNS/table"
fi
