"""ThunderKittens prefill: a thin wrapper over the compiled extension (`csrc/`).

`ttt_prefill(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)` has the semantics of
`ttt_infer.ttt.reference.dual_forward`: it runs the dual-form scan over T tokens, mini-batch by
mini-batch, starting `start` rows into the current mini-batch (those rows come from the state) and
leaving the rows of a final partial mini-batch in the state; the state is updated in place and the
output [B, nh, T, 64] is returned in the input dtype.

Build the extension with `python -m ttt_infer.kernels.build` (see build.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import torch

from . import KernelsUnavailable

HEAD_DIM = 64
MINI_BATCH = 16
_MODULES: dict[str, ModuleType] = {}
_BUILD_HINT = "build it with `python -m ttt_infer.kernels.build` (needs nvcc, ninja and the ThunderKittens submodule)"


def _load(variant: str = "native") -> ModuleType:
    if variant in _MODULES:
        return _MODULES[variant]
    from .build import VARIANTS, module_dir

    if variant not in VARIANTS:
        raise ValueError(f"unknown kernel variant {variant!r}; known: {sorted(VARIANTS)}")
    name = VARIANTS[variant][0]
    path = module_dir(variant) / f"{name}.so"
    if not path.exists():
        raise KernelsUnavailable(f"the TK prefill extension ({name}) is not built: {path} is missing; {_BUILD_HINT}")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except ImportError as e:
        raise KernelsUnavailable(
            f"the TK prefill extension at {path} does not load ({e}); rebuild: {_BUILD_HINT}"
        ) from e
    sys.modules.setdefault(name, mod)
    _MODULES[variant] = mod
    return mod


def check_available(variant: str = "native") -> None:
    """Raise KernelsUnavailable (saying how to fix it) unless the prefill kernels can run here."""
    if not torch.cuda.is_available():
        raise KernelsUnavailable(
            f"the TK prefill kernels need a CUDA GPU, and torch sees none; on a GPU machine, {_BUILD_HINT}"
        )
    _load(variant)


def _check_tensor(t, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device}, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


IMPLS = ("default", "wgmma", "v4")


def ttt_prefill(
    state,
    xq,
    xk,
    xv,
    lr,
    ln_w,
    ln_b,
    tau,
    start: int = 0,
    *,
    out=None,
    variant: str = "native",
    mlp_warps=None,
    impl: str = "default",
):
    """TTT prefill of T tokens on the GPU; updates `state` (TTTState, fp32) in place.

    xq, xk, xv [B, nh, T, 64] fp16/bf16 contiguous (RoPE applied); lr [B, nh, T] fp32; tau [16] fp32;
    ln_w, ln_b [nh, 64] (any float dtype); start in [0, 16): rows of the current mini-batch already in
    `state`. Returns out [B, nh, T, 64] in the input dtype (written into `out` when given).
    `variant="sm80"` runs the module built for sm_80 (+PTX) instead of the native one. `mlp_warps`
    (8 or 16; default: setting TTT_INFER_MLP_WARPS, else the kernel's default) picks the TTT-MLP CTA size.
    `impl="wgmma"` (TTT-Linear only, opt-in) runs the Hopper warpgroup-MMA kernel: it needs a
    compute-capability 9.0 GPU and a build with 9.0a in TORCH_CUDA_ARCH_LIST, and raises otherwise.
    `impl="v4"` (TTT-Linear only, opt-in) runs the previous default TTT-Linear kernel (v4; the default is v6).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    for name, x in (("xq", xq), ("xk", xk), ("xv", xv)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if xq.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"xq/xk/xv must be float16 or bfloat16, got {xq.dtype}")
    if xq.dim() != 4:
        raise ValueError(f"xq must be [B, nh, T, f], got shape {tuple(xq.shape)}")
    B, nh, T, f = xq.shape
    if f != HEAD_DIM:
        raise ValueError(f"the TK prefill kernels support head dim {HEAD_DIM} only, got {f}")
    if T < 1:
        raise ValueError("T must be >= 1")
    if not isinstance(start, int) or not 0 <= start < MINI_BATCH:
        raise ValueError(f"start must be an int in [0, {MINI_BATCH}), got {start!r}")
    dev = xq.device
    if dev.type != "cuda":
        raise ValueError(f"inputs must be on a CUDA device, got {dev}")
    for name, x in (("xq", xq), ("xk", xk), ("xv", xv)):
        _check_tensor(x, name, (B, nh, T, f), xq.dtype, dev)
    _check_tensor(lr, "lr", (B, nh, T), torch.float32, dev)
    _check_tensor(tau, "tau", (MINI_BATCH,), torch.float32, dev)
    for name, p in (("ln_w", ln_w), ("ln_b", ln_b)):
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != (nh, f) or p.device != dev:
            raise ValueError(f"{name} must be a [{nh}, {f}] tensor on {dev}")
    if state.mini_batch_size != MINI_BATCH:
        raise ValueError(f"state mini-batch size must be {MINI_BATCH}, got {state.mini_batch_size}")
    hid = state.W1.shape[-1]
    mlp = state.kind == "mlp"
    if mlp and impl != "default":
        raise ValueError(f"impl={impl!r} exists for TTT-Linear only; TTT-MLP has the default impl")
    if hid != (4 * f if mlp else f):
        raise ValueError(
            f"state W1 must be [B, nh, {f}, {4 * f if mlp else f}] for TTT-{state.kind}, got {tuple(state.W1.shape)}"
        )
    f32 = torch.float32
    _check_tensor(state.W1, "state.W1", (B, nh, f, hid), f32, dev)
    _check_tensor(state.b1, "state.b1", (B, nh, hid), f32, dev)
    _check_tensor(state.k, "state.k", (B, nh, MINI_BATCH, f), f32, dev)
    _check_tensor(state.g1, "state.g1", (B, nh, MINI_BATCH, hid), f32, dev)
    _check_tensor(state.lr, "state.lr", (B, nh, MINI_BATCH), f32, dev)
    if mlp:
        _check_tensor(state.W2, "state.W2", (B, nh, hid, f), f32, dev)
        _check_tensor(state.b2, "state.b2", (B, nh, f), f32, dev)
        _check_tensor(state.x2, "state.x2", (B, nh, MINI_BATCH, hid), f32, dev)
        _check_tensor(state.g2, "state.g2", (B, nh, MINI_BATCH, f), f32, dev)
    if out is None:
        out = torch.empty_like(xq)
    else:
        _check_tensor(out, "out", (B, nh, T, f), xq.dtype, dev)
    if mlp_warps is None:
        mlp_warps = int(os.environ.get("TTT_INFER_MLP_WARPS", "0"))
    if mlp_warps not in (0, 8, 16):
        raise ValueError(f"mlp_warps must be 8 or 16, got {mlp_warps}")
    mod = _load(variant)
    lnw = ln_w.detach().to(f32).contiguous()
    lnb = ln_b.detach().to(f32).contiguous()
    if mlp:
        mod.mlp_prefill(
            xq,
            xk,
            xv,
            lr,
            tau,
            lnw,
            lnb,
            state.W1,
            state.b1,
            state.W2,
            state.b2,
            state.k,
            state.g1,
            state.lr,
            state.x2,
            state.g2,
            out,
            start,
            mlp_warps,
        )
    else:
        fn = mod.linear_prefill
        if impl != "default":
            fn = getattr(mod, f"linear_prefill_{impl}", None)
            if fn is None:
                raise KernelsUnavailable(
                    f"the TK prefill extension at {module_dir_hint(variant)} predates the {impl} kernel; {_BUILD_HINT}"
                )
        fn(xq, xk, xv, lr, tau, lnw, lnb, state.W1, state.b1, state.k, state.g1, state.lr, out, start)
    return out


def wgmma_available(variant: str = "native") -> bool:
    """True when the wgmma TTT-Linear kernel can run here (CUDA GPU of compute capability 9.0 and a build
    with its sm_90a image); never raises."""
    try:
        check_available(variant)
    except Exception:  # noqa: BLE001
        return False
    fn = getattr(_load(variant), "linear_prefill_wgmma_available", None)
    return bool(fn is not None and fn())


def module_dir_hint(variant: str) -> str:
    from .build import module_dir

    return str(module_dir(variant))
