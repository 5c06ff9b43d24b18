#!/usr/bin/env bash
# make gpu-check: the CUDA path on a GPU machine, in stages with their own timeouts (all of
# them together under 5 minutes). Made for a bare machine: python3 with torch (no hydra,
# omegaconf, submitit, wandb, no .venv): `make gpu-check PY=python3`, or run this directly.
#
#   scripts/gpu_check.sh            # on the GPU; writes to $OUT if set, else results/gpu-check
#   scripts/gpu_check.sh --cpu      # every stage, tiny, on the CPU: checks this script only
#
# What lands in the folder (at most 8 files, so a device's copy-back takes them all):
#   gpu-check.log   every stage's full output     stages.csv   stage, exit status, seconds
#   quick.csv       one row per check (scripts/gpu_check.py)
#   bench-cuda.csv  N=L=128, T=2L: BP / PC / PC-ALM graph vs eager; 1 model vs a mixed stack of 64
#   grid_grid.csv   the projected paper-scale Fig. 2 grid, cell by cell (grid.csv: its tiny cell)
#   bench-compiled.csv  the same cell as bench-cuda.csv with the compiled step
#   results/cost/…  the sweep plans' cost model for this GPU (pcalm/sweeps/cost.py)
# A stage that runs out of time or fails does not stop the next; the exit status is that of
# the first stage that failed (124: a timeout).
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CPU=""
[ "${1:-}" = "--cpu" ] && CPU=--cpu
DIR=${OUT:-results/gpu-check}
mkdir -p "$DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PCALM_RESULTS=$DIR/results
LOG=$DIR/gpu-check.log
: > "$LOG"
echo "stage,rc,seconds" > "$DIR/stages.csv"
STATUS=0

stage() {  # stage NAME LIMIT_S COMMAND...: run with a timeout, log, one line of outcome
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
  start=$(date +%s)
  timeout -k 5 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  echo "$name,$rc,$(( $(date +%s) - start ))" >> "$DIR/stages.csv"
  echo "   $name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$LOG"
  [ "$STATUS" = 0 ] && [ "$rc" != 0 ] && STATUS=$rc
  return 0
}

if [ -z "$CPU" ] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  $PY -c "import torch; print('error: gpu-check needs a CUDA device; torch', torch.__version__, 'sees none (--cpu: the stages on the CPU)')" >&2
  exit 2
fi
DEV=cuda; [ -n "$CPU" ] && DEV=cpu
BIG=128; [ -n "$CPU" ] && BIG=8
BENCH=(scripts/bench.py --device "$DEV" --no-naive --repeats 3 --min-time 0.2)

stage env 20 $PY scripts/gpu_check.py env $CPU --dir "$DIR"
stage quick 80 $PY scripts/gpu_check.py quick $CPU --dir "$DIR"
# the real-GPU tests without torch.compile (skipped on a CPU; compile is in quick and bench);
# no plugin autoload: a bare machine has none we need, and a half-installed one would stop it
stage tests 45 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $PY -m pytest tests/test_cuda.py -m cuda -q -rs -x -k "not compiled" -p no:cacheprovider
stage bench 45 $PY "${BENCH[@]}" --widths $BIG --depths $BIG --budget 2L --models 1,64 \
  --no-compiled --no-grid --no-calibrate --out "$DIR/bench-cuda.csv"
stage grid 50 $PY "${BENCH[@]}" --widths 8 --depths 8 --budget 16 --models 1 --no-compiled --min-time 0.05 \
  $([ -n "$CPU" ] && echo "--grid-sizes 4,6") --out "$DIR/grid.csv"
stage bench-compiled 50 $PY "${BENCH[@]}" --widths $BIG --depths $BIG --budget 2L --models 64 \
  --no-grid --no-calibrate --out "$DIR/bench-compiled.csv"
echo "gpu-check: exit $STATUS; logs and tables in $DIR" | tee -a "$LOG"
exit "$STATUS"
