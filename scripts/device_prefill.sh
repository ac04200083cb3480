#!/usr/bin/env bash
# One device call: build the TK prefill extension (native + sm80 PTX variant), run the GPU tests,
# compute-sanitizer memcheck + racecheck on a small shape, and the op benchmark; logs under $OUT.
# Usage (device tool): carry third_party/ThunderKittens/include, third_party/ThunderKittens/prototype, .whl
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16
if ls .whl/fla_core-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core-*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"
t0=$(date +%s)
( python3 -m ttt_infer.kernels.build > "$OUT/build_native.log" 2>&1; echo "native rc=$?" >> "$OUT/build_native.log" ) &
( python3 -m ttt_infer.kernels.build --variant sm80 > "$OUT/build_sm80.log" 2>&1; echo "sm80 rc=$?" >> "$OUT/build_sm80.log" ) &
wait
echo "build: $(( $(date +%s) - t0 )) s"; tail -n 2 "$OUT/build_native.log" "$OUT/build_sm80.log"
grep -h "registers\|spill" "$OUT/build_native.log" | sort | uniq -c | head -20
TT=${TEST_TIMEOUT:-170}
timeout "$TT" python3 -m pytest -q -s -p no:cacheprovider --timeout=60 tests/gpu/test_prefill.py tests/test_prefill_errors.py > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?"; grep -E "passed|failed|error" "$OUT/pytest.log" | tail -3; grep -E "^FAILED|Error" "$OUT/pytest.log" | head -12
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout "${BENCH_TIMEOUT:-200}" python3 scripts/bench_prefill_op.py --out "$OUT/prefill_op.jsonl" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench rc=$?"
for tool in memcheck racecheck; do
  timeout "${SAN_TIMEOUT:-100}" compute-sanitizer --tool $tool --error-exitcode 9 python3 scripts/sanitize_prefill.py > "$OUT/sanitizer_$tool.log" 2>&1
  echo "$tool rc=$?"; tail -n 3 "$OUT/sanitizer_$tool.log"
done
grep -A 100 "^| impl" "$OUT/bench.log"
