"""One decode step of a layer, piece by piece, timed the way the model runs it: inside a CUDA graph.

    python scripts/bench_decode_layer.py --batch 16 [--dtype bf16] [--out layer_parts.jsonl]

Times (us a call, from CUDA-graph replays of `--calls` calls in a row) the GEMMs of one TTT-Linear / Mamba
layer at M = B rows, with the weight in two layouts (nk: W [N, K] as nn.Linear keeps it, F.linear; kn: W^T
[K, N] contiguous, x @ W^T), and each fused glue kernel at T = 1. A weight is never reused from L2: the calls
cycle through enough copies of it to exceed `--l2-mb` twice, as a model's layers each have their own. GEMMs
are compared with their floor: the weight's bytes at the copy rate or, at many rows (--batch 256, 512: where
the TTT-Linear step's limit stops being bytes), the FLOPs at the bf16 matmul rate, both measured in the same run.
Eager single-call timings (scripts/bench_glue.py) are launch-bound at these sizes; this is what a decode
step's graph actually pays. Then the four GEMMs one after another, as a layer runs them ("4 GEMMs in a row",
each through the decode path's choice), against their summed byte floor. Without a GPU it runs each piece once
on the CPU (a smoke check, no timing).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def graph_us(fns: list, calls: int, reps: int) -> float:
    """Median us a call of `calls` calls captured in one CUDA graph (fns[i % len(fns)] for call i)."""
    for fn in fns:
        fn()  # compile / tune / allocate outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fns[i % len(fns)]()
    g.replay()
    torch.cuda.synchronize()
    from ttt_infer.bench.limits import events_ms

    return statistics.median(events_ms(g.replay, reps)) * 1e3 / calls


def layer_gemms(B: int, C: int, inter: int, dt: torch.dtype, dev: str):
    """The layer's decode GEMMs in the order a decode step runs them: (name, N, K, input x, residual or None)."""
    x_c, x_i, res = (torch.randn(B, n, device=dev).to(dt) for n in (C, inter, C))
    return (
        ("q/v/g", 3 * C, C, x_c, None),
        ("o_proj+res", C, C, x_c, res),
        ("gate/up", 2 * inter, C, x_c, None),
        ("down+res", C, inter, x_i, res),
    )


def gemms(B: int, C: int, inter: int, dt: torch.dtype, dev: str, l2_bytes: int, skinny: bool = False):
    """(name, weight bytes, [fn, ...] per layout) for the layer's decode GEMMs: each fn list cycles through
    weight copies that together exceed 2 x L2."""
    out = []
    for name, n, k, x, res in layer_gemms(B, C, inter, dt, dev):
        residual = res is not None
        nbytes = n * k * torch.finfo(dt).bits // 8
        copies = max(2, math.ceil(2 * l2_bytes / nbytes))
        ws = [torch.randn(n, k, device=dev).to(dt) * 0.02 for _ in range(copies)]
        wts = [w.t().contiguous() for w in ws]
        if residual:
            nk = [lambda w=w, x=x, r=res: torch.addmm(r, x, w.t()) for w in ws]
            kn = [lambda w=w, x=x, r=res: torch.addmm(r, x, w) for w in wts]
        else:
            nk = [lambda w=w, x=x: F.linear(x, w) for w in ws]
            kn = [lambda w=w, x=x: x @ w for w in wts]
        layouts = {"nk": nk, "kn": kn}
        if skinny:  # the decode GEMM's candidates (nk layout)
            from ttt_infer.kernels.gemm import CANDIDATES, skinny_linear

            for cfg in CANDIDATES:
                layouts["triton " + ":".join(map(str, cfg))] = [
                    lambda w=w, x=x, c=cfg, r=res: skinny_linear(x, w, r, c) for w in ws
                ]
        out.append((name, n, k, residual, nbytes, layouts))
    return out


def gemm_chain(B: int, C: int, inter: int, dt: torch.dtype, dev: str, l2_bytes: int):
    """(weight bytes, [fn, ...]): a layer's four GEMMs one after another as a decode step runs them (q/v/g,
    o_proj + residual, gate/up, down + residual), each through the decode path's choice (kernels/gemm.py
    `linear`: the shipped table's Triton GEMM, with PDL between them, or cuBLAS); one fn a layer, cycling
    through weight sets that together exceed 2 x L2. Its time against the sum of the four timed alone says what
    running them back to back costs or saves; against the byte floor, what a persistent layer could win."""
    from ttt_infer.kernels.gemm import linear

    shapes = layer_gemms(B, C, inter, dt, dev)
    nbytes = sum(n * k for _, n, k, _, _ in shapes) * torch.finfo(dt).bits // 8
    sets = [[torch.randn(n, k, device=dev).to(dt) * 0.02 for _, n, k, _, _ in shapes]
            for _ in range(max(2, math.ceil(2 * l2_bytes / nbytes)))]  # fmt: skip

    def layer(ws):
        for (_, _, _, x, res), w in zip(shapes, ws, strict=True):
            linear(x, w, res)

    return nbytes, [lambda ws=ws: layer(ws) for ws in sets]


def write_table(path: str, rows: list[dict], B: int, dtype: str, gpu: str, env: dict) -> None:
    """Merge this batch's fastest GEMM per shape into the decode GEMM's table (kernels/gemm.py): the Triton
    configuration where one beat cuBLAS (nk layout, as the model calls it), else null (cuBLAS)."""
    import triton

    from ttt_infer.kernels.gemm import table_key

    bm = max(16, triton.next_power_of_2(B))
    table = {"gpu": gpu, "entries": []}
    if Path(path).is_file():
        table = json.loads(Path(path).read_text())
    by = {table_key(e): e for e in table["entries"]}
    for shape in {r["gemm"] for r in rows if r["kind"] == "gemm"}:
        cands = [r for r in rows if r.get("gemm") == shape and r["us"] is not None and math.isfinite(r["us"])]
        cublas = next(r for r in cands if r["layout"] == "nk")
        best = min((r for r in cands if r["layout"].startswith("triton ")), key=lambda r: r["us"], default=None)
        win = best is not None and best["us"] < cublas["us"]
        e = {"bm": bm, "N": cublas["N"], "K": cublas["K"], "residual": cublas["residual"], "dtype": dtype,
             "config": [int(v) for v in best["layout"].split()[1].split(":")] if win else None,
             "us": best["us"] if best else None, "cublas_us": cublas["us"], "measured_at_B": B,
             "git_sha": env.get("git_sha")}  # fmt: skip
        by[table_key(e)] = e
    table["entries"] = sorted(by.values(), key=table_key)
    Path(path).write_text(json.dumps(table, indent=1) + "\n")


def glue_parts(B: int, C: int, nh: int, inter: int, dt: torch.dtype, dev: str, conv_tiles=(), preblock_warps=()):
    """(name, fn) for each fused glue kernel at one token a sequence; then the block front at each of
    `preblock_warps` and the qk conv at each of `conv_tiles` ((channels, warps) of its decode program)."""
    from ttt_infer.kernels.glue import TritonGlue
    from ttt_infer.layers import RMSNorm, depthwise_conv1d

    g = TritonGlue()

    def r(*shape, dtype=dt):
        return torch.randn(*shape, device=dev).to(dtype)

    x, w = r(B, 1, C), r(C) + 1
    conv, conv_k = depthwise_conv1d(4, C).to(dev, dt), depthwise_conv1d(4, C).to(dev, dt)
    n1, n2 = RMSNorm(C, 1e-6).to(dev, dt), RMSNorm(C, 1e-6).to(dev, dt)
    hist = r(B, 3, C)
    pos = torch.zeros(1, dtype=torch.int64, device=dev)
    lr_w, lr_b = r(nh, C) * 0.02, torch.zeros(nh, device=dev)
    o, gate = r(B, nh, 1, C // nh, dtype=torch.float32), r(B, 1, C)
    ln = nn.LayerNorm(C).to(dev, dt)
    a, b = r(B, 1, inter), r(B, 1, inter)
    return [
        ("rms_norm", lambda: g.rms_norm(x, w, 1e-6)),
        ("pre_block (norm, conv + res, norm)", lambda: g.pre_block(x, n1, conv, hist, n2)),
        ("qk_conv_rope", lambda: g.qk_conv_rope(x, conv, conv_k, hist, pos, nh, 1e4, 16)),
        ("lr_gate", lambda: g.lr_gate(x, lr_w, lr_b, 1.0 / 64)),
        ("post_gate", lambda: g.post_gate(o, gate, ln, 1e-6, dt)),
        ("silu_mul", lambda: g.silu_mul(a, b)),
    ] + [
        (f"pre_block {w} warps", functools.partial(TritonGlue(preblock_warps=w).pre_block, x, n1, conv, hist, n2))
        for w in preblock_warps
    ] + [
        (f"qk_conv_rope {bc}x{w}", functools.partial(TritonGlue(decode_conv_tile=(bc, w)).qk_conv_rope,
                                                     x, conv, conv_k, hist, pos, nh, 1e4, 16))
        for bc, w in conv_tiles
    ]  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=5504)
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    ap.add_argument("--calls", type=int, default=24, help="calls a graph (a model step has 24 layers)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--l2-mb", type=float, default=60.0, help="L2 size to defeat (H200: 60 MB)")
    ap.add_argument("--out", help="append one JSON line per piece (stamped with the environment)")
    ap.add_argument("--skinny", action="store_true", help="also time the decode GEMM's Triton candidates")
    ap.add_argument("--conv-tiles", default="", help="also the qk conv at these decode tiles: channels x warps, "
                    "comma-separated (e.g. 512x4,1024x8)")  # fmt: skip
    ap.add_argument("--preblock-warps", default="", help="also the block front at these warps (e.g. 4,16)")
    ap.add_argument("--write-table", metavar="JSON", help="merge the fastest GEMM per shape into this table "
                    "(the format of ttt_infer/kernels/gemm_tables/; implies --skinny)")  # fmt: skip
    args = ap.parse_args(argv)
    args.skinny = args.skinny or bool(args.write_table)
    from ttt_infer.env import collect_env

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dt = DTYPES[args.dtype]
    B, C = args.batch, args.hidden
    env = collect_env()
    bw = mm = None  # copy bandwidth (bytes/s) and bf16 matmul rate (FLOP/s), measured in this run
    if dev == "cuda":
        from ttt_infer.bench.limits import measure_ceilings

        ceil = measure_ceilings()
        bw, mm = ceil.copy_bytes_per_s, ceil.matmul_flops_per_s
    rows = []
    with torch.no_grad():
        shapes = gemms(B, C, args.intermediate, dt, dev, int(args.l2_mb * 2**20), skinny=args.skinny)
        for name, n, k, residual, nbytes, layouts in tqdm(shapes, desc="GEMMs", disable=not args.skinny):
            for layout, fns in layouts.items():
                try:
                    us = graph_us(fns, args.calls, args.reps) if dev == "cuda" else (fns[0](), None)[1]
                except Exception as e:  # a Triton tile that does not fit this GPU's shared memory
                    if not layout.startswith("triton"):
                        raise
                    print(f"{name} {layout}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
                    us = float("inf")
                # the floor: the weight's bytes at the copy rate, or at many rows the FLOPs at the matmul rate
                byte_floor = nbytes / bw * 1e6 if bw else None
                flop_floor = 2 * B * n * k / mm * 1e6 if mm else None
                floor = max(byte_floor, flop_floor) if bw and mm else None
                rows.append(dict(part=f"{name} {layout}", kind="gemm", gemm=name, layout=layout, N=n, K=k,
                                 residual=residual, B=B, bytes=nbytes, us=us, floor_us=floor, byte_floor_us=byte_floor,
                                 flop_floor_us=flop_floor))  # fmt: skip
        nbytes, fns = gemm_chain(B, C, args.intermediate, dt, dev, int(args.l2_mb * 2**20))
        us = graph_us(fns, args.calls, args.reps) if dev == "cuda" else (fns[0](), None)[1]
        floor = nbytes / bw * 1e6 if bw else None
        rows.append(dict(part="4 GEMMs in a row", kind="gemm_chain", B=B, bytes=nbytes, us=us, floor_us=floor,
                         byte_floor_us=floor))  # fmt: skip
        tiles = [tuple(int(v) for v in t.split("x")) for t in args.conv_tiles.split(",") if t]
        warps = [int(w) for w in args.preblock_warps.split(",") if w]
        for name, fn in glue_parts(B, C, args.heads, args.intermediate, dt, dev, tiles, warps):
            us = graph_us([fn], args.calls, args.reps) if dev == "cuda" else (fn(), None)[1]
            rows.append(dict(part=name, kind="glue", B=B, us=us))
    if args.out:
        with open(args.out, "a") as fh:
            for row in rows:
                fh.write(json.dumps({**row, "dtype": args.dtype, "copy_tb_s": bw / 1e12 if bw else None,
                                     "matmul_tflop_s": mm / 1e12 if mm else None, "env": env}) + "\n")  # fmt: skip
    if args.write_table and dev == "cuda":
        write_table(args.write_table, rows, B, str(dt).removeprefix("torch."), env.get("gpu"), env)
    print(f"decode layer parts, B={B} C={C} {args.dtype} on {env.get('gpu') or 'CPU (smoke run, no timing)'}")
    print(f"{'part':40} {'us':>8} {'floor us':>9} {'of floor':>8}")
    for r in rows:
        us = f"{r['us']:.2f}" if r["us"] is not None else "-"
        fl = r.get("floor_us")
        frac = f"{fl / r['us']:.2f}" if fl and r["us"] else "-"
        print(f"{r['part']:40} {us:>8} {f'{fl:.2f}' if fl else '-':>9} {frac:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
