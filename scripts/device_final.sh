#!/usr/bin/env bash
# One device call that exercises the whole package on the GPU within a short lease: build the TK
# extension, the GPU test suite, the benchmark (kernels + baselines, then a small reference-backend
# set), and the parity verification; each step under its own time limit, logs and results in $OUT.
# The device copy has no .git: pass the sha and the TK pin in so results are stamped with them,
#   run(command="TTT_INFER_GIT_SHA=<sha> TTT_INFER_TK_COMMIT=<pin> bash scripts/device_final.sh", timeout_s=580,
#       carry=["third_party/ThunderKittens/include", "third_party/ThunderKittens/prototype", ".whl"])
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/out}"; mkdir -p "$OUT/verify"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0a}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
# report a step's exit status (rc must be read before any other command runs)
done_step() { local rc=$?; echo "[$(( $(date +%s) - T0 )) s] $1 rc=$rc"; }
python3 -m ttt_infer.cli env > "$OUT/env.txt" 2>&1
python3 -m ttt_infer.kernels.build > "$OUT/build.log" 2>&1; done_step build
# the kernels first: prefill, decode, graphs; then the baselines
timeout "${TESTS_S:-180}" python3 -m pytest -v -p no:cacheprovider --timeout=45 -m gpu \
  tests/gpu/test_prefill.py tests/gpu/test_decode_gpu.py tests/gpu/test_verify_gpu.py tests/gpu/test_baselines_gpu.py \
  > "$OUT/gpu_tests.log" 2>&1
done_step "gpu tests"; grep -E "passed|failed" "$OUT/gpu_tests.log" | tail -2; grep -E "^FAILED|^ERROR" "$OUT/gpu_tests.log" | head -8
timeout "${BENCH_S:-250}" python3 -m ttt_infer.cli bench --out "$OUT/bench.jsonl" --backends kernels \
  --prefill-lens 2048,8192,32768 --pd-prompt-lens 2048,8192 --repeats 2 --no-progress > "$OUT/bench.log" 2>&1
done_step bench
timeout "${REF_S:-60}" python3 -m ttt_infer.cli bench --out "$OUT/bench.jsonl" --models ttt-linear,ttt-mlp \
  --backends reference --kinds prefill,decode --prefill-lens 2048 --decode-batches 16 --decode-gen-lens 16 \
  --repeats 1 --no-ceilings --no-progress >> "$OUT/bench.log" 2>&1
done_step "reference bench"
# shellcheck disable=SC2086  # VERIFY_ARGS is a list of options
timeout "${VERIFY_S:-150}" python3 -m ttt_infer.cli verify --out "$OUT/verify" --no-progress ${VERIFY_ARGS:-} > "$OUT/verify/log.txt" 2>&1
done_step verify; tail -n 25 "$OUT/verify/log.txt"
grep -E "^\S+\|" "$OUT/bench.log" | grep -E "prefill\||decode\|" | head -60
