"""Decode benchmark: the TTT-layer step alone and the full model, kernels (CUDA graph) vs reference.

    python scripts/bench_decode.py --out results/h200/decode.jsonl [--size 1b] [--layers N]

One JSON line per point (stamped with collect_env() and the measured copy bandwidth), appended as it
finishes; a short table is printed last. Limits (PERF.md): a decode step moves the weights once
(2P bytes, bf16) and each sequence's TTT state 1 + 1/16 times, t >= (2P + B * k * state) / BW, BW the
device-to-device copy measured in this run. Timings are CUDA-event medians of graph replays (kernels)
or of eager steps (reference), averaged over all 16 positions of a mini-batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ttt_infer import TTTConfig, TTTForCausalLM  # noqa: E402
from ttt_infer.bench.limits import events_ms, measure_copy_bandwidth  # noqa: E402
from ttt_infer.env import collect_env  # noqa: E402
from ttt_infer.kernels import decode  # noqa: E402
from ttt_infer.kernels.graphs import CUDAGraphDecoder  # noqa: E402
from ttt_infer.ttt.cache import TTTState  # noqa: E402
from ttt_infer.ttt.ops import ReferenceBackend  # noqa: E402

PASSES = 1.0 + 1.0 / 16  # state passes per token (MATH.md "Decode traffic")
MB = 16


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def state_bytes_per_head(kind: str, f: int = 64) -> int:
    h = f if kind == "linear" else 4 * f
    return 4 * (f * h + h + (h * f + f if kind == "mlp" else 0))


def layer_step_bytes(kind: str, B: int, nh: int, act_bytes: int = 2, f: int = 64) -> float:
    """Bytes the kernel moves per step, averaged over the 16 positions of a mini-batch."""
    h = f if kind == "linear" else 4 * f
    row = 4 * (f + h + (h + f if kind == "mlp" else 0) + 1)  # k, g1 [, x2, g2], lr
    W = state_bytes_per_head(kind, f)
    per_head = (
        W * (1 + 1 / MB)  # weights read each token, written once per mini-batch
        + row * (sum(range(MB)) / MB)  # rows j < p read (7.5 on average)
        + row  # row p written
        + 3 * f * act_bytes
        + 4
        + 4 * f  # q, k, v, lr in; out (fp32)
    )
    return B * nh * per_head


def bench_layer(kind: str, B: int, nh: int, bw: float, dtype=torch.bfloat16) -> dict:
    """One layer's decode kernel alone: 16 steps (a whole mini-batch) captured in one graph."""
    f = 64
    h = f if kind == "linear" else 4 * f
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*shape, s=1.0):
        return s * torch.randn(*shape, device="cuda", generator=g)

    W2, b2 = (r(nh, h, f, s=h**-0.5), r(nh, 1, f, s=0.1)) if kind == "mlp" else (None, None)
    st = TTTState.from_params(B, r(nh, f, h, s=f**-0.5), r(nh, 1, h, s=0.1), W2, b2)
    for name in ("k", "g1", "x2", "g2", "lr"):
        t = getattr(st, name)
        if t is not None:
            t.copy_(torch.rand_like(t) * 0.01)
    xq, xk, xv = (r(B, nh, 1, f).to(dtype) for _ in range(3))
    lr = torch.rand(B, nh, 1, device="cuda") * 0.01
    ln_w, ln_b = 1 + r(nh, f, s=0.1), r(nh, f, s=0.1)
    tau = (1 / torch.arange(1, 17, device="cuda")).float()
    pos = torch.zeros(1, dtype=torch.int64, device="cuda")
    out = torch.empty(B, nh, 1, f, device="cuda")

    def one():
        decode.ttt_decode_step(st, xq, xk, xv, lr, ln_w, ln_b, tau, pos, out=out)
        pos.add_(1)

    one()  # tunes num_warps for this grid
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(MB):
            one()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(MB):
            one()
    graph.replay()
    ms = statistics.median(events_ms(graph.replay, 20)) / MB
    # the position add is a separate tiny kernel inside the graph: time it alone and subtract
    g2 = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g2):
        for _ in range(MB):
            pos.add_(1)
    g2.replay()
    add_ms = statistics.median(events_ms(g2.replay, 20)) / MB
    step_ms = ms - add_ms
    nbytes = layer_step_bytes(kind, B, nh)
    state_bytes = B * nh * state_bytes_per_head(kind) * PASSES
    key = (kind, B * nh, dtype)
    config = decode.TUNED.get(key)
    candidates = {":".join(map(str, c)): round(t * 1e3, 2) for c, t in decode.TIMINGS.get(key, {}).items()}
    st = None  # free the state before the next point
    torch.cuda.empty_cache()
    return dict(
        bench="layer", kind=kind, B=B, nh=nh, act_dtype=str(dtype), us=step_ms * 1e3, us_with_pos_add=ms * 1e3,
        bytes=nbytes, gb_s=nbytes / (step_ms / 1e3) / 1e9, state_gb_s=state_bytes / (step_ms / 1e3) / 1e9,
        limit_us=nbytes / bw * 1e6, frac_limit=(nbytes / bw) / (step_ms / 1e3),
        config=":".join(map(str, config)) if config else None, tuning_us_mb_mean=candidates,
    )  # fmt: skip


def make_model(kind: str, size: str, layers: int | None, dtype=torch.bfloat16) -> TTTForCausalLM:
    over = {} if layers is None else {"num_hidden_layers": layers}
    cfg = TTTConfig.standard(size, kind, "mamba", **over)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = TTTForCausalLM(cfg)
    return model.to(dtype).eval()


def bench_model(model: TTTForCausalLM, B: int, backend: str, bw: float, steps: int) -> dict:
    cfg = model.config
    P = sum(p.numel() for p in model.parameters())
    wbytes = P * model.dtype.itemsize
    state = cfg.num_hidden_layers * cfg.num_attention_heads * state_bytes_per_head(cfg.ttt_layer_type)
    limit_s = (wbytes + B * PASSES * state) / bw
    tokens = torch.randint(0, cfg.vocab_size, (B,), device="cuda")
    cache = model.new_cache(B)
    mode = None
    if backend == "kernels":
        model._backend = decode.DecodeKernelBackend()
        dec = CUDAGraphDecoder(model, cache)
        t0 = time.perf_counter()
        dec.step(tokens)  # eager step (tunes the kernel) + capture
        torch.cuda.synchronize()
        setup_s = time.perf_counter() - t0
        dec.replay(MB)
        ms = statistics.median(events_ms(lambda: dec.replay(MB), max(1, steps // MB))) / MB
        mode = "cuda_graph"
        cfgk = decode.TUNED.get((cfg.ttt_layer_type, B * cfg.num_attention_heads, model.dtype))
        mode += " " + ":".join(map(str, cfgk)) if cfgk else ""
        del dec
    else:
        model._backend = ReferenceBackend()
        t0 = time.perf_counter()
        model.decode_step(tokens, cache)
        torch.cuda.synchronize()
        setup_s = time.perf_counter() - t0
        times = events_ms(lambda: model.decode_step(tokens, cache), steps)
        ms = statistics.mean(times)  # mean over consecutive positions (the mini-batch end costs more)
        mode = "eager"
    cache = None  # free the state before the next point
    torch.cuda.empty_cache()
    tok_s = B / (ms / 1e3)
    return dict(
        bench="model", kind=cfg.ttt_layer_type, size=cfg.extra.get("size", None), layers=cfg.num_hidden_layers,
        backbone=cfg.backbone, B=B, backend=backend, mode=mode, ms=ms, tokens_s=tok_s,
        limit_tokens_s=B / limit_s, frac_limit=tok_s / (B / limit_s), params=P, weight_bytes=wbytes,
        state_bytes_per_seq=state, setup_s=setup_s, steps=steps, dtype=DTYPE_NAMES[model.dtype],
    )  # fmt: skip


def _dtype(r: dict) -> str:
    """A point's activation dtype name (rows before the --dtype option were bf16)."""
    if r.get("bench") == "layer":
        return {"torch.float16": "fp16"}.get(r.get("act_dtype"), "bf16")
    return r.get("dtype", "bf16")


def report(jsonl: Path) -> str:
    """Markdown tables of a results file (the latest line of each point; fp16 points are marked)."""
    latest: dict = {}
    for line in jsonl.read_text().splitlines():
        r = json.loads(line)
        latest[(r.get("bench"), r.get("kind"), r.get("B"), r.get("backend"), _dtype(r))] = r
    rows = list(latest.values())
    out = ["## TTT layer decode step alone (1 layer, nh=32, head dim 64, bf16 activations, fp32 state)", "",
           "Mean over the 16 positions of a mini-batch (CUDA graph of 16 steps). Bytes: W read every token and written",
           "once per 16, rows j < p read, row p written, q/k/v/out. Limit = bytes / copy bandwidth of the same run.", "",
           "| kind | B | us | GB/s | limit us | fraction | config | git | tuning, us (at p=8 before 2026-11-29 21:30; later the (15 p=8 + p=15)/16 mean) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r.get("bench") == "layer":
            out.append(f"| {r['kind']}{'' if _dtype(r) == 'bf16' else ' (fp16)'} | {r['B']} | {r['us']:.1f} | {r['gb_s']:.0f} | {r['limit_us']:.1f} | {r['frac_limit']:.2f} | "
                       f"{r.get('config') or r.get('num_warps')} | {(r['env'].get('git_sha') or '?')[:7]} | {r.get('tuning_us_mb_mean', r.get('tuning_us_at_p8', ''))} |")  # fmt: skip
    out += ["", "## Full-model decode, 1b config (24 layers, Mamba backbone), bf16 weights, fp32 TTT state", "",
            "Limit: t >= (2P bytes + B * (1 + 1/16) * state bytes) / copy bandwidth (PERF.md).", "",
            "| kind | B | backend | mode | ms/step | tokens/s | limit tokens/s | fraction | git |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted((r for r in rows if r.get("bench") == "model"), key=lambda r: (r["kind"], r["B"], r["backend"])):
        if "error" in r:
            out.append(f"| {r['kind']} | {r['B']} | {r['backend']} | {r['error'][:60]} | | | | | |")
            continue
        out.append(f"| {r['kind']}{'' if _dtype(r) == 'bf16' else ' (fp16)'} | {r['B']} | {r['backend']} | {r['mode']} | {r['ms']:.3f} | {r['tokens_s']:.0f} | "
                   f"{r['limit_tokens_s']:.0f} | {r['frac_limit']:.2f} | {(r['env'].get('git_sha') or '?')[:7]}"
                   + (f" ({r['note']})" if r.get("note") else "") + " |")  # fmt: skip
    env = rows[-1]["env"] if rows else {}
    out += ["", f"Environment: {env.get('gpu')}, driver {env.get('driver')}, torch {env.get('torch')}, triton {env.get('triton')}, "
            f"copy bandwidth {rows[-1]['copy_tb_s']:.2f} TB/s" if rows else ""]  # fmt: skip
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", metavar="JSONL", help="only write the markdown tables of a results file to stdout")
    ap.add_argument("--out", default="results/h200/decode.jsonl")
    ap.add_argument("--size", default="1b")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the config (say so when used)")
    ap.add_argument("--batches", default="1,16,64,256,512")
    ap.add_argument("--kinds", default="linear,mlp")
    ap.add_argument("--layer-batches", default="64,512", help="batches of the TTT-layer step timed alone (empty: none)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="activations and weights (the state is fp32)")
    args = ap.parse_args()
    if args.report:
        print(report(Path(args.report)), end="")
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = collect_env()
    bw = measure_copy_bandwidth(gib=4.0)
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s (read + write)", flush=True)
    rows = []

    def emit(rec: dict) -> None:
        rec = {**rec, "copy_tb_s": bw / 1e12, "env": env, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        rows.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "env"}), flush=True)

    kinds = args.kinds.split(",")
    for kind in kinds:
        for B in (int(b) for b in args.layer_batches.split(",") if b):
            emit(bench_layer(kind, B, 32, bw, DTYPES[args.dtype]))
    batches = [int(b) for b in args.batches.split(",")]
    for kind in kinds:
        model = make_model(kind, args.size, args.layers, DTYPES[args.dtype])
        model.config.extra["size"] = args.size
        for B in batches:
            try:
                emit(bench_model(model, B, "kernels", bw, steps=64))
            except torch.cuda.OutOfMemoryError as e:
                emit(dict(bench="model", kind=kind, B=B, backend="kernels", error=f"OOM: {e}"[:300]))
            torch.cuda.empty_cache()
            if not args.no_reference:
                try:
                    emit(bench_model(model, B, "reference", bw, steps=16))
                except torch.cuda.OutOfMemoryError as e:
                    emit(dict(bench="model", kind=kind, B=B, backend="reference", error=f"OOM: {e}"[:300]))
                torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()

    print(f"\n== TTT layer step alone ({args.dtype} activations, fp32 state, nh=32; mean of the 16 positions) ==")
    print(f"{'kind':6} {'B':>4} {'us':>8} {'GB/s':>7} {'limit us':>9} {'frac':>5} config (tuning, us: (15 x p=8 + p=15) / 16)")
    for r in rows:
        if r.get("bench") == "layer":
            print(
                f"{r['kind']:6} {r['B']:>4} {r['us']:8.1f} {r['gb_s']:7.0f} {r['limit_us']:9.1f} {r['frac_limit']:5.2f} {r['config']} {r['tuning_us_mb_mean']}"
            )
    print(
        f"\n== full model decode, {args.size}{'' if args.layers is None else f' ({args.layers} layers)'}, {args.dtype} =="
    )
    print(f"{'kind':6} {'B':>4} {'backend':9} {'mode':18} {'ms/step':>8} {'tok/s':>9} {'limit':>9} {'frac':>5}")
    for r in rows:
        if r.get("bench") == "model":
            if "error" in r:
                print(f"{r['kind']:6} {r['B']:>4} {r['backend']:9} {r['error'][:40]}")
                continue
            print(
                f"{r['kind']:6} {r['B']:>4} {r['backend']:9} {r['mode']:18} {r['ms']:8.3f} {r['tokens_s']:9.0f} {r['limit_tokens_s']:9.0f} {r['frac_limit']:5.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
