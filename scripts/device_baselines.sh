#!/usr/bin/env bash
# Device check of the two baselines (Transformer, Mamba): their GPU tests, then a quick timing at the 1b
# size (prefill B=16 T=2048; decode B=64, 128 graph-replayed steps after a prompt of 128 and of 2048).
# Run from the repository root on the GPU machine, with the fla-core wheel in .whl/ (carried there):
#   mkdir -p .whl && cp /tmp/fla/fla_core-0.6.0-py3-none-any.whl .whl/
#   bash scripts/device_baselines.sh            # writes $OUT/baselines.jsonl when OUT is set
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/fla_core-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/fla_core-*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

rc=0
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_baselines_gpu.py tests/test_baselines.py || rc=$?

timeout 240 python3 - <<'EOF' || rc=$?
import json, os, statistics, subprocess
import torch
from ttt_infer.bench.models import ModelUnavailable
from ttt_infer.baselines.mamba import MambaBench
from ttt_infer.baselines.transformer import TransformerBench

DT = torch.bfloat16
out = os.environ.get("OUT")
sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def events_ms(fn, reps):
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


rows = []
for name, cls in (("transformer", TransformerBench), ("mamba", MambaBench)):
    try:
        m = cls(DT, "cuda")
    except ModelUnavailable as e:
        print(f"{name}: unavailable: {e}")
        continue
    print(f"{name}: {m.params / 1e9:.3f}B params; {m.implementation}")
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T = 16, 2048
    ids = torch.randint(0, 32000, (B, T), device="cuda", generator=g)
    for _ in range(2):
        m.prefill(ids)
    torch.cuda.synchronize()
    ms = events_ms(lambda: m.prefill(ids), 5)
    rows.append(dict(model=name, phase="prefill", batch=B, prompt=T, ms=ms, tokens_per_s=B * T / ms * 1e3,
                     implementation=m.implementation))
    print(f"  prefill B={B} T={T}: {ms:.1f} ms, {B * T / ms * 1e3:,.0f} tok/s")
    B, steps = 64, 128
    for T in (128, 2048):
        ids = torch.randint(0, 32000, (B, T), device="cuda", generator=g)
        m.prefill(ids, max_new_tokens=steps + 2)
        m.decode()  # first step: capture
        m.decode()
        torch.cuda.synchronize()

        def run():
            for _ in range(steps):
                m.decode()

        ms = events_ms(run, 1) / steps
        # bytes one step must move at least: the weights, plus the KV cache read (Transformer, the whole
        # allocated length) or the SSM/conv states read and written (Mamba)
        nbytes = 2 * m.params
        if name == "transformer":
            nbytes += sum(k.numel() + v.numel() for k, v in zip(m.cache.k, m.cache.v)) * 2
        elif getattr(m, "states", None) is not None:
            nbytes += sum(c.numel() + s.numel() for c, s in m.states) * 2 * 2
        rows.append(dict(model=name, phase="decode", batch=B, prompt=T, steps=steps, ms_per_step=ms,
                         tokens_per_s=B / ms * 1e3, gbytes_per_step=nbytes / 1e9,
                         achieved_tb_s=nbytes / ms / 1e9, implementation=m.implementation))
        print(f"  decode B={B} prompt={T}: {ms:.3f} ms/step, {B / ms * 1e3:,.0f} tok/s, "
              f"{nbytes / 1e9:.2f} GB/step -> {nbytes / ms / 1e9:.2f} TB/s")
    m.close()
    del m
    torch.cuda.empty_cache()

print()
print("| model | phase | batch | prompt | ms | tokens/s |")
print("|---|---|---|---|---|---|")
for r in rows:
    ms = r.get("ms", r.get("ms_per_step"))
    print(f"| {r['model']} | {r['phase']} | {r['batch']} | {r['prompt']} | {ms:.3f} | {r['tokens_per_s']:,.0f} |")
if out:
    with open(os.path.join(out, "baselines.jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(dict(r, gpu=torch.cuda.get_device_name(), torch=torch.__version__, git=sha,
                                    dtype=str(DT))) + "\n")
EOF
exit $rc
