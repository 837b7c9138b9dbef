#!/usr/bin/env bash
# The five attention types on long utterances (issue #16 item 5; docs/results.md, "Attention types on
# long utterances"): CTC with softmax / linear / clustered / i-clustered / pooled attention x 3 seeds on
# the long-utterance synthetic corpus (13-35 s, 340-875 encoder frames), every run decoded on test,
# the thesis' evaluation-time swap (Table 5.2: each softmax-trained model decoded with the other four
# types, no retraining), and one table with paired-bootstrap intervals against softmax.
#
#   recipes/synth/attention_long.sh [--stage N] [--stop-stage M]     (or: make recipe-synth-attention-long)
#
# Environment: ASR_ZOO (the CLI, default: asr-zoo), WORKERS (runs at once, 1 thread each; default 2).
# The corpus (data/synth-long), the runs (runs/sweep-long/ctc-<attention>-s<seed>) and the budget
# (1000 steps of 80 s batches, preset=demo) are those of conf/data/synth_long.yaml and
# conf/sweeps/attention_long_x_seeds.yaml. Every stage is resumable: rerun the same command.
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
parse_stage_options "$@"
ASR_ZOO=${ASR_ZOO:-asr-zoo}
WORKERS=${WORKERS:-2}
DATA=data/synth-long
RUNS=runs/sweep-long
SWAPS="linear clustered iclustered pooled"
log() { echo "$(date '+%H:%M:%S') [recipe-synth-attention-long] $*"; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: synthesise the long-utterance corpus into $DATA"
  $ASR_ZOO prepare synth --out "$DATA" --min-seconds 15 --max-seconds 35 --num-train 300 --num-dev 60 --num-test 100
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: sweep the attention types x seeds with CTC ($WORKERS workers, 1 thread each), each run decoded on test"
  $ASR_ZOO sweep conf/sweeps/attention_long_x_seeds.yaml --workers "$WORKERS" --threads 1 --eval-split test
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for run in "$RUNS"/ctc-softmax-s*; do
    for attention in $SWAPS; do
      [ -f "$run/results/test@attention=$attention.json" ] && continue
      log "stage 2: decode $run on test with attention=$attention (trained with softmax)"
      OMP_NUM_THREADS=1 $ASR_ZOO eval "$run" --split test attention="$attention" &
      [ "$(jobs -rp | wc -l)" -lt "$WORKERS" ] || wait -n
    done
  done
  wait
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: table and plot (seeds grouped, paired bootstrap against softmax)"
  $ASR_ZOO compare "$RUNS"/ctc-*-s* --split test --baseline ctc/softmax --out "$RUNS-report/"
fi
