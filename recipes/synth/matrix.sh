#!/usr/bin/env bash
# Objectives x attention types on the synthetic corpus, same budget each, one comparison table.
#
#   OBJECTIVES="ctc rnnt seq2seq" ATTENTIONS="softmax linear" recipes/synth/matrix.sh
#   (or: make recipe-synth-matrix OBJECTIVES=... ATTENTIONS=...)
#
# Environment: ASR_ZOO (CLI), DATA (default data/synth), RUNS (default runs/synth-matrix),
# TRAIN_ARGS (overrides for every run; default: the demo budget), PARALLEL (runs trained at once,
# each with 2/PARALLEL threads; default 1). Finished runs are skipped, so the matrix can be resumed
# or grown.
set -euo pipefail
ASR_ZOO=${ASR_ZOO:-asr-zoo}
DATA=${DATA:-data/synth}
RUNS=${RUNS:-runs/synth-matrix}
OBJECTIVES=${OBJECTIVES:-ctc rnnt seq2seq}
ATTENTIONS=${ATTENTIONS:-softmax}
TRAIN_ARGS=${TRAIN_ARGS:-trainer=demo encoder=conformer}
PARALLEL=${PARALLEL:-1}
threads=$(( $(nproc) / PARALLEL )); [ $threads -ge 1 ] || threads=1
log() { echo "$(date '+%H:%M:%S') [recipe-synth-matrix] $*"; }

$ASR_ZOO prepare synth --out "$DATA" ${PREPARE_ARGS:-}
mkdir -p "$RUNS"
runs=()
for objective in $OBJECTIVES; do
  for attention in $ATTENTIONS; do
    run="$RUNS/$objective-$attention"; runs+=("$run")
    (
      log "train + eval $objective x $attention"
      $ASR_ZOO train data=synth data.root="$DATA" objective=$objective attention=$attention run_dir="$run" \
        trainer.num_threads=$threads $TRAIN_ARGS > "$run.log" 2>&1
      $ASR_ZOO eval "$run" --split test >> "$run.log" 2>&1
    ) &
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
  done
done
wait
$ASR_ZOO compare "${runs[@]}" --split test --out "$RUNS/table"
