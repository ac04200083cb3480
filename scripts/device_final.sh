#!/usr/bin/env bash
# The whole package on the GPU in three device calls, each under the 10-minute limit of one command
# (timings measured on the H200 in session 2; make the calls back to back so the machine stays warm;
# the reference backend's decode numbers come from the sweep, B <= 16):
#   MODE=check   build the TK extension (native + the sm80 PTX variant); the GPU tests (stops there on a
#                failure; ~280 s); compute-sanitizer memcheck + racecheck; the prefill op benchmark beside
#                fla (all four shapes)
#   MODE=verify  the full-size parity verification (`ttt-infer verify` defaults: ~140 s a layer type), the
#                decode benchmark (TTT-layer step alone, full model)
#   MODE=sweep   the default `ttt-infer bench` sweep with its figures (~6.5 min), the baseline GPU tests,
#                the glue kernels against their floors (scripts/bench_glue.py) and one layer's profile
#   MODE=glue    the fused glue kernels' tests and benchmark (with alternative conv tiles; GLUE_ARGS: more options),
#                the decode bench if DECODE_S > 0, the baseline GPU tests unless BASE_S=0
#   MODE=prefill a prefill kernel change: the prefill GPU tests, sanitizers, op bench at every shape, decode bench
#   MODE=ncu     Nsight Compute on the TTT-Linear prefill kernel (stall reasons, pipes) through a standalone harness
#   MODE=decode  a decode change: decode + glue GPU tests, the layer's pieces in CUDA graphs, the decode bench
#   MODE=step    a TTT-layer decode step kernel: its tests, compute-sanitizer on the CUDA one, the decode bench,
#                with TRACE_BATCHES the CUDA TTT-MLP step's timeline at those batches (as trace_step), with
#                SWEEP_TTT=1 the sweep's TTT kernel decode points (SWEEP_MODELS)
#   MODE=gemm    the decode GEMM: its tests, its table (candidates vs cuBLAS in CUDA graphs; GEMM_DTYPE=fp16 for
#                that dtype's entries), decode bench A/B
#   MODE=folds   the glue's folds into the decode GEMM: same-run A/B, the decode bench, decode kernel + glue tests
#   MODE=pdl     programmatic dependent launch: its tests, same-run A/B of the decode bench (TTT_INFER_PDL=0/1),
#                then the sweep's TTT decode points with the fastest setting (SWEEP_TTT=1)
#   MODE=ab      the same with another setting: AB_VAR (e.g. TTT_INFER_DECODE_SPLIT) over AB_SETTINGS, tests TESTS_K
#   MODE=ncu_step Nsight Compute on the TTT-layer decode step kernels at STEP_BATCH rows (by default TTT-MLP's
#                CUDA kernel and TTT-Linear's Triton v3; STEP_CONFIGS, e.g. linear=cu:4:8), the mini-batch's middle
#                (p = 8) and its end (p = 15: duration, L2 hit rate, and the reads' L2 hits and misses apart from
#                the stores)
#   MODE=trace_step the CUDA TTT-MLP step's timeline, CTA by CTA (scripts/trace_decode_step.py): the traced
#                kernel's GPU test, then one traced launch a point (TRACE_CONFIGS x TRACE_BATCHES x p = 8, 15)
# Everything lands in $OUT/all.tgz (the device returns at most 8 files) plus a short table on stdout.
# The device copy may carry a stale .git: pass the sha and the TK pin in so results are stamped with them,
#   run(command="MODE=check TTT_INFER_GIT_SHA=<sha> TTT_INFER_TK_COMMIT=<pin> bash scripts/device_final.sh",
#       timeout_s=595, carry=["third_party/ThunderKittens/include", ".whl"])
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/out}"; W="$OUT/all"; mkdir -p "$W/verify"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0a}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
# report a step's exit status (rc must be read before any other command runs)
done_step() { local rc=$?; echo "[$(( $(date +%s) - T0 )) s] $1 rc=$rc"; return $rc; }
# compute-sanitizer memcheck and racecheck on a script: sanitize <script> <log prefix> <default seconds>
sanitize() {
  for tool in memcheck racecheck; do
    timeout "${SAN_S:-$3}" compute-sanitizer --tool $tool --error-exitcode 9 python3 "$1" > "$W/$2_$tool.log" 2>&1
    done_step "$tool"; tail -n 2 "$W/$2_$tool.log"
  done
}
# a pytest run: run_tests <seconds> <log name> <step name> <pytest options and files...>; prints its summary line (a
# run cut by its limit: how many passed, from -v's line a test or -q's dots) and its failures; returns pytest's status
run_tests() {
  local secs=$1 log=$W/$2 name=$3 rc summary
  shift 3
  timeout "$secs" python3 -m pytest -p no:cacheprovider "$@" > "$log" 2>&1
  done_step "$name"; rc=$?
  summary=$(grep -E "passed|failed" "$log" | tail -1)
  local passed=$(( $(grep -cE ' PASSED' "$log") + $(grep -oE '^[.sxXFE]+' "$log" | tr -cd . | wc -c) ))
  echo "${summary:-cut by its limit: $passed passed}"
  grep -E " FAILED|^FAILED|^ERROR" "$log" | head -10
  return $rc
}
# the CUDA TTT-MLP step's timeline at these batches (scripts/trace_decode_step.py), one traced launch a point
trace_step() {
  timeout "${TRACE_S:-150}" python3 scripts/trace_decode_step.py --configs "${TRACE_CONFIGS:-cu:8:3,cu:8:2}" \
    --batches "$1" --positions 8,15 --out "$W/trace.jsonl" > "$W/trace.log" 2>&1
  done_step "trace"; cat "$W/trace.log"
}
# the sweep's TTT kernel decode points (`ttt-infer bench`, SWEEP_KINDS: decode and prefill+decode; SWEEP_MODELS)
sweep_ttt() {
  timeout "${SWEEP_S:-200}" python3 -m ttt_infer.cli bench --kinds "${SWEEP_KINDS:-decode,prefill_decode}" \
    --models "${SWEEP_MODELS:-ttt-linear,ttt-mlp}" --backends kernels --out "$W/bench_ttt.jsonl" --no-progress \
    > "$W/bench_ttt.log" 2>&1
  done_step "sweep, TTT kernel decode points"; tail -n 20 "$W/bench_ttt.log"
}
pack() { tar czf "$OUT/all.tgz" -C "$W" . && rm -rf "$W"; }
trap pack EXIT
python3 -m ttt_infer.cli env > "$W/env.txt" 2>&1
MODE="${MODE:-check}"

# the extension (ninja: a no-op on a warm machine that built it already); sm80 only for the tests
if [ "$MODE" != glue ] && [ "$MODE" != ncu ]; then  # glue: Triton only; ncu: its own build
  python3 -m ttt_infer.kernels.build > "$W/build_native.log" 2>&1 &
  if [ "$MODE" = check ] || [ "$MODE" = prefill ]; then python3 -m ttt_infer.kernels.build --variant sm80 > "$W/build_sm80.log" 2>&1 & fi
  wait
  python3 -c "from ttt_infer.kernels import prefill; prefill.check_available()"
  done_step build || exit 1  # without the extension the prefill tests would only skip and the bench skip TTT
fi

case "$MODE" in
check)
  grep -h "registers\|spill stores" "$W/build_native.log" | sort | uniq -c | head -12
  run_tests "${TESTS_S:-330}" gpu_tests.log "gpu tests" -q --timeout=90 --durations=15 tests/test_glue.py \
    tests/test_decode_kernels.py tests/test_prefill_errors.py tests/gpu/test_prefill.py tests/gpu/test_decode_gpu.py \
    tests/gpu/test_verify_gpu.py -k "not wgmma" || exit 1
  sanitize scripts/sanitize_prefill.py sanitizer 40
  # the opt-in Hopper wgmma kernel: its own tests, not blocking; timed below only when they pass
  run_tests "${WGMMA_S:-60}" wgmma_tests.log "wgmma tests" -q --timeout=30 tests/gpu/test_prefill.py -k wgmma \
    && WG="" || WG="--no-wgmma"
  # shellcheck disable=SC2086  # WG is one option or none
  timeout "${PREFILL_S:-75}" python3 scripts/bench_prefill_op.py $WG --out "$W/prefill_op.jsonl" --label "${LABEL:-v3}" \
    --shapes "${PREFILL_SHAPES:-16x2048,16x8192,16x32768,1x32768}" > "$W/prefill_op.log" 2>&1
  done_step "prefill op bench"
  python3 scripts/bench_prefill_op.py --report "$W/prefill_op.jsonl" | head -20
  ;;
prefill)
  # a prefill kernel change: its GPU tests (both builds), the sanitizers, the op bench at every shape, then the
  # decode bench (TTT-layer step, full model); ~5 min
  grep -h "registers\|spill stores" "$W/build_native.log" | sort | uniq -c | head -12
  run_tests "${TESTS_S:-200}" prefill_tests.log "prefill tests" -q --timeout=90 --durations=5 tests/test_prefill_errors.py \
    tests/gpu/test_prefill.py
  sanitize scripts/sanitize_prefill.py sanitizer 60
  timeout "${PREFILL_S:-120}" python3 scripts/bench_prefill_op.py --out "$W/prefill_op.jsonl" --label "${LABEL:-run}" \
    --shapes "${PREFILL_SHAPES:-16x2048,16x8192,16x32768,1x32768}" > "$W/prefill_op.log" 2>&1
  done_step "prefill op bench"
  if [ "${DECODE_S:-100}" -gt 0 ]; then
    timeout "${DECODE_S:-100}" python3 scripts/bench_decode.py --out "$W/decode.jsonl" \
      --batches "${DECODE_BATCHES:-1,16,64,256,512}" --no-reference > "$W/decode.log" 2>&1
    done_step "decode bench"
    tail -n 22 "$W/decode.log"
  fi
  python3 scripts/bench_prefill_op.py --report "$W/prefill_op.jsonl" | head -24
  ;;
ncu)
  # where the TTT-Linear prefill kernel's issue slots go: a standalone launch (scripts/prefill_harness.cu, no
  # torch) under Nsight Compute (full set at B=16 T=2048, the per-SASS-line stall samples as CSV; warp states
  # at B=1), then the step time against the CTAs sharing an SM (1, 2, 3, 4 a SM through unused dynamic shared
  # memory; B=33: 1056 CTAs = whole waves of 132 SMs for 1, 2 and 4); ~2 min
  nvcc -std=c++20 -O3 --expt-relaxed-constexpr --expt-extended-lambda -arch=sm_90a -lineinfo \
    -I "$(python3 -c 'from ttt_infer.env import tk_root; print(tk_root())')/include" -I csrc \
    scripts/prefill_harness.cu -o /tmp/prefill_harness > "$W/harness_build.log" 2>&1
  done_step "harness build" || exit 1
  timeout "${NCU_S:-150}" ncu --set full --import-source yes -k regex:ttt_linear -c 1 -o "$W/ncu_b16" -f \
    /tmp/prefill_harness 16 2048 > "$W/ncu_run.log" 2>&1
  done_step "ncu full"
  ncu -i "$W/ncu_b16.ncu-rep" --page details > "$W/ncu_b16.txt" 2>&1
  ncu -i "$W/ncu_b16.ncu-rep" --page source --csv --print-source sass > "$W/ncu_b16_sass.csv" 2>&1
  timeout 60 ncu --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    -k regex:ttt_linear -c 1 /tmp/prefill_harness 1 2048 > "$W/ncu_b1.txt" 2>&1
  done_step "ncu B=1"
  for v in "" 1; do  # the default kernel, then (HARNESS_V4=1) the same kernel with v4's layouts
    echo "== HARNESS_V4=$v"
    for x in 0 36 60 100; do HARNESS_V4=$v /tmp/prefill_harness 33 4096 4 $x; done
    HARNESS_V4=$v /tmp/prefill_harness 16 8192 6
    HARNESS_V4=$v /tmp/prefill_harness 1 32768 3
  done | tee "$W/occupancy.txt"
  grep -E "Stall|Issued|Eligible|No Eligible|Pipe|Executed Ipc|Warp Cycles|Bank|Frequency" "$W/ncu_b16.txt" | head -60
  grep -E "Warp Cycles|Eligible|Issued" "$W/ncu_b1.txt" | head
  ;;
verify)
  # shellcheck disable=SC2086  # VERIFY_ARGS is a list of options
  timeout "${VERIFY_S:-540}" python3 -m ttt_infer.cli verify --out "$W/verify" --no-progress ${VERIFY_ARGS:-} \
    > "$W/verify/log.txt" 2>&1
  done_step verify
  if [ "${DECODE_S:-100}" -gt 0 ]; then
    timeout "${DECODE_S:-100}" python3 scripts/bench_decode.py --out "$W/decode.jsonl" \
      --batches "${DECODE_BATCHES:-1,16,64,256,512}" --no-reference > "$W/decode.log" 2>&1
    done_step "decode bench"
    tail -n 22 "$W/decode.log"
  fi
  tail -n 40 "$W/verify/log.txt"
  ;;
sweep)
  # RESUME=<jsonl>: start from those rows (the sweep measures only the points missing there)
  if [ -n "${RESUME:-}" ]; then cp "$RESUME" "$W/bench.jsonl"; fi
  if [ "${GLUE_TEST_S:-0}" -gt 0 ]; then
    run_tests "$GLUE_TEST_S" glue_tests.log "glue tests" -q --timeout=60 tests/test_glue.py
  fi
  timeout "${SWEEP_S:-530}" python3 -m ttt_infer.cli bench --out "$W/bench.jsonl" --figures --no-progress \
    > "$W/bench.log" 2>&1
  done_step "bench sweep"
  if [ $(( $(date +%s) - T0 )) -gt 450 ]; then grep -E "^\S+\|" "$W/bench.log" | head -80; exit 0; fi  # no time for the extras
  if [ "${BASE_S:-150}" -gt 0 ]; then
    run_tests "${BASE_S:-150}" baselines_tests.log "baseline tests" -q --timeout=30 tests/gpu/test_baselines_gpu.py
  fi
  # where the full model's prefill time goes now: each glue kernel against its floor, one layer's profile
  timeout "${GLUE_S:-40}" python3 scripts/bench_glue.py --out "$W/glue.jsonl" > "$W/glue.log" 2>&1
  done_step "glue bench"; tail -n 8 "$W/glue.log"
  timeout "${PROFILE_S:-40}" python3 scripts/profile_layer.py --batch 16 --seq 8192 --rows 25 > "$W/profile_linear.txt" 2>&1
  done_step profile
  grep -E "^\S+\|" "$W/bench.log" | head -80
  ;;
glue)
  # the fused glue kernels on the GPU (tests, then each against its floor incl. other conv tiles), the baselines
  run_tests "${GLUE_TEST_S:-60}" glue_tests.log "glue tests" -q --timeout=60 tests/test_glue.py
  # shellcheck disable=SC2086  # GLUE_ARGS is a list of options
  timeout "${GLUE_S:-80}" python3 scripts/bench_glue.py --out "$W/glue.jsonl" \
    --conv-tiles "${CONV_TILES:-32x256x8,64x128x8,64x256x16,16x512x8,32x128x4}" ${GLUE_ARGS:-} > "$W/glue.log" 2>&1
  done_step "glue bench"; cat "$W/glue.log"
  if [ "${DECODE_S:-0}" -gt 0 ]; then  # the full-model decode bench too (a glue change that touches decode)
    timeout "$DECODE_S" python3 scripts/bench_decode.py --out "$W/decode.jsonl" \
      --batches "${DECODE_BATCHES:-1,16,64,256,512}" --no-reference > "$W/decode.log" 2>&1
    done_step "decode bench"; tail -n 22 "$W/decode.log"
  fi
  if [ "${BASE_S:-150}" -gt 0 ]; then
    run_tests "${BASE_S:-150}" baselines_tests.log "baseline tests" -q --timeout=30 tests/gpu/test_baselines_gpu.py
  fi
  ;;
decode)
  # a decode change: the decode kernel, whole-model decode and glue GPU tests, the layer's pieces timed inside
  # CUDA graphs (scripts/bench_decode_layer.py: GEMMs in two weight layouts, each glue kernel at T = 1; at
  # PART_BATCHES, e.g. "16 256 512" for where the large-batch step goes), the decode bench; ~5 min
  # the whole-model GPU tests first (they run every decode path the bench runs), one line a test (-v), so a
  # run cut by its time limit still says which tests passed (DECODE_TEST_FILES: other test files)
  # shellcheck disable=SC2086  # DECODE_TEST_FILES is a list of files
  # (DECODE_TESTS_K: a -k selection of them)
  run_tests "${TESTS_S:-280}" decode_tests.log "decode tests" -v --timeout=90 ${DECODE_TESTS_K:+-k "$DECODE_TESTS_K"} \
    ${DECODE_TEST_FILES:-tests/gpu/test_decode_gpu.py tests/test_gemm.py tests/test_glue.py tests/test_decode_kernels.py}
  # PART_ARGS: more bench_decode_layer options (e.g. --conv-tiles 512x4,1024x8 --preblock-warps 4,16)
  for b in ${PART_BATCHES:-1 16 64}; do
    # shellcheck disable=SC2086  # PART_ARGS is a list of options
    timeout 60 python3 scripts/bench_decode_layer.py --batch "$b" --out "$W/decode_layer.jsonl" ${PART_ARGS:-} \
      > "$W/decode_layer_B$b.log" 2>&1
    done_step "layer parts B=$b"
  done
  timeout "${DECODE_S:-100}" python3 scripts/bench_decode.py --out "$W/decode.jsonl" \
    --batches "${DECODE_BATCHES:-1,16,64,256,512}" --no-reference > "$W/decode.log" 2>&1
  done_step "decode bench"
  for b in ${PART_BATCHES:-1 16 64}; do [ "$b" = 1 ] || grep -E "^part|nk |^[a-z_ ()+,]+ +[0-9.]+ +- " "$W/decode_layer_B$b.log"; done
  tail -n 12 "$W/decode.log"
  ;;
step)
  # a TTT-layer decode step kernel change (the CUDA TTT-MLP kernel): its GPU tests (forced and through the
  # tuner, whole-model decode), compute-sanitizer memcheck + racecheck on it, the decode bench (the TTT-layer
  # step alone with every candidate's tuning time, then the full model); ~5 min
  # the forced CUDA-kernel cases and the whole-model graph tests first, then every TTT-MLP kernel test
  run_tests "${TESTS_S:-100}" step_tests.log "step tests" -v --timeout=90 tests/gpu/test_decode_gpu.py \
    -k "${TESTS_K:-cuda_mlp or graph}"
  run_tests "${TESTS2_S:-120}" step_tests2.log "step tests 2" -v --timeout=90 tests/test_decode_kernels.py \
    tests/gpu/test_decode_gpu.py -k "${TESTS2_K:-mlp and not cuda_mlp}"
  sanitize scripts/sanitize_decode.py sanitizer_decode 60
  timeout "${DECODE_S:-150}" python3 scripts/bench_decode.py --out "$W/decode.jsonl" --kinds "${STEP_KINDS:-mlp}" \
    --batches "${DECODE_BATCHES:-1,16,64,256,512}" --layer-batches "${LAYER_BATCHES:-64,512}" --no-reference > "$W/decode.log" 2>&1
  done_step "decode bench"; tail -n 14 "$W/decode.log"
  if [ -n "${TRACE_BATCHES:-}" ]; then trace_step "$TRACE_BATCHES"; fi
  if [ "${SWEEP_TTT:-0}" = 1 ]; then sweep_ttt; fi
  ;;
gemm)
  # the decode GEMM (kernels/gemm.py): its tests compiled (TESTS_K: a -k selection), its candidates against
  # cuBLAS inside CUDA graphs at B = 16 and 64 (writing the table it runs from: gemm_table.json), then the
  # full-model decode bench with GEMM_BASE (a TTT_INFER_GEMM value: cuBLAS only by default, or the shipped
  # table's path) and with the new table, alternating (same-run A/B; LAYER_BATCHES: the step alone, none by
  # default); ~8 min
  run_tests "${TESTS_S:-150}" gemm_tests.log "gemm tests" -q --timeout=120 tests/test_gemm.py -k "${TESTS_K:-}"
  # GEMM_DTYPE=fp16: that dtype's entries, merged into a copy of the shipped table (the other dtype's entries kept)
  cp ttt_infer/kernels/gemm_tables/nvidia-h200.json "$W/gemm_table.json"
  for b in ${PART_BATCHES:-16 64}; do
    timeout "${PART_S:-120}" python3 scripts/bench_decode_layer.py --batch "$b" --out "$W/decode_layer.jsonl" \
      --dtype "${GEMM_DTYPE:-bf16}" --write-table "$W/gemm_table.json" > "$W/decode_layer_B$b.log" \
      2> "$W/decode_layer_B$b.err"
    done_step "layer parts + table B=$b"
  done
  for rep in 1 2; do
    for how in "${GEMM_BASE:-cublas}" "$W/gemm_table.json"; do
      tag=$([ "$how" = "$W/gemm_table.json" ] && echo table || echo base)
      TTT_INFER_GEMM="$how" timeout "${DECODE_S:-60}" python3 scripts/bench_decode.py --kinds "${AB_KINDS:-linear}" \
        --dtype "${GEMM_DTYPE:-bf16}" --out "$W/decode_gemm_$tag.jsonl" --batches "${DECODE_BATCHES:-1,16,64}" --no-reference \
        --layer-batches "${LAYER_BATCHES:-}" > "$W/decode_gemm_${tag}_$rep.log" 2>&1
      done_step "decode bench $tag rep $rep"
    done
  done
  cat "$W"/decode_layer_B*.log; cat "$W/gemm_table.json" | head -80
  for f in "$W"/decode_gemm_*_2.log; do echo "== $f"; tail -n 5 "$f"; done
  ;;
folds)
  # what the glue folds into the decode GEMM (TTT_INFER_GEMM_FOLDS), same-run A/B at B <= 64 (TTT-Linear), the
  # full decode bench with the defaults, then the decode kernel and glue tests for the time left (-v)
  for rep in 1 2; do
    for f in "silu,lr" "lr" "none"; do
      TTT_INFER_GEMM_FOLDS="$([ "$f" = none ] || echo "$f")" timeout 60 python3 scripts/bench_decode.py --kinds linear \
        --out "$W/decode_folds_${f/,/_}.jsonl" --batches 1,16,64 --no-reference > "$W/decode_folds_${f/,/_}_$rep.log" 2>&1
      done_step "decode folds=$f rep $rep"
    done
  done
  timeout "${DECODE_S:-100}" python3 scripts/bench_decode.py --out "$W/decode.jsonl" \
    --batches "${DECODE_BATCHES:-1,16,64,256,512}" --no-reference > "$W/decode.log" 2>&1
  done_step "decode bench"
  # shellcheck disable=SC2086  # FOLD_TESTS is a list of test files
  run_tests "${TESTS_S:-150}" decode_tests.log tests -v --timeout=90 ${FOLD_TESTS:-tests/test_decode_kernels.py tests/test_glue.py}
  for f in "$W"/decode_folds_*_2.log; do echo "== $f"; tail -n 3 "$f"; done
  tail -n 12 "$W/decode.log"
  ;;
ncu_step)
  # where the decode step's time goes: each configuration (STEP_CONFIGS, "kind=variant:warps:n" words) profiled at
  # STEP_BATCH rows, p = 8 (a plain token) with the full set and p = 15 (the update) with the warp-state
  # sections; the SASS lines' samples (csv) of the full set, summarized by scripts/ncu_stalls.py; ~3 min
  for cfg in ${STEP_CONFIGS:-mlp=cu:8:2 linear=v3:2:0}; do
    kind=${cfg%%=*}; tag=${cfg//[=:]/_}
    regex=${kind}_decode  # the Triton kernels (_ttt_<kind>_decode...) and the CUDA ones (<kind>_decode_kernel)
    timeout "${NCU_S:-100}" ncu --set full --import-source yes -k "regex:$regex" --launch-skip 2 -c 1 \
      -o "$W/ncu_$tag" -f python3 scripts/profile_decode_step.py --kind "$kind" --batch "${STEP_BATCH:-512}" \
      --config "$cfg" --position 8 > "$W/ncu_${tag}_run.log" 2>&1
    done_step "ncu $cfg p=8"
    ncu -i "$W/ncu_$tag.ncu-rep" --page details > "$W/ncu_$tag.txt" 2>&1
    ncu -i "$W/ncu_$tag.ncu-rep" --page source --csv --print-source sass > "$W/ncu_${tag}_sass.csv" 2>&1
    # the L2 hit rate over all sectors counts stores too: the reads' own hits and misses, and the stores, apart
    timeout 60 ncu --section WarpStateStats --section MemoryWorkloadAnalysis -k "regex:$regex" --launch-skip 2 -c 1 \
      --metrics lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum,lts__t_sectors_srcunit_tex_op_read_lookup_miss.sum,lts__t_sectors_srcunit_tex_op_write.sum,gpu__time_duration.sum \
      python3 scripts/profile_decode_step.py --kind "$kind" --batch "${STEP_BATCH:-512}" --config "$cfg" \
      --position 15 > "$W/ncu_${tag}_p15.txt" 2>&1
    done_step "ncu $cfg p=15"
    echo "== $cfg p=8"
    grep -E "Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Issued Warp|No Eligible" \
      "$W/ncu_$tag.txt" | head -30
    python3 scripts/ncu_stalls.py "$W/ncu_${tag}_sass.csv" --top 8 --phases  # the stall reasons and where they sit
    echo "== $cfg p=15"
    grep -E "Duration|gpu__time_duration|Memory Throughput|L2 Hit Rate|Mem Busy|lts__t_sectors" "$W/ncu_${tag}_p15.txt" | head -12
  done
  ;;
pdl|ab)
  # programmatic dependent launch (kernels/pdl.py): its tests (the sm_90 compile check; PDL on vs off through a
  # captured decode graph, bit for bit), a same-run A/B of the full decode bench over PDL_SETTINGS (TTT_INFER_PDL
  # values; both layer types, AB_BATCHES, AB_REPS alternating repetitions; MODE=ab: AB_VAR over AB_SETTINGS),
  # then (SWEEP_TTT=1) the sweep's TTT kernel decode points (`ttt-infer bench`, SWEEP_KINDS: decode and
  # prefill+decode) with the fastest setting; else the decode kernel, GEMM and glue tests for the time left; ~8 min
  run_tests "${TESTS_S:-120}" pdl_tests.log "pdl tests" -v --timeout=90 tests/test_pdl.py tests/gpu/test_decode_gpu.py \
    -k "${TESTS_K:-pdl or graph}"
  var="${AB_VAR:-TTT_INFER_PDL}"
  for rep in $(seq "${AB_REPS:-2}"); do
    for set in ${AB_SETTINGS:-${PDL_SETTINGS:-0 1}}; do
      env "$var=$set" timeout "${DECODE_S:-100}" python3 scripts/bench_decode.py --kinds "${AB_KINDS:-linear,mlp}" \
        --out "$W/decode_ab$set.jsonl" --batches "${AB_BATCHES:-1,16,64}" --no-reference > "$W/decode_ab${set}_$rep.log" 2>&1
      done_step "decode bench $var=$set rep $rep"
    done
  done
  # the fastest setting: least total ms a step over the full-model points of every repetition
  best=$(python3 - "$W" <<'PY'
import json, pathlib, sys
tot = {}
for f in pathlib.Path(sys.argv[1]).glob("decode_ab*.jsonl"):
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    tot[f.stem.removeprefix("decode_ab")] = sum(r["ms"] for r in rows if r.get("bench") == "model")
print(min(tot, key=tot.get) if tot else "1")  # no A/B (AB_REPS=0): the default
print("totals (ms):", {k: round(v, 3) for k, v in sorted(tot.items())}, file=sys.stderr)
PY
)
  echo "fastest $var setting: $best"
  for f in "$W"/decode_ab*_"${AB_REPS:-2}".log; do echo "== $f"; grep -A8 "full model" "$f"; done
  if [ "${SWEEP_TTT:-0}" = 1 ]; then
    (export "$var=$best"; sweep_ttt)
  else
    run_tests "${TESTS2_S:-100}" pdl_tests2.log "decode kernel, gemm, glue tests" -q --timeout=90 \
      tests/test_decode_kernels.py tests/test_gemm.py tests/test_glue.py
  fi
  ;;
trace_step)
  # the traced kernel computes the normal one's bits and leaves complete marks (its test), then the timelines:
  # span, a CTA's life (all, and in the tail), CTAs alive over time, the phases' durations, the untraced time;
  # ~2 min
  run_tests "${TESTS_S:-90}" trace_tests.log "trace tests" -v --timeout=90 tests/gpu/test_decode_gpu.py -k traced
  trace_step "${TRACE_BATCHES:-16,64,512}"
  ;;
*) echo "MODE must be check, prefill, ncu, verify, sweep, glue, decode, step, gemm, folds, ncu_step, pdl, ab or trace_step, got $MODE"; exit 2 ;;
esac
