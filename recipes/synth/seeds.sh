#!/usr/bin/env bash
# The seeded comparison of docs/results.md: CTC, seq2seq and RNN-T (full and pruned loss) x 3 seeds at
# `make demo`'s budget through `asr-zoo sweep` (conf/sweeps/objectives_x_seeds.yaml,
# conf/sweeps/rnnt_loss_x_seeds.yaml), then Imputer-DP from each seed's CTC expert, with Eq. 11's
# loss (imputer_dp-s*) and with the masked frames only (objective.observed_loss_weight=0:
# imputer_dp_w0-s*), the masking policies bernoulli / uniform and Imputer-IM (masked frames only for
# POLICY_SEEDS: *_w0-s*; Eq. 11 for EQ11_POLICY_SEEDS), every run evaluated on test, and the table
# with paired-bootstrap intervals against CTC.
#
#   recipes/synth/seeds.sh [--stage N] [--stop-stage M]
#
# Environment: ASR_ZOO (the CLI, default: asr-zoo), DATA (default data/synth), RUNS (default
# runs/sweep-demo, as in the sweep YAML), SEEDS (default "0 1 2"), WORKERS (default 2),
# DP_STEPS (Imputer steps after its expert, default 750, as `make demo`), POLICY_SEEDS (default
# "0 1 2"; empty: none), EQ11_POLICY_SEEDS (default "0"), RNNT (default 1; 0 skips the RNN-T sweep).
# Every stage is resumable: rerun the same command.
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
parse_stage_options "$@"
ASR_ZOO=${ASR_ZOO:-asr-zoo}
DATA=${DATA:-data/synth}
RUNS=${RUNS:-runs/sweep-demo}
SEEDS=${SEEDS:-0 1 2}
WORKERS=${WORKERS:-2}
DP_STEPS=${DP_STEPS:-750}
POLICY_SEEDS=${POLICY_SEEDS-0 1 2}
EQ11_POLICY_SEEDS=${EQ11_POLICY_SEEDS-0}
RNNT=${RNNT:-1}
log() { echo "$(date '+%H:%M:%S') [recipe-synth-seeds] $*"; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: synthesise the corpus into $DATA"
  $ASR_ZOO prepare synth --out "$DATA"
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: sweep CTC, seq2seq x seeds ($WORKERS workers, 1 thread each)"
  $ASR_ZOO sweep conf/sweeps/objectives_x_seeds.yaml --workers "$WORKERS" --threads 1
  if [ "$RNNT" = 1 ]; then
    log "stage 1: sweep RNN-T full / pruned loss x seeds"
    $ASR_ZOO sweep conf/sweeps/rnnt_loss_x_seeds.yaml --workers "$WORKERS" --threads 1
  fi
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  imputer() {  # imputer NAME SEED OVERRIDES...: DP_STEPS Imputer steps from the seed's CTC expert, in the background
    local name=$1 seed=$2; shift 2
    train_in_background "$RUNS/$name-s$seed" preset=demo data=synth data.root="$DATA" trainer.max_steps="$DP_STEPS" \
      seed="$seed" objective.expert="$RUNS/ctc-s{seed}" "$@"
  }
  w0=objective.observed_loss_weight=0
  for seed in $SEEDS; do
    log "stage 2: Imputer-DP (Eq. 11; masked frames only) from the seed-$seed CTC expert"
    OMP_NUM_THREADS=1 $ASR_ZOO align "$RUNS/ctc-s$seed" --split train
    imputer imputer_dp "$seed" objective=imputer_dp
    imputer imputer_dp_w0 "$seed" objective=imputer_dp "$w0"
  done
  for seed in $POLICY_SEEDS; do
    log "stage 2: masking policies and Imputer-IM, masked frames only, from the seed-$seed CTC expert"
    imputer imputer_dp_w0_bernoulli "$seed" objective=imputer_dp objective.masking=bernoulli "$w0"
    imputer imputer_dp_w0_uniform "$seed" objective=imputer_dp objective.masking=uniform "$w0"
    imputer imputer_im_w0 "$seed" objective=imputer_im "$w0"
  done
  for seed in $EQ11_POLICY_SEEDS; do
    log "stage 2: masking policies and Imputer-IM, Eq. 11, from the seed-$seed CTC expert"
    imputer imputer_dp_bernoulli "$seed" objective=imputer_dp objective.masking=bernoulli
    imputer imputer_dp_uniform "$seed" objective=imputer_dp objective.masking=uniform
    imputer imputer_im "$seed" objective=imputer_im
  done
  wait
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: every run on test"
  evaluate_missing test "$RUNS"/*-s*
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "stage 4: table and plot (seeds grouped, paired bootstrap against CTC)"
  $ASR_ZOO compare "$RUNS"/*-s* --split test --baseline ctc/softmax --out "$RUNS-report/"
fi
