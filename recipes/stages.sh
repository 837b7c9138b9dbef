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
