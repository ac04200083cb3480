#!/usr/bin/env bash
# One device call for issue 5: decode kernel tests (compiled), GPU tests, then the benchmark.
# Usage on the device machine (repo root):  bash scripts/device_decode.sh
# Writes $OUT/{tests.log,errors.jsonl,decode.jsonl,bench.log}; prints the short table last.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/decode_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
TTT_DECODE_ERRLOG=$OUT/errors.jsonl timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider \
    ${PYTEST_ARGS:-tests/gpu/test_decode_gpu.py tests/test_decode_kernels.py} 2>&1 | tee "$OUT/tests.log" | tail -25
echo "tests rc=$?"
timeout ${BENCH_TIMEOUT:-330} python3 scripts/bench_decode.py --out "$OUT/decode.jsonl" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | grep -v '^{'
echo "bench rc=$?"
