# Sourced by the recipes: their --stage N / --stop-stage M options (icefall's convention: run the
# stages N..M; each stage is resumable, so rerunning a range is safe).
stage=0; stop_stage=100
parse_stage_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --stage) stage=$2; shift 2 ;;
      --stop-stage) stop_stage=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
}

# evaluate_missing SPLIT RUN...: decode each run on SPLIT unless its results are there (resumable).
# Uses the caller's ASR_ZOO and log.
evaluate_missing() {
  local split=$1 run; shift
  for run in "$@"; do
    [ -f "$run/results/$split.json" ] && continue
    log "evaluate $run on $split"
    OMP_NUM_THREADS=1 $ASR_ZOO eval "$run" --split "$split"
  done
}

# train_in_background RUN_DIR OVERRIDES...: `asr-zoo train` at 1 thread in the background, at most
# WORKERS at once (waits for one to end first). Uses the caller's ASR_ZOO and WORKERS; `wait` at the end.
train_in_background() {
  local run_dir=$1; shift
  OMP_NUM_THREADS=1 $ASR_ZOO train trainer.num_threads=1 run_dir="$run_dir" "$@" &
  [ "$(jobs -rp | wc -l)" -lt "$WORKERS" ] || wait -n
}
