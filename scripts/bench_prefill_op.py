"""Benchmark the TTT-layer prefill op alone: TK kernels vs fla-core's Triton TTT-Linear ops vs the
PyTorch reference (PERF.md method: triton.testing.do_bench medians after warm-up, random inputs).

Shapes: B=16, H=32 at T in {2048, 8192, 32768} and B=1, T=32768; head dim 64; fp16 and bf16.
Writes one JSON line per point (appended as it finishes, stamped with collect_env()) to --out and
prints a markdown table last.

FLOPs counted (matmuls of the dual form, per mini-batch of 16 per head, f=64, h=4f for MLP):
  Linear: KW, QW (2*16*64*64 each), QK^T, (eta*A)G (2*16*16*64 each), W update (2*64*16*64)
  MLP:    KW1, X2W2, G2W2^T, QW1, X2bar W2, W1 update, W2 update (2*16*64*256 each), QK^T and
          (eta*A2)G2 (2*16*16*64), (eta*A1)G1 and X2bar X2^T (2*16*16*256)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

F, MB = 64, 16


def flops_per_minibatch(kind: str) -> int:
    if kind == "linear":
        return 3 * 2 * 16 * 64 * 64 + 2 * (2 * 16 * 16 * 64)
    return 7 * 2 * 16 * 64 * 256 + 2 * (2 * 16 * 16 * 64) + 2 * (2 * 16 * 16 * 256)


def min_bytes(kind: str, B: int, H: int, T: int, esize: int) -> int:
    io = 4 * B * H * T * F * esize + B * H * T * 4  # q, k, v read, out written, lr read
    hid = F if kind == "linear" else 4 * F
    state = (F * hid + hid) * 4 * (2 if kind == "mlp" else 1)
    return io + 2 * B * H * state


def make_inputs(kind: str, B: int, H: int, T: int, dtype, seed: int = 0):
    from ttt_infer.ttt.cache import TTTState

    g = torch.Generator(device="cuda").manual_seed(seed)

    def rn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, device="cuda") * scale

    hid = F if kind == "linear" else 4 * F
    base_lr = 1.0 if kind == "linear" else 0.1
    xq, xk, xv = (rn(B, H, T, F).to(dtype) for _ in range(3))
    lr = base_lr * torch.sigmoid(rn(B, H, T)) / F
    tau = 1.0 / torch.arange(1, MB + 1, device="cuda", dtype=torch.float32)
    ln_w, ln_b = 1.0 + rn(H, F, scale=0.1), rn(H, F, scale=0.1)
    st = TTTState.from_params(
        B,
        rn(H, F, hid, scale=0.02),
        torch.zeros(H, 1, hid, device="cuda"),
        rn(H, hid, F, scale=0.02) if kind == "mlp" else None,
        torch.zeros(H, 1, F, device="cuda") if kind == "mlp" else None,
    )
    return st, (xq, xk, xv, lr, ln_w, ln_b, tau, 0)


def bench(fn, warmup=25, rep=100) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def time_once(fn) -> float:
    fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e)


IMPL_NAMES = {"tk": "TK", "tk-16w": "TK 16 warps", "tk-wgmma": "TK wgmma", "tk-v3": "TK (v3 kernel)", "tk-v4": "TK (v4 kernel)", "tk-v5": "TK (v5 kernel)", "fla.chunk_ttt_linear": "fla chunk",
              "fla.fused_chunk_ttt_linear": "fla fused", "torch-reference": "PyTorch ref"}  # fmt: skip


def report(path: Path, labels: list[str] | None = None) -> str:
    """Markdown tables (ms) from a results file: one row per shape and dtype, one column per implementation
    and version label (its first word; `labels`: only these); for TTT-Linear, each TK version against the
    faster fla op of its run."""
    rows = [json.loads(line) for line in path.open()]
    if labels:
        rows = [r for r in rows if r.get("label", "").split(" ")[0] in labels]
    out = []
    for kind in ("linear", "mlp"):
        pts = [r for r in rows if r["kind"] == kind and r.get("ms")]
        cols = sorted({(r["impl"], r.get("label", "").split(" ")[0]) for r in pts}, key=lambda c: (c[0], c[1]))
        cols = [c for c in cols if not (kind == "mlp" and c[0].startswith("fla"))]
        vers = sorted({v for i, v in cols if i == "tk"}) if kind == "linear" else []
        head = [f"{IMPL_NAMES.get(i, i)} {v}".strip() for i, v in cols] + [f"TK {v} vs faster fla" for v in vers]
        out += [f"**TTT-{kind.upper() if kind == 'mlp' else 'Linear'}** (ms; B x T, H=32, head dim 64)", "",
                "| B x T | dtype | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]  # fmt: skip
        for B, T, dt in sorted({(r["B"], r["T"], r["dtype"]) for r in pts}, key=lambda k: (-k[0], k[1], k[2])):
            at = {
                (r["impl"], r.get("label", "").split(" ")[0]): r["ms"]
                for r in pts
                if (r["B"], r["T"], r["dtype"]) == (B, T, dt)
            }
            cells = [f"{at[c]:.3f}" if c in at else "-" for c in cols]
            for v in vers:
                fla = [at[(i, v)] for i in ("fla.chunk_ttt_linear", "fla.fused_chunk_ttt_linear") if (i, v) in at]
                cells.append(f"{min(fla) / at[('tk', v)]:.2f}x" if fla and ("tk", v) in at else "-")
            out.append(f"| {B} x {T} | {dt} | " + " | ".join(cells) + " |")
        out.append("")
    if rows:  # the last run in full: ms, tokens/s and achieved TFLOP/s of every point
        last = rows[-1].get("label", "").split(" ")[0]
        out += [f"**Run {last} in full** (tokens/s: B x T / time; TFLOP/s: the op's matmul FLOPs / time)", "",
                "| op | B x T | dtype | implementation | ms | M tokens/s | TFLOP/s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            if r.get("label", "").split(" ")[0] == last and r.get("ms"):
                out.append(f"| TTT-{'MLP' if r['kind'] == 'mlp' else 'Linear'} | {r['B']} x {r['T']} | {r['dtype']} | "
                           f"{IMPL_NAMES.get(r['impl'], r['impl'])} | {r['ms']:.3f} | {r['tokens_per_s'] / 1e6:.1f} | "
                           f"{r['tflops']:.1f} |")  # fmt: skip
        out.append("")
    labels = sorted({r.get("label", "") for r in rows})
    out += ["Versions: " + "; ".join(labels)]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--report", metavar="JSONL", help="only print the markdown tables of a results file")
    p.add_argument("--labels", default="", help="with --report: only these version labels (comma-separated)")
    p.add_argument("--out", default="prefill_op.jsonl")
    p.add_argument("--shapes", default="16x2048,16x8192,16x32768,1x32768")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--no-fla", action="store_true")
    p.add_argument("--no-wgmma", action="store_true", help="do not time the opt-in Hopper wgmma kernel")
    p.add_argument("--no-prev", action="store_true", help="do not time the previous TTT-Linear kernel (impl v4)")
    p.add_argument("--label", default="", help="kernel version label stored with every point")
    p.add_argument("--ref-max-tokens", type=int, default=16 * 2048, help="time the PyTorch reference up to B*T")
    args = p.parse_args(argv)
    if args.report:
        print(report(Path(args.report), [v for v in args.labels.split(",") if v]), end="")
        return 0

    from ttt_infer.env import collect_env
    from ttt_infer.kernels import prefill
    from ttt_infer.ttt.reference import dual_forward

    prefill.check_available()
    env = collect_env()
    H = args.heads
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    out_path = Path(args.out)
    rows = []

    def emit(rec):
        rec.update(label=args.label, env=env, time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with out_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        rows.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "env"}), file=sys.stderr, flush=True)

    fla_ops = {}
    if not args.no_fla:
        try:
            from fla.ops.ttt import chunk_ttt_linear, fused_chunk_ttt_linear

            fla_ops = {"fla.chunk_ttt_linear": chunk_ttt_linear, "fla.fused_chunk_ttt_linear": fused_chunk_ttt_linear}
        except Exception as e:  # noqa: BLE001
            print(f"fla-core not importable: {e}", file=sys.stderr)

    for B, T in shapes:
        for dname, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            for kind in ("linear", "mlp"):
                st, a = make_inputs(kind, B, H, T, dtype)
                nbytes = min_bytes(kind, B, H, T, 2)
                flops = flops_per_minibatch(kind) * B * H * math.ceil(T / MB)
                base = dict(kind=kind, dtype=dname, B=B, H=H, T=T, D=F, flops=flops, min_bytes=nbytes)
                out = torch.empty_like(a[0])
                runs = (
                    [("tk", None, "default")] if kind == "linear" else [("tk", 8, "default"), ("tk-16w", 16, "default")]
                )
                if kind == "linear" and not args.no_prev:
                    runs.append(("tk-v4", None, "v4"))  # the previous default, timed in the same run
                if kind == "linear" and not args.no_wgmma and prefill.wgmma_available():
                    runs.append(("tk-wgmma", None, "wgmma"))  # the opt-in Hopper kernel, beside the default
                for impl, warps, kimpl in runs:
                    try:
                        ms = bench(
                            lambda st=st, a=a, out=out, warps=warps, kimpl=kimpl: prefill.ttt_prefill(
                                st, *a, out=out, mlp_warps=warps, impl=kimpl
                            )
                        )
                        emit(
                            dict(
                                base,
                                impl=impl,
                                ms=ms,
                                tokens_per_s=B * T / ms * 1e3,
                                tflops=flops / ms * 1e-9,
                                gbps=nbytes / ms * 1e-6,
                                mlp_warps=warps,
                            )
                        )
                    except torch.OutOfMemoryError as e:
                        emit(dict(base, impl=impl, error=f"OOM: {e}"))
                if B * T <= args.ref_max_tokens and dname == "bf16":
                    s_ref = st.clone()
                    ms = time_once(lambda s_ref=s_ref, a=a: dual_forward(s_ref, *a))
                    emit(
                        dict(
                            base,
                            impl="torch-reference",
                            ms=ms,
                            tokens_per_s=B * T / ms * 1e3,
                            tflops=flops / ms * 1e-9,
                            note="one timed run after one warm-up (CUDA events)",
                        )
                    )
                del st, a, out
                torch.cuda.empty_cache()
            # fla (TTT-Linear only): layout [B, T, H, D], eta [B, T, H, 1], fp32 initial state
            for name, op in fla_ops.items():
                st, a = make_inputs("linear", B, H, T, dtype)
                xq, xk, xv, lr, ln_w, ln_b, tau, _ = a
                q, k, v = (x.transpose(1, 2).contiguous() for x in (xq, xk, xv))
                eta = lr.transpose(1, 2).unsqueeze(-1).to(dtype).contiguous()
                w, b = ln_w.to(dtype), ln_b.to(dtype)
                h0 = st.W1.contiguous()
                hb0 = st.b1.unsqueeze(2).contiguous()
                flops = flops_per_minibatch("linear") * B * H * math.ceil(T / MB)
                base = dict(
                    kind="linear",
                    dtype=dname,
                    B=B,
                    H=H,
                    T=T,
                    D=F,
                    flops=flops,
                    min_bytes=min_bytes("linear", B, H, T, 2),
                )
                try:

                    def fn(op=op, q=q, k=k, v=v, w=w, b=b, eta=eta, h0=h0, hb0=hb0):
                        return op(
                            q,
                            k,
                            v,
                            w,
                            b,
                            eta,
                            scale=1.0,
                            chunk_size=16,
                            initial_state=h0,
                            initial_state_bias=hb0,
                            output_final_state=True,
                        )

                    ms = bench(fn)
                    emit(dict(base, impl=name, ms=ms, tokens_per_s=B * T / ms * 1e3, tflops=flops / ms * 1e-9))
                except Exception as e:  # noqa: BLE001
                    emit(dict(base, impl=name, error=f"{type(e).__name__}: {e}"[:300]))
                del q, k, v, eta, st, a
                torch.cuda.empty_cache()

    # short table last
    print("\n| impl | kind | dtype | B | T | ms | Mtok/s | TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "ms" in r:
            print(
                f"| {r['impl']} | {r['kind']} | {r['dtype']} | {r['B']} | {r['T']} | {r['ms']:.3f} | "
                f"{r['tokens_per_s'] / 1e6:.2f} | {r['tflops']:.1f} |"
            )
        else:
            print(f"| {r['impl']} | {r['kind']} | {r['dtype']} | {r['B']} | {r['T']} | {r.get('error')} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
