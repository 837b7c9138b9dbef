#!/usr/bin/env bash
# The equal-compute control for "Imputer-DP beats CTC" (docs/results.md): CTC experts of EXPERT_STEPS
# steps, Imputer-DP trained DP_STEPS more steps from each, and CTC trained EXPERT_STEPS + DP_STEPS
# steps from scratch, x 3 seeds at preset=demo (conf/sweeps/imputer_equal_compute.yaml); every run
# evaluated on test; the table with paired-bootstrap intervals against the equal-compute CTC.
#
#   recipes/synth/equal_compute.sh [--stage N] [--stop-stage M]
#
# Environment: ASR_ZOO (the CLI, default: asr-zoo), DATA (default data/synth), RUNS (default
# runs/equal-compute, as in the sweep YAML), SEEDS (default "0 1 2"), WORKERS (default 2),
# EXPERT_STEPS and DP_STEPS (default 3000 each, as the sweep YAML). Imputer-DP is trained twice per
# seed: with Eq. 11 (imputer_dp_eq11-s*) and with the masked frames only
# (objective.observed_loss_weight=0, imputer_dp-s*), the loss `make demo` trains at its shorter budget.
# For the seeds in POLICY_SEEDS (default: SEEDS; a subset of SEEDS, whose experts stage 2 aligns)
# the same Eq. 11 training also runs with bernoulli and uniform masking
# (imputer_dp_eq11_{bernoulli,uniform}-s*) and as Imputer-IM (imputer_im_eq11-s*): the paper's
# masking-policy and IM comparisons at this size, tabled against block-masked DP.
# Every stage is resumable: rerun the same command.
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
parse_stage_options "$@"
ASR_ZOO=${ASR_ZOO:-asr-zoo}
DATA=${DATA:-data/synth}
RUNS=${RUNS:-runs/equal-compute}
SEEDS=${SEEDS:-0 1 2}
POLICY_SEEDS=${POLICY_SEEDS:-$SEEDS}
WORKERS=${WORKERS:-2}
EXPERT_STEPS=${EXPERT_STEPS:-3000}
DP_STEPS=${DP_STEPS:-3000}
log() { echo "$(date '+%H:%M:%S') [recipe-synth-equal-compute] $*"; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: synthesise the corpus into $DATA"
  $ASR_ZOO prepare synth --out "$DATA"
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: sweep CTC for $EXPERT_STEPS and $((EXPERT_STEPS + DP_STEPS)) steps x seeds ($WORKERS workers, 1 thread each)"
  $ASR_ZOO sweep conf/sweeps/imputer_equal_compute.yaml --workers "$WORKERS" --threads 1
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  dp() {  # dp NAME SEED OVERRIDES...: DP_STEPS Imputer-DP steps from the seed's expert, in the background
    local name=$1 seed=$2; shift 2
    train_in_background "$RUNS/$name-s$seed" preset=demo data=synth data.root="$DATA" trainer.max_steps="$DP_STEPS" \
      seed="$seed" objective=imputer_dp objective.expert="$RUNS/ctc_$EXPERT_STEPS-s$seed" "$@"
  }
  for seed in $SEEDS; do
    log "stage 2: Imputer-DP, $DP_STEPS steps from $RUNS/ctc_$EXPERT_STEPS-s$seed (Eq. 11; masked frames only)"
    OMP_NUM_THREADS=1 $ASR_ZOO align "$RUNS/ctc_$EXPERT_STEPS-s$seed" --split train
    dp imputer_dp_eq11 "$seed"
    dp imputer_dp "$seed" objective.observed_loss_weight=0
  done
  for seed in $POLICY_SEEDS; do
    log "stage 2: Eq. 11 with bernoulli and uniform masking, and Imputer-IM, from $RUNS/ctc_$EXPERT_STEPS-s$seed"
    dp imputer_dp_eq11_bernoulli "$seed" objective.masking=bernoulli
    dp imputer_dp_eq11_uniform "$seed" objective.masking=uniform
    dp imputer_im_eq11 "$seed" objective=imputer_im
  done
  wait
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: every run on test"
  evaluate_missing test "$RUNS"/*-s*
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "stage 4: tables and plots (seeds grouped, paired bootstrap against CTC at equal steps; policies and IM against block-masked DP)"
  $ASR_ZOO compare "$RUNS"/*-s* --split test --baseline "$RUNS/ctc_$((EXPERT_STEPS + DP_STEPS))-s0" \
    --out "$RUNS-report/"
  $ASR_ZOO compare "$RUNS"/imputer_*eq11*-s* --split test --baseline "$RUNS/imputer_dp_eq11-s0" \
    --out "$RUNS-policies-report/"
fi
