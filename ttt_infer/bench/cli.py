"""`ttt-infer bench` and `ttt-infer figures`."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from .models import MODELS
from .sweep import DTYPES, KINDS, SweepSpec, grid, read_results, run_sweep


def _ints(s: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {s!r}")
    return vals


def _names(allowed: tuple[str, ...]):
    def parse(s: str) -> tuple[str, ...]:
        vals = tuple(v for v in s.split(",") if v)
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"unknown {bad or s!r}; choose from {','.join(allowed)}")
        return vals

    return parse


def gpu_slug(gpu: str | None) -> str:
    """'NVIDIA H200' -> 'h200'; no GPU -> 'cpu'."""
    if not gpu:
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower().replace("nvidia", "")).strip("-") or "gpu"


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run the speed benchmark (prefill, decode, prefill+decode sweeps)")
    p.add_argument("--out", type=Path, help="results JSONL (default results/<gpu>/bench.jsonl); reruns resume it")
    p.add_argument("--full", action="store_true", help="the seed paper's full grid (hours)")
    p.add_argument("--kinds", type=_names(KINDS), default=KINDS, help="subset of prefill,decode,prefill_decode")
    p.add_argument("--models", type=_names(MODELS), help="subset of " + ",".join(MODELS))
    p.add_argument(
        "--backends",
        type=_names(("kernels", "reference", "reference-compiled")),
        help="TTT backends (default kernels,reference; reference-compiled: the reference's decode step torch.compile'd)",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    p.add_argument("--prefill-batches", type=_ints)
    p.add_argument("--prefill-lens", type=_ints)
    p.add_argument("--decode-batches", type=_ints)
    p.add_argument("--decode-gen-lens", type=_ints)
    p.add_argument("--pd-batches", type=_ints, help="prefill+decode batches")
    p.add_argument("--pd-prompt-lens", type=_ints, help="prefill+decode prompt lengths")
    p.add_argument("--pd-gen-len", type=int)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-layers", type=int, help="fewer layers (quick checks; results say so)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring copy bandwidth / matmul rate")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--figures", action="store_true", help="also write figures and bench.md next to the results")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("figures", help="figures and a markdown table from a results file")
    p.add_argument("--results", type=Path, required=True, help="bench JSONL")
    p.add_argument("--out", type=Path, help="folder for PNG + bench.md (default: next to the results)")
    p.add_argument("--readme", type=Path, help="also regenerate this README's results block")
    p.set_defaults(func=cmd_figures)


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    spec = SweepSpec.full() if args.full else SweepSpec()
    spec.dtype = args.dtype
    for field in (
        "models",
        "backends",
        "prefill_batches",
        "prefill_lens",
        "decode_batches",
        "decode_gen_lens",
        "pd_batches",
        "pd_prompt_lens",
        "pd_gen_len",
    ):
        v = getattr(args, field)
        if v is not None:
            setattr(spec, field, v)
    return spec


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from ..env import collect_env
    from .limits import measure_ceilings

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("no CUDA GPU here: the benchmark needs one (use --device cpu only for a dry run)")
    if args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    spec = spec_from_args(args)
    points = [p for p in grid(spec) if p.kind in args.kinds]
    env = collect_env()
    out = args.out or Path("results") / gpu_slug(env.get("gpu")) / "bench.jsonl"
    ceilings = None if args.no_ceilings or not args.device.startswith("cuda") else measure_ceilings(args.device)
    if ceilings:
        c = ceilings.as_dict()
        print(f"ceilings: copy {c['copy_tb_s']:.2f} TB/s, bf16 matmul {c['matmul_tflop_s']:.0f} TFLOP/s")
    t0 = time.perf_counter()
    new = run_sweep(points, out, spec, args.device, args.repeats, args.num_layers, ceilings, env, not args.no_progress)
    took = time.perf_counter() - t0
    print(f"sweep: {len(new)} points measured in {took:.0f} s ({len(points) - len(new)} already in {out})")
    rows = read_results(out)
    print(summary_table(rows))
    if args.figures:
        from .figures import figures_from_file

        figures_from_file(out, out.parent)
    print(f"results: {out}")
    return 0


def summary_table(rows: list[dict]) -> str:
    lines = [f"{'point':<58} {'status':<8} {'ms':>10} {'tokens/s':>10} {'%limit':>7}"]
    for r in rows:
        frac = r.get("fraction_of_limit")
        lines.append(
            f"{r['key']:<58} {r['status']:<8} {r.get('ms', float('nan')):>10.4g} "
            f"{r.get('tokens_per_s', float('nan')):>10.4g} {'' if frac is None else f'{100 * frac:.0f}':>7}"
        )
    return "\n".join(lines)


def cmd_figures(args: argparse.Namespace) -> int:
    from .figures import figures_from_file

    if not args.results.exists():
        raise FileNotFoundError(f"{args.results}: no such results file")
    for path in figures_from_file(args.results, args.out or args.results.parent, args.readme):
        print(path)
    return 0
