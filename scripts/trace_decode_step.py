"""The CUDA TTT-MLP decode step's timeline, CTA by CTA, for one launch:

    python scripts/trace_decode_step.py --batches 16,64,512 --positions 8,15 --configs cu:8:3,cu:8:2

Each CTA (one (sequence, head) pair) records the SM it runs on and %globaltimer at its entry and after each
phase (MlpTraceSlot in csrc/ttt_mlp_decode.cu), through a separate instantiation of the kernel compiled with
those marks (same registers and spills as the normal one: one thread's global store a phase). From that, per
launch: the span, how long a CTA lives (all of them, and those still alive once fewer than 90% of the peak are:
the tail), how many CTAs are alive over time, how long the ramp and the tail last, how evenly the SMs finish,
and the phases' durations (all CTAs, and the tail's). Tail CTAs that live as long as the others point to a
CTA's own chain; shorter lives there point to contention for bandwidth in the full waves. docs/perf-notes.md
("The TTT-MLP step's timeline, CTA by CTA") has what it found (run 40).

The same random state as scripts/profile_decode_step.py (bf16 activations, fp32 state). Each point also times
the normal (untraced) kernel with CUDA events over a few eager launches, beside the traced span: at small batches
that time is the host's launch cost (e.g. ~55 us at B=16 against a ~26 us span), not the kernel's. Needs a CUDA
GPU and the built extension; `summarize` (the analysis) is plain Python, tested on the CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ttt_infer.kernels.decode.cuda import TRACE_FIELDS as FIELDS  # noqa: E402  (sm, then the marks in order)

PHASES = [(FIELDS[i], FIELDS[i + 1]) for i in range(1, len(FIELDS) - 1)]  # (from, to) mark pairs
FULL = 0.9  # "full": at least this share of the peak number of CTAs alive


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _alive(starts: list[float], ends: list[float]) -> list[tuple[float, float, int]]:
    """(from, to, CTAs alive) for each stretch of time between two CTA starts or ends, in time order."""
    ev = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    out, n = [], 0
    for (t, d), (t2, _) in zip(ev, ev[1:], strict=False):
        n += d
        if t2 > t:
            out.append((t, t2, n))
    return out


def summarize(rows: list[list[int]]) -> dict:
    """The timeline's summary: rows are the trace buffer's (one a pair: the fields of FIELDS, times in ns)."""
    if not rows:
        raise ValueError("an empty trace")
    rec = [dict(zip(FIELDS, r, strict=True)) for r in rows]
    if any(r["entry"] == 0 or r["out"] == 0 for r in rec):
        raise ValueError("a CTA left no entry or out mark: was the traced kernel launched?")
    t0 = min(r["entry"] for r in rec)
    us = [{k: (r[k] - t0) / 1e3 for k in FIELDS[1:] if r[k]} for r in rec]  # absent marks (no update) left out
    start = [u["entry"] for u in us]
    end = [u.get("update", u["out"]) for u in us]
    life = [e - s for s, e in zip(start, end, strict=True)]
    curve = _alive(start, end)
    span = max(end)
    if not curve:  # every CTA started and ended at one instant (a clock too coarse to tell)
        raise ValueError("the trace has no duration")
    peak = max(n for _, _, n in curve)
    full = [(t1, t2) for t1, t2, n in curve if n >= FULL * peak]
    ramp_us, tail_from = full[0][0], full[-1][1]  # the first full stretch's start, the last one's end
    mean_alive = sum(n * (t2 - t1) for t1, t2, n in curve) / span  # time-weighted over the span
    in_tail = [e > tail_from for e in end]  # still alive once the SMs are no longer full
    tail = [lf for lf, t in zip(life, in_tail, strict=True) if t]
    per_sm: dict[int, list[float]] = {}
    for r, e in zip(rec, end, strict=True):
        per_sm.setdefault(int(r["sm"]), []).append(e)
    sm_last = [max(v) for v in per_sm.values()]

    def phases(sel: list[dict]) -> dict:
        out = {}
        for a, b in PHASES:
            d = [u[b] - u[a] for u in sel if a in u and b in u]
            if d:
                out[f"{a}->{b}"] = {"mean_us": sum(d) / len(d), "p90_us": _pct(d, 0.9)}
        return out

    return {
        "ctas": len(rec), "sms": len(per_sm), "span_us": span, "peak_alive": peak, "mean_alive": mean_alive,
        "ramp_us": ramp_us, "tail_us": span - tail_from,
        "life_us": {"min": min(life), "p10": _pct(life, 0.1), "p50": _pct(life, 0.5), "p90": _pct(life, 0.9),
                    "max": max(life)},
        "tail_ctas": len(tail), "tail_life_p50_us": _pct(tail, 0.5) if tail else None,
        "ctas_per_sm": {"min": min(len(v) for v in per_sm.values()), "max": max(len(v) for v in per_sm.values())},
        "sm_finish_spread_us": max(sm_last) - min(sm_last),
        "phases": phases(us), "tail_phases": phases([u for u, t in zip(us, in_tail, strict=True) if t]),
    }  # fmt: skip


def report(s: dict, label: str) -> str:
    lf = s["life_us"]
    tail = f"{s['tail_life_p50_us']:.1f}" if s["tail_life_p50_us"] is not None else "-"
    lines = [
        f"== {label}: {s['ctas']} CTAs on {s['sms']} SMs ({s['ctas_per_sm']['min']}-{s['ctas_per_sm']['max']} an SM), "
        f"span {s['span_us']:.1f} us, alive peak {s['peak_alive']} mean {s['mean_alive']:.0f}",
        f"   ramp to {FULL:.0%} of the peak {s['ramp_us']:.1f} us, tail below it {s['tail_us']:.1f} us "
        f"({s['tail_ctas']} CTAs alive in it, median life {tail} us); SMs finish within {s['sm_finish_spread_us']:.1f} us",
        f"   a CTA's life, us: min {lf['min']:.1f} p10 {lf['p10']:.1f} p50 {lf['p50']:.1f} p90 {lf['p90']:.1f} "
        f"max {lf['max']:.1f}",
    ]  # fmt: skip
    for name, key in (("all CTAs", "phases"), ("the tail's", "tail_phases")):
        if s[key]:
            lines.append(f"   phases, {name} (mean / p90 us): "
                         + ", ".join(f"{k} {v['mean_us']:.2f}/{v['p90_us']:.2f}" for k, v in s[key].items()))  # fmt: skip
    return "\n".join(lines)


def _profile_inputs():
    spec = importlib.util.spec_from_file_location(
        "profile_decode_step", Path(__file__).with_name("profile_decode_step.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_inputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="16,64,512")
    ap.add_argument("--positions", default="8,15", help="tokens before the traced one (15: the update)")
    ap.add_argument("--configs", default="cu:8:3,cu:8:2", help="CUDA step configurations (cu:8:<CTAs an SM>)")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--launches", type=int, default=5, help="untraced launches timed for comparison")
    ap.add_argument("--out", help="append one JSON line a point (stamped with the environment)")
    args = ap.parse_args(argv)
    from ttt_infer.kernels import decode
    from ttt_infer.kernels.decode import cuda

    if not (torch.cuda.is_available() and cuda.available()):
        print("needs a CUDA GPU and the built extension (python -m ttt_infer.kernels.build)", file=sys.stderr)
        return 1
    from ttt_infer.env import collect_env

    env = collect_env()
    make_inputs = _profile_inputs()
    for cfg in args.configs.split(","):
        os.environ["TTT_DECODE_CONFIG"] = f"mlp={cfg}"
        for B in (int(b) for b in args.batches.split(",")):
            for p in (int(x) % 16 for x in args.positions.split(",")):
                st, ins, pos = make_inputs("mlp", B, args.heads, p, "cuda", torch.bfloat16)
                out = torch.empty(B, args.heads, 1, 64, device="cuda")
                for _ in range(args.warmup):
                    decode.ttt_decode_step(st, *ins, pos, out=out)
                t = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
                t[0].record()
                for _ in range(args.launches):
                    decode.ttt_decode_step(st, *ins, pos, out=out)
                t[1].record()
                torch.cuda.synchronize()
                plain_us = t[0].elapsed_time(t[1]) * 1e3 / args.launches
                buf = torch.zeros(B * args.heads, cuda.TRACE_SLOTS, dtype=torch.int64, device="cuda")
                with cuda.tracing(buf):
                    for _ in range(2):  # the traced kernel's first launch loads it: the second one counts
                        buf.zero_()
                        decode.ttt_decode_step(st, *ins, pos, out=out)
                torch.cuda.synchronize()
                s = summarize(buf[:, : len(FIELDS)].cpu().tolist())
                label = f"cu config {cfg}, B={B} (pairs {B * args.heads}), p={p}: untraced {plain_us:.1f} us a launch"
                print(report(s, label), flush=True)
                if args.out:
                    with open(args.out, "a") as fh:
                        fh.write(json.dumps({"config": cfg, "B": B, "heads": args.heads, "position": p,
                                             "untraced_us": plain_us, **s, "env": env}) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
