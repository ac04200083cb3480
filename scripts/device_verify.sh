#!/usr/bin/env bash
# One device call: `ttt-infer verify` at the issue's full sizes (1b random-init, Mamba backbone,
# TTT-Linear and TTT-MLP, fp16 and bf16, prefill B=32 T=512, decode B=32 one token in + 512 steps),
# candidate = the kernels backend, plus the harness's own GPU tests. Everything lands in
# $OUT/verify/ (summary.json, the four figures, verify_combined.png, log.txt: 7 files, one folder
# down, within what the device tool brings back). Commit them under results/h200/verify/.
#
#   run(command="bash scripts/device_verify.sh", timeout_s=600)
#
# Extra arguments go to `ttt-infer verify` (e.g. `--layer-types linear` to split the run in two calls
# if it does not fit in one; then use a different VERIFY_OUT per call). The exit status is verify's:
# 0 all checks that ran passed, 1 a check failed or the kernels cannot run, 2 bad arguments.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/out}"
DEST="${VERIFY_OUT:-$OUT/verify}"
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"

{
  echo "== $(date -u +%FT%TZ) device_verify.sh at $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$PY" -m ttt_infer.cli env
  echo "== harness GPU tests (tests/gpu/test_verify_gpu.py)"
  "$PY" -m pytest -q -p no:cacheprovider tests/gpu/test_verify_gpu.py 2>&1 | tail -n 30
  echo "== ttt-infer verify"
} 2>&1 | tee "$DEST/log.txt"

# progress bars off: the log is a file; per-layer/dtype results are printed as they finish
"$PY" -m ttt_infer.cli verify --out "$DEST" --no-progress "$@" 2>&1 | tee -a "$DEST/log.txt"
rc=${PIPESTATUS[0]}
echo "== verify exit status $rc" | tee -a "$DEST/log.txt"
ls -la "$DEST"
exit "$rc"
