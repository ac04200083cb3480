#!/usr/bin/env bash
# A short device call between full runs: build the TK extension, the kernel tests (glue kernels under
# every dtype, prefill and decode GPU tests), one layer's profile (where prefill time goes), and a
# quick full-model benchmark (prefill B=16 T=8k, decode B=1/16/256, both TTT layer types).
#   run(command="bash scripts/device_quick.sh", carry=["third_party/ThunderKittens/include", ".whl"])
# QUICK_TESTS overrides the test files; set it empty to skip the tests.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0a}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
done_step() { local rc=$?; echo "[$(( $(date +%s) - T0 )) s] $1 rc=$rc"; }
python3 -m ttt_infer.kernels.build > "$OUT/build.log" 2>&1; done_step build
TESTS=${QUICK_TESTS-tests/test_glue.py tests/gpu/test_prefill.py tests/gpu/test_decode_gpu.py}
if [ -n "$TESTS" ]; then
  # shellcheck disable=SC2086  # a list of files
  timeout "${TESTS_S:-200}" python3 -m pytest -q -p no:cacheprovider --timeout=60 $TESTS > "$OUT/tests.log" 2>&1
  done_step tests; grep -E "passed|failed" "$OUT/tests.log" | tail -1; grep -E "^FAILED|^ERROR" "$OUT/tests.log" | head -8
fi
timeout 60 python3 scripts/profile_layer.py --layer-type linear --batch 16 --seq 8192 --rows 25 > "$OUT/profile_linear.txt" 2>&1
done_step profile
for dt in fp16 bf16; do
  timeout "${BENCH_S:-150}" python3 -m ttt_infer.cli bench --out "$OUT/bench_quick.jsonl" --models ttt-linear,ttt-mlp \
    --backends kernels --dtype $dt --kinds prefill,decode --prefill-lens 8192 --prefill-batches 16 \
    --decode-batches 1,16,256 --decode-gen-lens 32 --repeats 2 --no-progress > "$OUT/bench_$dt.log" 2>&1
  done_step "bench $dt"
done
sed -n '/== prefill/,/Self CUDA time total/p' "$OUT/profile_linear.txt" | cut -c1-58,100-162 | head -32
python3 - "$OUT/bench_quick.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("status") == "ok":
        print(f"{r['model']:11} {r['kind']:8} {r['dtype']} B={r['batch']:4} T={r['prompt_len']:5} ms={r['ms']:9.2f} "
              f"ms/step={r.get('decode_ms_per_step', 0):7.3f} frac={r.get('fraction_of_limit') or 0:.2f}")
    elif r.get("status"):
        print(r.get("model"), r.get("kind"), r.get("status"), str(r.get("reason", r.get("error", "")))[:200])
PY
