"""The benchmark sweep: a grid of points, each measured and appended to a JSONL file as soon as it
finishes (an OOM or failing point is recorded and the sweep goes on; a rerun resumes).

Point kinds (the seed's three sweeps):
- prefill:        the prompt [B, T] once; tokens/s = B*T / time; limit: compute bound.
- decode:         B sequences after a prompt of `prompt_len`, `gen_len` decode steps timed after warm-up;
                  tokens/s = B*gen_len / time; limit: memory bound.
- prefill_decode: prompt [B, T] then `gen_len` decode steps; reports both parts and the total.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .limits import Ceilings, decode_limit_tokens_per_s, prefill_limit_tokens_per_s
from .models import BenchModel, ModelUnavailable, make_bench_model

KINDS = ("prefill", "decode", "prefill_decode")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DECODE_WARMUP = 2  # decode steps before timing (the first captures the CUDA graph)


@dataclass(frozen=True)
class Point:
    kind: str
    model: str
    backend: str  # "kernels" | "reference" | "reference-compiled" for TTT models, "-" for baselines
    batch: int
    prompt_len: int
    gen_len: int = 0
    dtype: str = "fp16"

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.model}|{self.backend}|{self.dtype}|B{self.batch}|T{self.prompt_len}|G{self.gen_len}"

    @property
    def label(self) -> str:
        return self.model if self.backend == "-" else f"{self.model} ({self.backend})"


@dataclass
class SweepSpec:
    """The axes of a sweep; every field can be set from the command line."""

    models: tuple[str, ...] = ("ttt-linear", "ttt-mlp", "transformer", "mamba")
    # "reference-compiled" (torch.compile'd reference decode) is opt-in (--backends): its compile time on
    # the 1b model has not been measured on a GPU yet, and the default sweep must stay under 10 minutes
    backends: tuple[str, ...] = ("kernels", "reference")
    dtype: str = "fp16"
    prefill_batches: tuple[int, ...] = (16,)
    prefill_lens: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768)
    decode_batches: tuple[int, ...] = (1, 16, 64, 256, 512)
    decode_prompt_len: int = 1
    decode_gen_lens: tuple[int, ...] = (128,)
    pd_batches: tuple[int, ...] = (16,)
    pd_prompt_lens: tuple[int, ...] = (2048, 8192, 32768)
    pd_gen_len: int = 128
    extra_prefill: tuple[tuple[int, int], ...] = ((1, 32768),)  # (B, T) for TTT kernels: B=1 long prompt
    # the PyTorch reference is a Python loop over mini-batches (about 3 s for 16 x 2048 tokens of the
    # 1b model on an H200): cap it so that the default sweep stays under 10 minutes
    reference_max_tokens: int = 32768
    reference_max_decode_batch: int = 16
    # and its eager decode steps (60-130 ms each at B <= 16): 16 generated tokens, not 128 (measured on the
    # H200, the reference's 128-token decode points took ~190 s of a ~9.5-minute sweep)
    reference_gen_len: int = 16

    @classmethod
    def full(cls) -> SweepSpec:
        """The seed paper's grid."""
        return cls(
            prefill_batches=(8, 16, 32, 64, 128, 256, 512),
            decode_batches=(64, 128, 256, 512, 1024, 2048, 4096),
            decode_gen_lens=(512, 1024, 2048, 4096, 8192),
            pd_batches=(8, 16, 32, 64, 128, 256, 512),
            pd_prompt_lens=(2048, 4096, 8192, 16384, 32768),
        )


def _model_backends(spec: SweepSpec) -> list[tuple[str, str]]:
    out = []
    for m in spec.models:
        if m.startswith("ttt-"):
            out += [(m, b) for b in spec.backends]
        else:
            out.append((m, "-"))
    return out


def grid(spec: SweepSpec) -> list[Point]:
    pts: list[Point] = []
    for m, be in _model_backends(spec):
        # reference-compiled compiles the decode step only: its prompts are the eager reference's, timed there
        for B in spec.prefill_batches if be != "reference-compiled" else ():
            pts += [Point("prefill", m, be, B, T, 0, spec.dtype) for T in spec.prefill_lens]
        if m.startswith("ttt-") and be == "kernels":
            pts += [Point("prefill", m, be, B, T, 0, spec.dtype) for B, T in spec.extra_prefill]
        cap = (lambda g: min(g, spec.reference_gen_len)) if be.startswith("reference") else (lambda g: g)
        for B in spec.decode_batches:
            pts += [Point("decode", m, be, B, spec.decode_prompt_len, cap(G), spec.dtype) for G in spec.decode_gen_lens]
        for B in spec.pd_batches:
            pts += [Point("prefill_decode", m, be, B, T, cap(spec.pd_gen_len), spec.dtype) for T in spec.pd_prompt_lens]
    return list(dict.fromkeys(pts))  # no duplicates, order kept


def skip_reason(p: Point, spec: SweepSpec) -> str | None:
    """Points deliberately not run, recorded with the reason."""
    if p.backend.startswith("reference"):  # both reference backends prefill in the eager dual form
        if p.kind != "decode" and p.batch * p.prompt_len > spec.reference_max_tokens:
            return (
                f"reference backend capped at {spec.reference_max_tokens} prompt tokens (Python loop over mini-batches)"
            )
        if p.kind == "decode" and p.batch > spec.reference_max_decode_batch:
            return f"reference backend capped at batch {spec.reference_max_decode_batch} for decode"
    return None


# --- timing --------------------------------------------------------------------------------------------
class Timer:
    """CUDA events on a GPU, perf_counter on the CPU; milliseconds."""

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn: Callable[[], None]) -> float:
        if self.cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            return s.elapsed_time(e)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def _ids(B: int, T: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(1, 32000, (B, T), generator=g).to(device)


def measure(model: BenchModel, p: Point, timer: Timer, device: str, repeats: int) -> dict:
    """Time one point; returns the measured fields."""
    if p.kind == "prefill":
        ids = _ids(p.batch, p.prompt_len, device)
        model.prefill(ids)  # warm-up
        ms = statistics.median(timer(lambda: model.prefill(ids)) for _ in range(repeats))
        return {"ms": ms, "tokens_per_s": p.batch * p.prompt_len / (ms / 1e3)}
    ids = _ids(p.batch, p.prompt_len, device)
    if p.kind == "prefill_decode":  # warm-up: a shape's first prefill compiles and tunes (timed once when no
        model.prefill(ids, max_new_tokens=p.gen_len + DECODE_WARMUP)  # prefill point ran before it)
    prefill_ms, decode_ms = [], []
    for _ in range(repeats if p.kind == "decode" else 1):
        prefill_ms.append(timer(lambda: model.prefill(ids, max_new_tokens=p.gen_len + DECODE_WARMUP)))
        for _ in range(DECODE_WARMUP):
            model.decode()

        def steps() -> None:
            for _ in range(p.gen_len):
                model.decode()

        decode_ms.append(timer(steps))
    pre, dec = statistics.median(prefill_ms), statistics.median(decode_ms)
    out = {
        "decode_ms": dec,
        "decode_ms_per_step": dec / p.gen_len,
        "decode_tokens_per_s": p.batch * p.gen_len / (dec / 1e3),
    }
    if p.kind == "decode":
        out.update(ms=dec, tokens_per_s=out["decode_tokens_per_s"])
    else:
        out.update(
            prefill_ms=pre, ms=pre + dec, tokens_per_s=p.batch * (p.prompt_len + p.gen_len) / ((pre + dec) / 1e3)
        )
    return out


def limit_fields(model: BenchModel, p: Point, res: dict, ceilings: Ceilings | None) -> dict:
    """Fraction of the physical limit: compute bound for prefill, memory bound for decode."""
    if ceilings is None:
        return {}
    out: dict = {}
    flops = getattr(model, "prefill_flops_per_token", None)
    if p.kind in ("prefill", "prefill_decode") and flops:
        fpt = flops(p.prompt_len) if callable(flops) else flops
        lim = prefill_limit_tokens_per_s(fpt, ceilings)
        out["prefill_limit_tokens_per_s"] = lim
        tps = res["tokens_per_s"] if p.kind == "prefill" else p.batch * p.prompt_len / (res["prefill_ms"] / 1e3)
        out["prefill_fraction_of_limit"] = tps / lim
    state = getattr(model, "decode_state_bytes", None)
    weight_bytes = getattr(model, "weight_bytes", None)
    if p.kind in ("decode", "prefill_decode") and state is not None and weight_bytes:
        ctx = p.prompt_len + p.gen_len / 2  # mean context during the timed steps
        lim = decode_limit_tokens_per_s(weight_bytes, p.batch, state(ctx), ceilings)
        out["decode_limit_tokens_per_s"] = lim
        out["decode_fraction_of_limit"] = res["decode_tokens_per_s"] / lim
    out["fraction_of_limit"] = out.get(
        "prefill_fraction_of_limit" if p.kind == "prefill" else "decode_fraction_of_limit"
    )
    return out


# --- the sweep -----------------------------------------------------------------------------------------
def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that point runs again
    return rows


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def run_sweep(
    points: Iterable[Point],
    out: Path,
    spec: SweepSpec,
    device: str = "cuda",
    repeats: int = 3,
    num_layers: int | None = None,
    ceilings: Ceilings | None = None,
    env: dict | None = None,
    progress: bool = True,
    factory: Callable[..., BenchModel] = make_bench_model,
) -> list[dict]:
    """Measure every point not already in `out` (resume), appending one JSON line per point."""
    from tqdm import tqdm

    done = {r["key"] for r in read_results(out) if "key" in r}
    todo = [p for p in points if p.key not in done]
    timer = Timer(device)
    rows: list[dict] = []
    stamp = {"env": env or {}, "ceilings": ceilings.as_dict() if ceilings else None}
    bar = tqdm(total=len(todo), disable=not progress, desc="bench", unit="pt")
    # build each model once, for all of its points
    groups: dict[tuple[str, str], list[Point]] = {}
    for p in todo:
        groups.setdefault((p.model, p.backend), []).append(p)
    for (name, backend), pts in groups.items():
        model, unavailable = None, None
        try:
            model = factory(name, DTYPES[pts[0].dtype], device, backend if backend != "-" else "kernels", num_layers)
        except ModelUnavailable as e:
            unavailable = str(e)
        except torch.OutOfMemoryError as e:
            unavailable = f"out of memory building the model: {e}"
        for p in pts:
            bar.set_postfix_str(p.key)
            row = {"key": p.key, **asdict(p), "label": p.label, "num_layers": num_layers, **stamp}
            reason = unavailable or skip_reason(p, spec)
            if reason:
                row.update(status="skipped", reason=reason)
            else:
                row.update(implementation=model.implementation, params=model.params)
                try:
                    res = measure(model, p, timer, device, repeats)
                    row.update(status="ok", **res, **limit_fields(model, p, res, ceilings))
                    details = getattr(model, "details", None)  # e.g. the decode kernel configuration chosen
                    if details is not None and (d := details(p)):
                        row["details"] = d
                except torch.OutOfMemoryError as e:
                    row.update(status="oom", reason=str(e).splitlines()[0])
                except Exception as e:  # recorded, and the sweep goes on
                    row.update(status="error", reason=f"{type(e).__name__}: {e}".splitlines()[0])
                finally:
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
            # when it was measured: the first and last rows give the sweep's duration
            row["time_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            append(out, row)
            rows.append(row)
            bar.update(1)
        if model is not None:
            model.close()
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    bar.close()
    return rows
