"""Shared pieces of the Triton decode kernels: the optional Triton import, constants, and the @triton.jit
helpers (tanh, GELU and its derivative, the inner LayerNorm forward and its fused L2 backward)."""

from __future__ import annotations

import math

import torch

from .. import KernelsUnavailable, _interpreting

try:  # Triton is optional: the package imports without it; check_available() says why it can't run
    import triton
    import triton.language as tl
except ImportError as _e:  # pragma: no cover - exercised only where Triton is absent
    triton = None
    tl = None
    _TRITON_ERROR: Exception | None = _e
else:
    _TRITON_ERROR = None

HEAD_DIM = 64
MLP_HIDDEN = 4 * HEAD_DIM
LN_EPS = 1e-6
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_available() -> None:
    """Raise KernelsUnavailable (saying why) when the decode kernels cannot run here."""
    if triton is None:
        raise KernelsUnavailable(f"Triton is not installed ({_TRITON_ERROR}); install ttt-infer[triton]")
    if not _interpreting() and not torch.cuda.is_available():
        raise KernelsUnavailable("the Triton decode kernels need a CUDA GPU (or TRITON_INTERPRET=1 to run on the CPU)")


if triton is not None:

    @triton.jit
    def _tanh(x):
        # 1 - 2 / (exp(2x) + 1): exact limits at +-inf, no libdevice (runs in the interpreter too)
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)

    @triton.jit
    def _gelu(x, C: tl.constexpr):
        return 0.5 * x * (1.0 + _tanh(C * (x + 0.044715 * x * x * x)))

    @triton.jit
    def _gelu_bwd(x, C: tl.constexpr):
        t = _tanh(C * (x + 0.044715 * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044715 * x * x)

    @triton.jit
    def _ln_l2_bwd(z, target, w, b, eps, N: tl.constexpr):
        """d/dz 1/2 ||w * xhat(z) + b - target||^2 for a vector z [N]."""
        mu = tl.sum(z, axis=0) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=0) / N + eps)
        xh = zc * rstd
        gh = w * (w * xh + b - target)
        return (N * gh - tl.sum(gh, axis=0) - xh * tl.sum(gh * xh, axis=0)) * (rstd / N)

    @triton.jit
    def _ln_fwd(z, w, b, eps, N: tl.constexpr):
        mu = tl.sum(z, axis=0) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=0) / N + eps)
        return w * (zc * rstd) + b

    @triton.jit
    def _ln_l2_bwd_rows(z, target, w, b, eps, N: tl.constexpr):
        """_ln_l2_bwd for each row of z [R, N]."""
        mu = tl.sum(z, axis=1, keep_dims=True) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=1, keep_dims=True) / N + eps)
        xh = zc * rstd
        gh = w * (w * xh + b - target)
        s1 = tl.sum(gh, axis=1, keep_dims=True)
        s2 = tl.sum(gh * xh, axis=1, keep_dims=True)
        return (N * gh - s1 - xh * s2) * (rstd / N)

    @triton.jit
    def _ln_fwd_rows(z, w, b, eps, N: tl.constexpr):
        mu = tl.sum(z, axis=1, keep_dims=True) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=1, keep_dims=True) / N + eps)
        return w * (zc * rstd) + b

    @triton.jit
    def _token_inputs(q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pid, head, p, fo, NH, SV,
                      F: tl.constexpr):  # fmt: skip
        """This token's q, k, v (fp32), lr, the head's inner LayerNorm weight and bias, and tau_p. v's sequences
        are SV elements apart (a column slice of the stacked projection's output; q, k: NH * F)."""
        q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
        k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
        v = tl.load(v_ptr + (pid // NH) * SV + head * F + fo).to(tl.float32)
        lr = tl.load(lr_ptr + pid)
        lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
        lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)
        tau = tl.load(tau_ptr + p)
        return q, k, v, lr, lnw, lnb, tau
