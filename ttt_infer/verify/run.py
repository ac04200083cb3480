"""`ttt-infer verify`: the seed's empirical verification, made a pass/fail gate.

For each TTT layer type and each low precision dtype, the same weights run as
  fp64  the PyTorch reference in float64 (the ground truth),
  ref   the PyTorch reference in the dtype,
  cand  the candidate backend (default "kernels") in the dtype,
on the same inputs:
  prefill  a random batch [B, T] in one forward pass: T logits per sequence;
  decode   one token in, then S decode steps, teacher-forced on ONE shared token stream (by default
           the fp64 reference's greedy continuation of a random first token; `--stream random` feeds
           random tokens), so every implementation sees the same input at every step.
On CUDA with the kernels backend the candidate's decode curves come from the CUDA-graph decoder, its
production path (`generate`). Per time step (metrics.py): the seed's TV, the true TV, the share of differing argmax tokens, for
cand vs ref, cand vs fp64 and ref vs fp64.

Checks (each pass / fail / not run; the command exits 1 if any fails), per layer type and dtype:
  {prefill,decode}.token_diff_mean      mean over steps of the share of differing tokens, cand vs ref
                                        <= max_token_diff (1%)
  {prefill,decode}.tv_max               max over steps of the batch-mean true TV, cand vs ref <= max_tv (1%)
  {prefill,decode}.error_ratio_vs_fp64  err(cand) <= max_error_ratio (2) x err(ref), where err(X) is the
                                        mean over steps and sequences of the true TV between X and fp64
  chain.prefill_then_decode             cand prefill of a prompt (length not a multiple of 16) then cand
                                        decode vs the same with the reference: max TV <= max_tv and mean
                                        token_diff <= max_token_diff
  graph.replay_vs_eager                 decode through the CUDA-graph decoder (kernels/graphs.py) vs eager
                                        decode (the chain's number of steps), from an empty cache and after
                                        the chain's prompt: identical
                                        tokens and max |logit difference| <= graph_atol. Only on CUDA with
                                        the kernels backend; otherwise "not run" (never "pass").
Precision floor (default; `--strict` turns it off): the two absolute gates (token diff, TV) are raised
to max_error_ratio x the same metric of ref vs fp64 where that is larger than the given threshold. On
random-init weights the next-token distribution is nearly flat, so a rounding-sized change flips the
argmax of ~1% (fp16) to ~8% (bf16) of the positions for the PyTorch reference itself against fp64;
no implementation in that precision can meet a 1% gate there. The check's reason says when the floor
decided; the error-ratio gate is unchanged.
A candidate that raises fails its checks ("*.candidate_runs"); the other dtypes and layer types still run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import metrics

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYER_TYPES = ("linear", "mlp")
PASS, FAIL, NOT_RUN = "pass", "fail", "not run"


@dataclass
class Thresholds:
    max_token_diff: float = 0.01  # mean over steps of the share of differing tokens (cand vs ref)
    max_tv: float = 0.01  # max over steps of the batch-mean true TV (cand vs ref)
    max_error_ratio: float = 2.0  # err(cand vs fp64) <= this x err(ref vs fp64); err = mean true TV
    graph_atol: float = 1e-3  # graph replay vs eager: max |logit difference| (tokens must be identical)
    # the absolute gates (token diff, TV) are raised to max_error_ratio x the same metric of the same-precision
    # reference against fp64 when that is larger ("precision floor"): a candidate cannot be asked to agree with
    # the reference more closely than the reference agrees with exact arithmetic. strict=True: spec values only.
    strict: bool = False

    def limit(self, spec: float, floor: float | None) -> tuple[float, str]:
        """The effective threshold of an absolute gate and why (for the check's reason)."""
        if self.strict or floor is None or self.max_error_ratio * floor <= spec:
            return spec, ""
        lim = self.max_error_ratio * floor
        return lim, f"precision floor: {self.max_error_ratio:g} x ref vs fp64 ({floor:.4g}) > spec {spec:g}"


@dataclass
class VerifyConfig:
    layer_types: list[str] = field(default_factory=lambda: list(LAYER_TYPES))
    dtypes: list[str] = field(default_factory=lambda: ["fp16", "bf16"])
    batch: int = 32
    prefill_len: int = 512
    decode_len: int = 512
    candidate: str = "kernels"
    reference: str = "reference"
    device: str = "cuda"
    seed: int = 0
    checkpoints: list[str] = field(default_factory=list)  # one per layer type; empty = random init
    size: str = "1b"
    backbone: str = "mamba"
    overrides: dict = field(default_factory=dict)  # TTTConfig overrides for random init (tiny tests)
    stream: str = "fp64"  # decode token stream: the fp64 reference's greedy tokens, or "random"
    chain_prompt_len: int | None = None  # default prefill_len - 7 (not a multiple of 16 for T = 512)
    chain_steps: int | None = None  # default min(48, decode_len)
    progress: bool = True
    metric_chunk: int = 32
    thresholds: Thresholds = field(default_factory=Thresholds)

    def resolved_chain(self) -> tuple[int, int]:
        tp = self.chain_prompt_len if self.chain_prompt_len is not None else max(1, self.prefill_len - 7)
        steps = self.chain_steps if self.chain_steps is not None else min(48, self.decode_len)
        return tp, steps

    def validate(self) -> None:
        for lt in self.layer_types:
            if lt not in LAYER_TYPES:
                raise ValueError(f"unknown layer type {lt!r}; choose from {LAYER_TYPES}")
        for d in self.dtypes:
            if d not in DTYPES:
                raise ValueError(f"unknown dtype {d!r}; choose from {sorted(DTYPES)}")
        if not self.layer_types or not self.dtypes:
            raise ValueError("need at least one layer type and one dtype")
        for name in ("batch", "prefill_len", "decode_len", "metric_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        tp, steps = self.resolved_chain()
        if not 1 <= tp <= self.prefill_len:
            raise ValueError(f"chain prompt length must be in [1, prefill_len={self.prefill_len}], got {tp}")
        if not 0 <= steps <= self.decode_len:
            raise ValueError(f"chain steps must be in [0, decode_len={self.decode_len}], got {steps}")
        if self.stream not in ("fp64", "random"):
            raise ValueError(f"stream must be 'fp64' or 'random', got {self.stream!r}")
        if self.checkpoints and self.overrides:
            raise ValueError(f"config overrides {sorted(self.overrides)} only apply to random-init models")
        if not self.checkpoints:  # the configs (not the models) now, so that a bad size fails at once
            from ..config import TTTConfig

            for lt in self.layer_types:
                TTTConfig.standard(self.size, lt, self.backbone, **self.overrides)
        t = self.thresholds
        for name in ("max_token_diff", "max_tv", "max_error_ratio", "graph_atol"):
            v = getattr(t, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"threshold {name} must be a finite number >= 0, got {v!r}")


# --- models --------------------------------------------------------------------------------------------
def model_factories(vc: VerifyConfig) -> dict[str, Callable[[torch.dtype], torch.nn.Module]]:
    """layer type -> (dtype -> model on vc.device in that dtype, reference backend). Same weights for every dtype."""
    from .. import TTTConfig, TTTForCausalLM

    out: dict[str, Callable[[torch.dtype], torch.nn.Module]] = {}
    if vc.checkpoints:
        from .. import load_pretrained

        for ckpt in vc.checkpoints:
            cfg = TTTConfig.from_json(Path(ckpt) / "config.json")
            if cfg.ttt_layer_type in out:
                raise ValueError(f"two checkpoints of layer type {cfg.ttt_layer_type!r}")
            out[cfg.ttt_layer_type] = lambda dt, ckpt=ckpt: load_pretrained(ckpt, dtype=dt, device=vc.device)
        return out
    for lt in vc.layer_types:

        def make(dt: torch.dtype, lt: str = lt, master: list = []) -> torch.nn.Module:  # noqa: B006
            if not master:  # built once per layer type, on CPU in fp32, from the fixed seed
                torch.manual_seed(vc.seed)
                cfg = TTTConfig.standard(vc.size, lt, vc.backbone, **vc.overrides)
                master.append(TTTForCausalLM(cfg).eval())
            return copy.deepcopy(master[0]).to(device=vc.device, dtype=dt)

        out[lt] = make
    return out


# --- runs ------------------------------------------------------------------------------------------------
def _bar(it, desc: str, on: bool):
    from tqdm import tqdm

    return tqdm(it, desc=desc, disable=not on, leave=False, dynamic_ncols=True, file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _out_dtype(model) -> torch.dtype:
    return torch.float64 if model.dtype == torch.float64 else torch.float32


@torch.no_grad()
def prefill(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] of one forward pass over ids [B, T]."""
    return model(ids)


@torch.no_grad()
def decode(model, tokens: torch.Tensor, desc: str = "decode", progress: bool = False, greedy: bool = False):
    """Decode step by step from an empty cache, feeding tokens[:, t] at step t: logits [B, S, V].

    greedy=True overwrites tokens[:, t + 1] with the argmax of step t (tokens is then the stream).
    """
    B, S = tokens.shape
    cache = model.new_cache(B)
    out = torch.empty(B, S, model.config.vocab_size, device=model.device, dtype=_out_dtype(model))
    for t in _bar(range(S), desc, progress):
        out[:, t] = model.decode_step(tokens[:, t], cache)
        if greedy and t + 1 < S:
            tokens[:, t + 1] = out[:, t].argmax(-1)
    return out


@torch.no_grad()
def chain(model, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Prefill `prompt` [B, Tp], then decode tokens [B, S]: logits [B, Tp + S, V] (prompt's, then each step's)."""
    cache = model.new_cache(prompt.shape[0])
    parts = [model(prompt, cache)]
    for t in range(tokens.shape[1]):
        parts.append(model.decode_step(tokens[:, t], cache)[:, None])
    return torch.cat(parts, dim=1)


@torch.no_grad()
def graph_decode(
    model, tokens: torch.Tensor, prompt: torch.Tensor | None = None, desc: str = "graph", progress: bool = False
) -> torch.Tensor:
    """Like `decode` (after prefilling `prompt`, if given), through the project's CUDA-graph decoder
    (kernels/graphs.py, what `generate` uses): step 0 runs eagerly and captures, steps 1.. replay.
    Returns logits [B, S, V]."""
    from ..kernels.graphs import CUDAGraphDecoder

    B, S = tokens.shape
    cache = model.new_cache(B)
    if prompt is not None:
        model(prompt, cache)
    dec = CUDAGraphDecoder(model, cache)
    out = torch.empty(B, S, model.config.vocab_size, device=model.device, dtype=_out_dtype(model))
    for t in _bar(range(S), desc, progress):
        out[:, t] = dec.step(tokens[:, t])
    return out


# --- checks ------------------------------------------------------------------------------------------------
def _check(checks: list, name: str, layer: str, dtype: str, value, threshold, ok: bool | None, reason: str = ""):
    status = NOT_RUN if ok is None else PASS if ok else FAIL
    checks.append(
        dict(name=name, layer=layer, dtype=dtype, value=value, threshold=threshold, status=status, reason=reason)
    )


def _pair(a: torch.Tensor, b: torch.Tensor, chunk: int) -> dict:
    curves = metrics.compare_logits(a, b, chunk)
    d = {k: v.cpu().tolist() for k, v in curves.items()}
    d["summary"] = metrics.summarize(curves)
    return d


def phase_checks(checks: list, phase: str, layer: str, dtype: str, res: dict, th: Thresholds) -> None:
    """The three threshold checks of one phase (prefill or decode) from its three comparisons."""
    cr, cf, rf = (res[p]["summary"] for p in ("cand_vs_ref", "cand_vs_fp64", "ref_vs_fp64"))
    res["floor"] = dict(token_diff_mean=rf.get("token_diff_mean"), tv_max=rf.get("tv_max"))
    for metric, spec in (("token_diff_mean", th.max_token_diff), ("tv_max", th.max_tv)):
        v = cr[metric]
        lim, why = th.limit(spec, res["floor"][metric])
        _check(checks, f"{phase}.{metric}", layer, dtype, v, lim, v <= lim, why)
    err_c, err_r = cf["tv_mean"], rf["tv_mean"]
    ratio = err_c / err_r if err_r > 0 else (0.0 if err_c == 0 else math.inf)
    res["error"] = dict(cand_vs_fp64=err_c, ref_vs_fp64=err_r, ratio=ratio)
    _check(
        checks,
        f"{phase}.error_ratio_vs_fp64",
        layer,
        dtype,
        ratio,
        th.max_error_ratio,
        err_c <= th.max_error_ratio * err_r,
        f"err(cand)={err_c:.3e} err(ref)={err_r:.3e} (mean true TV vs fp64)",
    )


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def verify_layer(vc: VerifyConfig, layer: str, make, checks: list, log: Callable[[str], None]) -> dict:
    """Every run and check for one layer type; returns its results (curves, summaries, timings)."""
    dev, th, pg, ch = torch.device(vc.device), vc.thresholds, vc.progress, vc.metric_chunk
    timings: dict[str, float] = {}

    def timed(key: str, fn, *a, **k):
        _sync(dev)
        t0 = time.perf_counter()
        r = fn(*a, **k)
        _sync(dev)
        timings[key] = round(time.perf_counter() - t0, 3)
        return r

    model = make(torch.float64)
    cfg = model.config
    g = torch.Generator().manual_seed(vc.seed)
    ids = torch.randint(0, cfg.vocab_size, (vc.batch, vc.prefill_len), generator=g).to(dev)
    stream = torch.randint(0, cfg.vocab_size, (vc.batch, vc.decode_len), generator=g).to(dev)
    tp, steps = vc.resolved_chain()

    model.backend = vc.reference
    L64 = timed("fp64.prefill", prefill, model, ids)
    D64 = timed("fp64.decode", decode, model, stream, f"{layer} fp64 decode", pg, greedy=vc.stream == "fp64")
    del model
    _free(dev)
    out: dict = dict(config=cfg.to_dict(), timings=timings, stream=vc.stream)

    for dname in vc.dtypes:
        log(f"[{layer} {dname}] running reference and {vc.candidate} ...")
        model = make(DTYPES[dname])
        model.backend = vc.reference
        Lr = timed(f"{dname}.ref.prefill", prefill, model, ids)
        Dr = timed(f"{dname}.ref.decode", decode, model, stream, f"{layer} {dname} ref decode", pg)
        Cr = timed(f"{dname}.ref.chain", chain, model, ids[:, :tp], stream[:, :steps])
        # informational noise floor: the reference against itself by its other algorithm, same dtype
        # (dual-form prefill of the decode stream vs the primal-form decode steps): how far apart two
        # correct implementations in this precision are
        res: dict = {"noise_floor": _pair(prefill(model, stream), Dr, ch)}
        # the kernels' production decode is the CUDA-graph decoder (what `generate` uses): the decode curves
        # come from it, and eager kernel decode is compared with it over the chain's number of steps
        use_graph = dev.type == "cuda" and vc.candidate == "kernels"
        try:
            model.backend = vc.candidate
            Lc = timed(f"{dname}.cand.prefill", prefill, model, ids)
            De = None
            if use_graph:
                Dc = timed(
                    f"{dname}.cand.graph_decode", graph_decode, model, stream, None, f"{layer} {dname} graph", pg
                )
                De = timed(f"{dname}.cand.eager_decode", decode, model, stream[:, :steps])
            else:
                Dc = timed(f"{dname}.cand.decode", decode, model, stream, f"{layer} {dname} {vc.candidate} decode", pg)
            Cc = timed(f"{dname}.cand.chain", chain, model, ids[:, :tp], stream[:, :steps])
        except Exception as e:  # KernelsUnavailable, or the candidate's own error: its checks fail, the run goes on
            reason = f"candidate {vc.candidate!r} raised {type(e).__name__}: {e}"
            log(f"[{layer} {dname}] FAIL: {reason}")
            traceback.print_exc(file=sys.stderr)
            for name in ("prefill", "decode", "chain", "graph"):
                _check(checks, f"{name}.candidate_runs", layer, dname, None, None, False, reason)
            out[dname] = dict(error=reason)
            del model
            _free(dev)
            continue
        for phase, (c, r, f) in dict(prefill=(Lc, Lr, L64), decode=(Dc, Dr, D64)).items():
            res[phase] = dict(cand_vs_ref=_pair(c, r, ch), cand_vs_fp64=_pair(c, f, ch), ref_vs_fp64=_pair(r, f, ch))
            phase_checks(checks, phase, layer, dname, res[phase], th)
        del Lc, Lr

        # the pieces: cand prefill -> cand decode vs ref prefill -> ref decode
        cmp = _pair(Cc, Cr, ch)
        s = cmp["summary"]
        s["max_abs_logit_diff"] = float((Cc - Cr).abs().max())
        res["chain"] = dict(prompt_len=tp, steps=steps, **cmp)
        floor = res["decode"]["floor"]  # the chain has no fp64 run of its own: decode's floor, same model/dtype
        (lim_tv, why_tv), (lim_tok, why_tok) = (th.limit(th.max_tv, floor["tv_max"]),
                                                th.limit(th.max_token_diff, floor["token_diff_mean"]))  # fmt: skip
        ok = s["tv_max"] <= lim_tv and s["token_diff_mean"] <= lim_tok
        _check(
            checks,
            "chain.prefill_then_decode",
            layer,
            dname,
            dict(tv_max=s["tv_max"], token_diff_mean=s["token_diff_mean"]),
            dict(max_tv=lim_tv, max_token_diff=lim_tok),
            ok,
            "; ".join(
                [f"prompt {tp} tokens then {steps} decode steps; max |logit diff| {s['max_abs_logit_diff']:.3e}"]
                + [f"{w} ({m})" for w, m in ((why_tv, "tv"), (why_tok, "tokens")) if w]
            ),
        )

        # CUDA-graph replay vs eager decode: from an empty cache (Dc vs De) and after the chain's prompt (vs Cc)
        if not use_graph:
            why = "needs a CUDA device" if dev.type != "cuda" else f"only for the kernels backend, not {vc.candidate!r}"
            _check(checks, "graph.replay_vs_eager", layer, dname, None, th.graph_atol, None, why)
            res["graph"] = dict(status=NOT_RUN, reason=why)
        else:
            try:
                Dg = Dc[:, :steps]
                Cg = timed(f"{dname}.cand.graph_chain", graph_decode, model, stream[:, :steps], ids[:, :tp])
            except Exception as e:  # capture or replay failed: the check fails, the run goes on
                reason = f"graph capture/replay raised {type(e).__name__}: {e}"
                traceback.print_exc(file=sys.stderr)
                _check(checks, "graph.replay_vs_eager", layer, dname, None, th.graph_atol, False, reason)
                res["graph"] = dict(status=FAIL, reason=reason)
            else:
                diff = max(float((Dg - De).abs().max()), float((Cg - Cc[:, tp:]).abs().max()) if steps else 0.0)
                tok = max(
                    float(metrics.token_diff(Dg, De).max()) if steps else 0.0,
                    float(metrics.token_diff(Cg, Cc[:, tp:]).max()) if steps else 0.0,
                )
                res["graph"] = dict(
                    max_abs_logit_diff=diff,
                    token_diff_max=tok,
                    steps=steps,
                    after_prompt=dict(prompt_len=tp, steps=steps),
                )
                ok = math.isfinite(diff) and diff <= th.graph_atol and tok == 0.0
                _check(
                    checks,
                    "graph.replay_vs_eager",
                    layer,
                    dname,
                    dict(max_abs_logit_diff=diff, token_diff_max=tok),
                    th.graph_atol,
                    ok,
                    f"{steps} steps from an empty cache and {steps} after a {tp}-token prompt; "
                    "step 0 of each eager (capture), the rest replayed",
                )
                del Dg, Cg
        del Cc, Cr, De
        del Dc, Dr, model
        _free(dev)
        out[dname] = res
        _print_layer_dtype(log, layer, dname, res)
    return out


def _print_layer_dtype(log, layer: str, dname: str, res: dict) -> None:
    nf = res["noise_floor"]["summary"]
    log(
        f"[{layer} {dname}] noise floor (reference dual-form prefill vs primal decode of the stream, same dtype): "
        f"tokens {100 * nf['token_diff_mean']:.3f}% (mean), TV {100 * nf['tv_max']:.4f}% (max)"
    )
    for phase in ("prefill", "decode"):
        cr, cf, rf = (res[phase][p]["summary"] for p in ("cand_vs_ref", "cand_vs_fp64", "ref_vs_fp64"))
        e = res[phase]["error"]
        log(
            f"[{layer} {dname}] {phase:7s} cand vs ref: tokens {100 * cr['token_diff_mean']:.3f}% (mean), "
            f"TV {100 * cr['tv_max']:.4f}% (max), seed TV {100 * cr['seed_tv_max']:.4f}% (max) | vs fp64: "
            f"mean TV cand {100 * e['cand_vs_fp64']:.4f}% ref {100 * e['ref_vs_fp64']:.4f}% (ratio {e['ratio']:.3f}), "
            f"tokens cand {100 * cf['token_diff_mean']:.3f}% ref {100 * rf['token_diff_mean']:.3f}%"
        )


def _decode_kernel_configs(vc: VerifyConfig) -> dict[str, str]:
    """The decode kernel configurations the tuner picked for the kernel candidate so far ({} for others; those
    forced through TTT_DECODE_CONFIG are in env.settings)."""
    if vc.candidate != "kernels":
        return {}
    from ..kernels import decode

    return decode.tuned_configs()


def run_verify(vc: VerifyConfig, out_dir: str | Path | None, log: Callable[[str], None] = print) -> dict:
    """All runs and checks; writes summary.json and the figures to out_dir (when given). Returns the summary.

    The files are rewritten after each layer type (with "complete": false until the end), so a run cut
    short keeps what it finished.
    """
    from .. import model as model_mod
    from ..env import collect_env

    vc.validate()
    if out_dir is not None:  # the figures need matplotlib: find out now, not after the runs
        try:
            from . import figures  # noqa: F401
        except ImportError as e:
            raise ValueError(f"the figures need matplotlib ({e}): pip install 'ttt-infer[figures]'") from e
    model_mod.get_backend(vc.candidate)  # fail early (KernelsUnavailable) before the long fp64 runs
    factories = model_factories(vc)
    layers = list(factories) if vc.checkpoints else [lt for lt in vc.layer_types if lt in factories]
    checks: list[dict] = []
    results: dict = {}
    env = collect_env()
    t0 = time.perf_counter()

    def summarize(complete: bool) -> dict:
        failed = [c for c in checks if c["status"] == FAIL]
        not_run = [c for c in checks if c["status"] == NOT_RUN]
        return dict(
            passed=complete and not failed,
            complete=complete,
            n_checks=len(checks),
            n_failed=len(failed),
            n_not_run=len(not_run),
            wall_s=round(time.perf_counter() - t0, 1),
            env=env,
            settings={k: v for k, v in asdict(vc).items() if k != "thresholds"},
            thresholds=asdict(vc.thresholds),
            metric_definitions=dict(
                seed_tv="1/B sum_i max_v |p - p'| (the seed's 'total variation'), per time step",
                tv="1/B sum_i 1/2 sum_v |p - p'| (true total variation), per time step",
                token_diff="1/B sum_i I[argmax p != argmax p'], per time step",
                tv_max_seq="max_i 1/2 sum_v |p - p'| (worst sequence), per time step",
                error="mean over steps and sequences of the true TV against the float64 reference",
            ),
            checks=checks,
            results=results,
            decode_kernel_configs=_decode_kernel_configs(vc),
        )

    summary = summarize(False)
    for layer in layers:
        results[layer] = verify_layer(vc, layer, factories.pop(layer), checks, log)  # pop: frees its weights
        summary = summarize(layer == layers[-1])
        if out_dir is not None:
            write_outputs(summary, out_dir, vc)
    log_checks(summary, log)
    return summary


def write_outputs(summary: dict, out_dir: str | Path, vc: VerifyConfig) -> None:
    """summary.json, the figures of the layer types done so far, verify_combined.png."""
    from .figures import write_figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {
        lt: {d: r for d, r in res.items() if isinstance(r, dict) and "prefill" in r}
        for lt, res in summary["results"].items()
    }
    paths = write_figures(figs, out, candidate=vc.candidate, reference=vc.reference)
    summary["files"] = ["summary.json"] + [p.name for p in paths]
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")


def log_checks(summary: dict, log: Callable[[str], None] = print) -> None:
    log("")
    log(f"{'check':32s} {'layer':6s} {'dtype':5s} {'status':8s} value (threshold)")
    for c in summary["checks"]:
        val = c["value"]
        if isinstance(val, float):
            val = f"{val:.4g}"
        elif isinstance(val, dict):
            val = ", ".join(f"{k}={v:.4g}" for k, v in val.items())
        extra = f"  [{c['reason']}]" if c["reason"] else ""
        log(f"{c['name']:32s} {c['layer']:6s} {c['dtype']:5s} {c['status'].upper():8s} {val} ({c['threshold']}){extra}")
    verdict = "PASS" if summary["passed"] else "FAIL"
    log(
        f"verify: {verdict}: {summary['n_checks'] - summary['n_failed'] - summary['n_not_run']} passed, "
        f"{summary['n_failed']} failed, {summary['n_not_run']} not run"
    )


# --- command line ------------------------------------------------------------------------------------------
def _csv(choices):
    def parse(s: str) -> list[str]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated), got {s!r}")
        return items

    return parse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="parity of a backend vs the PyTorch reference and float64 (exit 1 when a threshold fails)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--checkpoint",
        metavar="DIR",
        action="append",
        default=[],
        help="checkpoint directory (repeat for a TTT-Linear and a TTT-MLP one); default: random init",
    )
    m.add_argument("--config", default="1b", metavar="SIZE", help="standard size for random init (default 1b)")
    m.add_argument("--backbone", choices=["mamba", "transformer"], default="mamba")
    m.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    m.add_argument("--num-layers", type=int, help="override the number of layers (random init)")
    m.add_argument("--hidden-size", type=int, help="override (random init; tiny test models)")
    m.add_argument("--num-heads", type=int, help="override num_attention_heads (random init)")
    m.add_argument("--intermediate-size", type=int, help="override (random init)")
    m.add_argument("--vocab-size", type=int, help="override (random init)")
    m.add_argument("--init-std", type=float, help="override initializer_range, the std of the random weights")
    r = p.add_argument_group("runs")
    r.add_argument("--layer-types", type=_csv(LAYER_TYPES), default=list(LAYER_TYPES), help="default linear,mlp")
    r.add_argument("--dtypes", type=_csv(list(DTYPES)), default=["fp16", "bf16"], help="default fp16,bf16")
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--prefill-len", type=int, default=512)
    r.add_argument("--decode-len", type=int, default=512, help="decode steps (one token in, this many out)")
    r.add_argument(
        "--stream",
        choices=["fp64", "random"],
        default="fp64",
        help="decode inputs: the fp64 reference's greedy tokens (default) or random tokens",
    )
    r.add_argument("--chain-prompt-len", type=int, help="prompt of the prefill->decode check (default prefill-len - 7)")
    r.add_argument("--chain-steps", type=int, help="decode steps of the prefill->decode check (default 48)")
    r.add_argument("--candidate-backend", choices=["kernels", "reference"], default="kernels")
    r.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    r.add_argument("--out", metavar="DIR", default="results/verify", help="summary.json and figures go here")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    t = p.add_argument_group("thresholds")
    d = Thresholds()
    t.add_argument("--max-token-diff", type=float, default=d.max_token_diff)
    t.add_argument("--max-tv", type=float, default=d.max_tv)
    t.add_argument("--max-error-ratio", type=float, default=d.max_error_ratio)
    t.add_argument("--graph-atol", type=float, default=d.graph_atol)
    t.add_argument(
        "--strict",
        action="store_true",
        help="absolute gates at the given values only (default: raised to max-error-ratio x the same-precision "
        "reference's own distance from fp64 where that is larger, the precision floor)",
    )
    p.set_defaults(func=cmd_verify)


def config_from_args(args: argparse.Namespace) -> VerifyConfig:
    over = {
        k: v
        for k, v in dict(
            num_hidden_layers=args.num_layers,
            hidden_size=args.hidden_size,
            num_attention_heads=args.num_heads,
            intermediate_size=args.intermediate_size,
            vocab_size=args.vocab_size,
            initializer_range=args.init_std,
        ).items()
        if v is not None
    }
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return VerifyConfig(
        layer_types=args.layer_types,
        dtypes=args.dtypes,
        batch=args.batch,
        prefill_len=args.prefill_len,
        decode_len=args.decode_len,
        candidate=args.candidate_backend,
        device=device,
        seed=args.seed,
        checkpoints=args.checkpoint,
        size=args.config,
        backbone=args.backbone,
        overrides=over,
        stream=args.stream,
        chain_prompt_len=args.chain_prompt_len,
        chain_steps=args.chain_steps,
        progress=not args.no_progress,
        thresholds=Thresholds(args.max_token_diff, args.max_tv, args.max_error_ratio, args.graph_atol, args.strict),
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """0 when every check that ran passed, 1 when one failed (or the candidate cannot run), 2 on bad arguments."""
    from ..kernels import KernelsUnavailable

    vc = config_from_args(args)
    vc.validate()  # ValueError -> exit 2 (cli.main)
    try:
        summary = run_verify(vc, args.out)
    except KernelsUnavailable as e:
        print(f"verify: FAIL: the candidate backend {vc.candidate!r} cannot run here: {e}", file=sys.stderr)
        return 1
    print(f"verify: wrote {args.out}/summary.json and figures", file=sys.stderr)
    return 0 if summary["passed"] else 1
