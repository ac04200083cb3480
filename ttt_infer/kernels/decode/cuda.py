"""The CUDA TTT-MLP decode kernel (csrc/ttt_mlp_decode.cu), the tuner's "cu" variant.

It lives in the compiled extension (`python -m ttt_infer.kernels.build`), so it is a candidate only where that
loads on a CUDA device; the Triton variants need nothing but Triton. Same arguments and semantics as the Triton
TTT-MLP kernels (one CTA of 256 threads per (sequence, head), W2 held in shared memory, see the .cu file);
mini-batch 16 and an int64 position only (the model's cache); `n` of the configuration is the number of CTAs
an SM the kernel's registers are budgeted for (2 or 3).
"""

from __future__ import annotations

import functools

import torch

from .. import KernelsUnavailable, pdl

MINI_BATCH = 16


def available() -> bool:
    """True when the extension with the CUDA decode kernel loads here (never raises)."""
    try:
        _kernel()
    except (KernelsUnavailable, ImportError, RuntimeError):
        return False
    return True


@functools.cache
def _kernel():
    """The extension's `mlp_decode`, looked up once per process (not on every decode step); raises
    KernelsUnavailable when there is no GPU, no built extension, or one built before this kernel existed.
    Failures are not cached (functools.cache keeps only returned values)."""
    from ..prefill import _load

    if not torch.cuda.is_available():
        raise KernelsUnavailable("the CUDA decode kernel needs a CUDA GPU")
    fn = getattr(_load(), "mlp_decode", None)
    if fn is None:
        raise KernelsUnavailable("the compiled extension predates the CUDA decode kernel; rebuild it")
    return fn


def launch_mlp(args: list, ctas_per_sm: int) -> None:
    """args: the Triton TTT-MLP kernels' argument list (decode/step.py `_kernel_args`)."""
    (xq, xk, xv, lr, ln_w, ln_b, tau, pos, W1, b1, W2, b2, K, G1, X2, G2, LR, out, nh, _nprog, eps, sv) = args
    if K.shape[-2] != MINI_BATCH:
        raise ValueError(f"the CUDA TTT-MLP decode kernel takes mini-batch {MINI_BATCH}, got {K.shape[-2]}")
    if pos.dtype != torch.int64:
        raise TypeError(f"the CUDA TTT-MLP decode kernel reads an int64 position, got {pos.dtype}")
    if ln_w.dtype not in (torch.float32, xq.dtype):
        raise TypeError(f"the CUDA TTT-MLP decode kernel takes ln_w in fp32 or {xq.dtype}, got {ln_w.dtype}")
    if ctas_per_sm not in (2, 3):
        raise ValueError(f"cu:<warps>:<ctas per SM>: 2 or 3, got {ctas_per_sm}")
    _kernel()(xq, xk, xv, lr, ln_w, ln_b, tau, pos, W1, b1, W2, b2, K, G1, X2, G2, LR, out, nh, sv, eps, ctas_per_sm,
              pdl.enabled(xq.device))  # fmt: skip
