#!/usr/bin/env bash
# A short diagnostic device call: build the TK extension, profile one layer's prefill and decode step
# (where the time outside the TTT op goes), the decode-gap probe, and the kernel GPU tests.
#   run(command="bash scripts/device_probe.sh", carry=["third_party/ThunderKittens/include", ".whl"])
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0a}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
done_step() { local rc=$?; echo "[$(( $(date +%s) - T0 )) s] $1 rc=$rc"; }
python3 -m ttt_infer.kernels.build > "$OUT/build.log" 2>&1; done_step build
for lt in linear mlp; do
  timeout 60 python3 scripts/profile_layer.py --layer-type "$lt" --batch 16 --seq 8192 --rows 30 > "$OUT/profile_$lt.txt" 2>&1
  done_step "profile $lt"
done
for lt in linear mlp; do
  timeout 90 python3 scripts/probe_decode_gap.py --layer-type "$lt" --batch 256 --dtype fp16 >> "$OUT/probe.txt" 2>&1
  done_step "probe $lt"
done
cat "$OUT/probe.txt" | grep -v Warning | tail -4
timeout "${TESTS_S:-200}" python3 -m pytest -q -p no:cacheprovider --timeout=60 -m gpu \
  tests/gpu/test_prefill.py tests/gpu/test_decode_gpu.py > "$OUT/gpu_tests.log" 2>&1
done_step "gpu tests"; grep -E "passed|failed" "$OUT/gpu_tests.log" | tail -2; grep -E "^FAILED|^ERROR" "$OUT/gpu_tests.log" | head -8
for lt in linear mlp; do echo "== $lt"; grep -E "Self CUDA time total|^ +[a-z_:]" "$OUT/profile_$lt.txt" | head -0; sed -n '/== prefill/,/Self CUDA time total/p' "$OUT/profile_$lt.txt" | cut -c1-60,100-200 | head -34; done
