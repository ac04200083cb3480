#!/usr/bin/env bash
# One device call for issue 4: `ttt-infer verify` at the issue's full sizes (1b random-init, Mamba
# backbone, TTT-Linear and TTT-MLP, fp16 and bf16, prefill B=32 T=512, decode B=32 one token in +
# 512 steps), candidate = the kernels backend; before it, the TK prefill extension is built if it is
# not there yet, and the harness's own GPU tests run.
#
#   run(command="bash scripts/device_verify.sh", timeout_s=600,
#       carry=["third_party/ThunderKittens/include", "third_party/ThunderKittens/prototype"])
#
# Everything lands in $OUT/verify/: summary.json, ttt_{linear,mlp}_{prefill,decode}.png,
# verify_combined.png, log.txt (7 files, one folder down: what the device tool brings back). Commit
# them under results/h200/verify/. summary.json and the figures are rewritten after each layer type,
# so a run cut short keeps the layer types it finished ("complete": false).
#
# Extra arguments go to `ttt-infer verify`. If one call cannot hold both layer types, run two:
#   VERIFY_OUT=$OUT/linear bash scripts/device_verify.sh --layer-types linear
#   VERIFY_OUT=$OUT/mlp SKIP_TESTS=1 bash scripts/device_verify.sh --layer-types mlp
# Environment: SKIP_TESTS=1 skips the GPU tests; BUDGET_S (default 570) is the time for the whole
# script, verify gets what the build and the tests left. Exit status is verify's: 0 all checks that
# ran passed, 1 a check failed or the kernels cannot run, 2 bad arguments (124: out of time).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
T0=$(date +%s)
OUT="${OUT:-$PWD/out}"
DEST="${VERIFY_OUT:-$OUT/verify}"
mkdir -p "$DEST"
LOG="$DEST/log.txt"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
elapsed() { echo $(($(date +%s) - T0)); }

{
  echo "== $(date -u +%FT%TZ) device_verify.sh, git $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$PY" -m ttt_infer.cli env
  if "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" &&
    ! "$PY" -c "from ttt_infer.kernels import prefill; prefill.check_available()" 2>/dev/null; then
    echo "== building the TK prefill extension"
    "$PY" -m ttt_infer.kernels.build > "$DEST/build.tmp" 2>&1
    echo "build rc=$? after $(elapsed) s"
    tail -n 5 "$DEST/build.tmp"
    rm -f "$DEST/build.tmp"
  fi
  "$PY" -c "from ttt_infer.kernels import KernelBackend; KernelBackend(); print('kernels backend: available')" 2>&1 | tail -n 3
  if [ "${SKIP_TESTS:-0}" != 1 ]; then
    echo "== harness GPU tests (tests/gpu/test_verify_gpu.py) at $(elapsed) s"
    timeout "${TEST_TIMEOUT:-150}" "$PY" -m pytest -q -p no:cacheprovider tests/gpu/test_verify_gpu.py 2>&1 | tail -n 30
  fi
  echo "== ttt-infer verify $* at $(elapsed) s"
} 2>&1 | tee "$LOG"

LEFT=$((${BUDGET_S:-570} - $(elapsed)))
if [ "$LEFT" -lt 60 ]; then
  echo "== only $LEFT s left: verify not started" | tee -a "$LOG"
  exit 124
fi
# progress bars off: the log is a file; each layer type/dtype prints its results as it finishes
timeout "$LEFT" "$PY" -m ttt_infer.cli verify --out "$DEST" --no-progress "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
echo "== verify exit status $rc after $(elapsed) s" | tee -a "$LOG"
ls -la "$DEST"
exit "$rc"
