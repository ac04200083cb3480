"""Time each fused glue kernel (ttt_infer/kernels/glue.py) against its PyTorch reference (layers.TorchGlue)
at one layer's shapes, with the bytes each must move and the fraction of the copy bandwidth reached.

    python scripts/bench_glue.py --batch 16 --seq 8192 [--dtype fp16] [--out glue.jsonl]

Bytes are the minimum traffic: every input read once, every output written once (16-bit activations,
fp32 TTT output and lr). On a machine without a GPU, `TRITON_INTERPRET=1 python scripts/bench_glue.py
--batch 1 --seq 4 --hidden 64 --heads 2 --intermediate 96` checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ttt_infer.layers import TORCH_GLUE, depthwise_conv1d  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def timer(fn, reps: int) -> float:
    """Median ms of `reps` calls (CUDA events on a GPU, wall clock otherwise), after one warm-up call."""
    fn()
    if not torch.cuda.is_available():
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)
    from ttt_infer.bench.limits import events_ms

    return statistics.median(events_ms(fn, reps))


def cases(B: int, T: int, C: int, nh: int, inter: int, dt: torch.dtype, dev: str):
    """(name, bytes, fn(glue) -> None) for each glue method at these shapes."""
    e = torch.finfo(dt).bits // 8
    N = B * T

    def r(*shape, dtype=dt):
        return torch.randn(*shape, device=dev).to(dtype)

    x, res, w = r(B, T, C), r(B, T, C), r(C) + 1
    conv, conv_k = depthwise_conv1d(4, C).to(dev, dt), depthwise_conv1d(4, C).to(dev, dt)
    hist = r(B, 3, C)
    pos = torch.zeros(1, dtype=torch.int64, device=dev)
    lr_w, lr_b = r(nh, C) * 0.02, torch.zeros(nh, device=dev)
    o, gate = r(B, nh, T, C // nh, dtype=torch.float32), r(B, T, C)
    ln = nn.LayerNorm(C).to(dev, dt)
    a, b = r(B, T, inter), r(B, T, inter)
    return [
        ("rms_norm", 2 * N * C * e, lambda g: g.rms_norm(x, w, 1e-6)),
        ("causal_conv+residual", 3 * N * C * e, lambda g: g.causal_conv(x, conv, hist.clone(), residual=res)),
        ("qk_conv_rope", 3 * N * C * e, lambda g: g.qk_conv_rope(x, conv, conv_k, hist.clone(), pos, nh, 1e4, 16)),
        ("lr_gate", N * C * e + N * nh * 4, lambda g: g.lr_gate(x, lr_w, lr_b, 1.0 / 64)),
        ("post_gate", N * C * 4 + 2 * N * C * e, lambda g: g.post_gate(o, gate, ln, 1e-6, dt)),
        ("silu_mul", 3 * N * inter * e, lambda g: g.silu_mul(a, b)),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=5504)
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", help="append one JSON line per kernel (stamped with the environment)")
    ap.add_argument("--conv-tiles", default="",
                    help="also time the two convolutions with these program tiles, e.g. 16x256x4,32x256x8 "
                         "(times x channels x warps)")  # fmt: skip
    args = ap.parse_args()
    from ttt_infer.bench.limits import measure_copy_bandwidth
    from ttt_infer.env import collect_env
    from ttt_infer.kernels.glue import TritonGlue

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dt = DTYPES[args.dtype]
    bw = measure_copy_bandwidth() if dev == "cuda" else None
    env = collect_env()
    glue = TritonGlue()
    tiles = [tuple(int(v) for v in t.split("x")) for t in args.conv_tiles.split(",") if t]
    rows = []
    with torch.no_grad():
        for name, nbytes, fn in cases(args.batch, args.seq, args.hidden, args.heads, args.intermediate, dt, dev):
            ms_k = timer(lambda fn=fn: fn(glue), args.reps)
            ms_t = timer(lambda fn=fn: fn(TORCH_GLUE), args.reps)
            row = dict(kernel=name, B=args.batch, T=args.seq, C=args.hidden, dtype=args.dtype, bytes=nbytes,
                       triton_ms=ms_k, torch_ms=ms_t, floor_ms=nbytes / bw * 1e3 if bw else None)  # fmt: skip
            rows.append(row)
            for tile in tiles if "conv" in name else ():
                g = TritonGlue(conv_tile=tile)
                ms = timer(lambda fn=fn, g=g: fn(g), args.reps)
                rows.append({**row, "kernel": f"{name} {'x'.join(map(str, tile))}", "triton_ms": ms, "conv_tile": tile})
        if args.out:
            with open(args.out, "a") as fh:
                for row in rows:
                    fh.write(json.dumps({**row, "copy_tb_s": bw / 1e12 if bw else None, "env": env}) + "\n")
    print(f"glue kernels, B={args.batch} T={args.seq} C={args.hidden} {args.dtype} on {env.get('gpu') or 'CPU'}")
    print(f"conv tiles: default {'x'.join(map(str, glue.conv_tile))} (times x channels x warps)")
    print(f"{'kernel':32} {'triton ms':>10} {'torch ms':>10} {'floor ms':>9} {'of floor':>8}")
    for r in rows:
        frac = f"{r['floor_ms'] / r['triton_ms']:.2f}" if r["floor_ms"] else "-"
        floor = f"{r['floor_ms']:.3f}" if r["floor_ms"] else "-"
        print(f"{r['kernel']:32} {r['triton_ms']:10.3f} {r['torch_ms']:10.3f} {floor:>9} {frac:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
