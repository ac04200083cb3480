"""One decode step: input checks, the kernel's arguments, the configuration (forced, interpreter default or
tuned) and the launch; and the decode-only kernel backend."""

from __future__ import annotations

import os

import torch

from ..pdl import launch_kwargs
from .common import _ACT_DTYPES, _SQRT_2_OVER_PI, HEAD_DIM, LN_EPS, MLP_HIDDEN, _interpreting, check_available
from .tune import DEFAULT, TIMINGS, TUNED, _fits, _launch, _parse_config, _tune


def _fail(msg: str, exc=ValueError):
    raise exc(f"ttt_decode_step: {msg}")


def _check(
    state, xq: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor, lr, ln_w, ln_b, tau, position
) -> tuple[int, int, int, int]:
    for name, t in (("xq", xq), ("xk", xk), ("xv", xv), ("lr", lr), ("ln_w", ln_w), ("ln_b", ln_b), ("tau", tau)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if not isinstance(position, torch.Tensor):
        _fail(
            "position must be the cache's [1] int64 device tensor (a python int would be frozen by a CUDA graph)",
            TypeError,
        )
    if xq.dim() != 4:
        _fail(f"xq must be [B, nh, 1, f], got shape {tuple(xq.shape)}")
    B, nh, T, f = xq.shape
    if T != 1:
        _fail(f"one token per call, got {T}")
    for name, t in (("xk", xk), ("xv", xv)):
        if t.shape != xq.shape:
            _fail(f"{name} has shape {tuple(t.shape)}, xq {tuple(xq.shape)}")
    if xq.dtype not in _ACT_DTYPES:
        _fail(f"activations must be fp16, bf16 or fp32, got {xq.dtype}", TypeError)
    for name, t in (("xk", xk), ("xv", xv)):
        if t.dtype != xq.dtype:
            _fail(f"{name} is {t.dtype}, xq {xq.dtype}: all three must share a dtype", TypeError)
    if f != HEAD_DIM:
        _fail(f"head dim must be {HEAD_DIM}, got {f} (use the reference backend for other head dims)")

    kind = state.kind
    h = HEAD_DIM if kind == "linear" else MLP_HIDDEN
    mb = state.mini_batch_size
    if mb < 1 or mb & (mb - 1) or mb > 64:
        _fail(f"mini-batch size must be a power of two <= 64, got {mb}")
    want = {"W1": (B, nh, f, h), "b1": (B, nh, h), "k": (B, nh, mb, f), "g1": (B, nh, mb, h), "lr": (B, nh, mb)}
    if kind == "mlp":
        want |= {"W2": (B, nh, h, f), "b2": (B, nh, f), "x2": (B, nh, mb, h), "g2": (B, nh, mb, f)}
    dev = xq.device
    for name, t in state.tensors().items():
        if tuple(t.shape) != want[name]:
            _fail(
                f"state.{name} has shape {tuple(t.shape)}, expected {want[name]} for TTT-{kind} with xq {tuple(xq.shape)}"
            )
        if t.dtype != torch.float32:
            _fail(
                f"state.{name} is {t.dtype}: the kernels keep the state in fp32 (fp64: use the reference backend)",
                TypeError,
            )
        if not t.is_contiguous():
            _fail(f"state.{name} is not contiguous; the kernels index the cache buffers directly")
        if t.device != dev:
            _fail(f"state.{name} is on {t.device}, xq on {dev}")
    if tuple(lr.shape) != (B, nh, 1):
        _fail(f"lr must be [B, nh, 1] = {(B, nh, 1)}, got {tuple(lr.shape)}")
    if lr.dtype != torch.float32:
        _fail(f"lr must be fp32, got {lr.dtype}", TypeError)
    for name, t in (("ln_w", ln_w), ("ln_b", ln_b)):
        if tuple(t.shape) != (nh, f):
            _fail(f"{name} must be [nh, f] = {(nh, f)}, got {tuple(t.shape)}")
        if not t.is_floating_point():
            _fail(f"{name} must be floating point, got {t.dtype}", TypeError)
    if tuple(tau.shape) != (mb,):
        _fail(f"tau must be [{mb}] (one scale per mini-batch position), got {tuple(tau.shape)}")
    if position.numel() != 1 or position.dtype not in (torch.int64, torch.int32):
        _fail(
            f"position must be a one-element int64 tensor, got {position.dtype} of shape {tuple(position.shape)}",
            TypeError,
        )
    for name, t in (
        ("xk", xk),
        ("xv", xv),
        ("lr", lr),
        ("ln_w", ln_w),
        ("ln_b", ln_b),
        ("tau", tau),
        ("position", position),
    ):
        if t.device != dev:
            _fail(f"{name} is on {t.device}, xq on {dev}")
    if _interpreting():
        if dev.type != "cpu":
            _fail(f"under TRITON_INTERPRET=1 the kernels run on CPU tensors, got {dev}")
    elif dev.type != "cuda":
        _fail(f"tensors are on {dev}: the Triton decode kernels need CUDA tensors (or TRITON_INTERPRET=1)")
    return B, nh, f, mb


def _kernel_args(state, xq, xk, xv, lr, ln_w, ln_b, tau, position, out):
    """(kind, programs, parameter names, arguments, constexprs) of the decode kernel for these (checked) inputs."""
    B, nh, _, f = xq.shape
    mb = state.mini_batch_size
    kind = state.kind
    if kind == "linear":
        names = ["q_ptr", "k_ptr", "v_ptr", "lr_ptr", "lnw_ptr", "lnb_ptr", "tau_ptr", "pos_ptr",
                 "W_ptr", "b_ptr", "K_ptr", "G_ptr", "LR_ptr", "out_ptr", "NH", "NPROG", "eps", "SV"]  # fmt: skip
        args = [xq, xk, xv, lr, ln_w, ln_b, tau, position, state.W1, state.b1, state.k, state.g1, state.lr, out]
        consts = {"F": f, "MB": mb}
    else:
        names = ["q_ptr", "k_ptr", "v_ptr", "lr_ptr", "lnw_ptr", "lnb_ptr", "tau_ptr", "pos_ptr",
                 "W1_ptr", "b1_ptr", "W2_ptr", "b2_ptr", "K_ptr", "G1_ptr", "X2_ptr", "G2_ptr", "LR_ptr",
                 "out_ptr", "NH", "NPROG", "eps", "SV"]  # fmt: skip
        args = [xq, xk, xv, lr, ln_w, ln_b, tau, position, state.W1, state.b1, state.W2, state.b2,
                state.k, state.g1, state.x2, state.g2, state.lr, out]  # fmt: skip
        consts = {"F": f, "H": MLP_HIDDEN, "MB": mb, "C": _SQRT_2_OVER_PI}
    consts.update(launch_kwargs(xq.device))  # programmatic dependent launch where it exists (kernels/pdl.py)
    return kind, B * nh, names, args + [nh, B * nh, LN_EPS, xv.stride(0)], consts


def ttt_decode_step(state, xq, xk, xv, lr, ln_w, ln_b, tau, position, out: torch.Tensor | None = None) -> torch.Tensor:
    """One decode step of the TTT layer for every (sequence, head); updates `state` in place.

    xq, xk, xv [B, nh, 1, 64] (fp16/bf16/fp32, RoPE applied); lr [B, nh, 1] fp32; ln_w, ln_b [nh, 64];
    tau [16] fp32; position: [1] int64 device tensor, the tokens before this one. Returns fp32 [B, nh, 1, 64]
    (written into `out` when given: contiguous fp32 of that shape).
    """
    check_available()
    B, nh, f, mb = _check(state, xq, xk, xv, lr, ln_w, ln_b, tau, position)
    xq, xk = xq.contiguous(), xk.contiguous()
    if xv.stride(3) != 1 or xv.stride(1) != f:  # v may be a view with its own sequence stride (SV), not more
        xv = xv.contiguous()
    lr, ln_w, ln_b = lr.contiguous(), ln_w.contiguous(), ln_b.contiguous()
    tau = tau.to(torch.float32).contiguous()
    if out is None:
        out = torch.empty(B, nh, 1, f, device=xq.device, dtype=torch.float32)
    elif out.shape != (B, nh, 1, f) or out.dtype != torch.float32 or not out.is_contiguous() or out.device != xq.device:
        _fail(f"out must be a contiguous fp32 [B, nh, 1, f] tensor on {xq.device}")
    kind, nprog, names, args, consts = _kernel_args(state, xq, xk, xv, lr, ln_w, ln_b, tau, position, out)
    forced = os.environ.get("TTT_DECODE_CONFIG", "")
    cfg = _parse_config(forced, kind) if forced else None
    if cfg is not None:
        if not _fits(cfg, nprog):
            _fail(f"TTT_DECODE_CONFIG={forced}: {nprog} (sequence, head) pairs are not a multiple of {cfg[2]}")
    elif _interpreting():
        cfg = DEFAULT[kind]
    else:
        key = (kind, nprog, xq.dtype)
        if key not in TUNED:
            TUNED[key], TIMINGS[key] = _tune(kind, nprog, args, names, consts)
        cfg = TUNED[key]
    _launch(kind, nprog, args, cfg, consts)
    return out


class DecodeKernelBackend:
    """Decode steps through these kernels, prompts (T > 1) through the PyTorch reference dual form.

    For when the TK prefill extension is not built (tests, benchmarks of decode alone). It reads the
    position from the device tensor, so it is CUDA-graph safe, and calls itself "kernels" so that the
    model treats it as the kernel backend. Install with `model._backend = DecodeKernelBackend()`.
    """

    name = "kernels"

    def __init__(self) -> None:
        check_available()
        from ..glue import TritonGlue

        self.glue = TritonGlue()

    def inner(self, state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position):
        if xq.shape[2] == 1:
            return ttt_decode_step(state, xq, xk, xv, lr, ln_w, ln_b, tau, position)
        from ...ttt.reference import dual_forward

        return dual_forward(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)
