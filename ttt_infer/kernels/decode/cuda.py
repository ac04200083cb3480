"""The CUDA TTT-MLP decode kernel (csrc/ttt_mlp_decode.cu), the tuner's "cu" variant.

It lives in the compiled extension (`python -m ttt_infer.kernels.build`), so it is a candidate only where that
loads on a CUDA device; the Triton variants need nothing but Triton. Same arguments and semantics as the Triton
TTT-MLP kernels (one CTA of 256 threads per (sequence, head), W2 held in shared memory, see the .cu file);
mini-batch 16 and an int64 position only (the model's cache); `n` of the configuration is the number of CTAs
an SM the kernel's registers are budgeted for (2 or 3).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .. import KernelsUnavailable, pdl

MINI_BATCH = 16
TRACE_SLOTS = 16  # int64 entries a pair in a timeline (kMlpTraceSlots, csrc/ttt_decode.h)
# what they hold: the SM, then %globaltimer (ns) at the kernel's entry and after each phase (MlpTraceSlot in
# csrc/ttt_mlp_decode.cu); the update's two slots (W2 written, then W1) stay as they were (zero) except at the
# mini-batch's end
TRACE_FIELDS = ("sm", "entry", "waited", "inputs", "z1", "z2k", "g2", "g1", "z2bar", "out", "w2out", "update")
_trace: torch.Tensor | None = None


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


@contextlib.contextmanager
def tracing(buf: torch.Tensor):
    """Inside: each CUDA TTT-MLP step launched writes its timeline into `buf` (int64 [pairs, TRACE_SLOTS], CUDA,
    contiguous; the last launch's wins), through a separate instantiation of the kernel compiled with the marks
    (scripts/trace_decode_step.py). Not for a captured graph: the buffer is read when the launch is made."""
    global _trace
    if buf.dtype != torch.int64 or not buf.is_cuda or not buf.is_contiguous() or buf.dim() != 2 \
            or buf.shape[1] != TRACE_SLOTS:  # fmt: skip
        raise ValueError(f"a trace buffer is a contiguous CUDA int64 [pairs, {TRACE_SLOTS}] tensor, got "
                         f"{buf.dtype} {tuple(buf.shape)} on {buf.device}")  # fmt: skip
    prev, _trace = _trace, buf
    try:
        yield buf
    finally:
        _trace = prev


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
    if _trace is not None and _trace.shape[0] < W1.shape[0] * W1.shape[1]:
        raise ValueError(f"the trace buffer has {_trace.shape[0]} rows for {W1.shape[0] * W1.shape[1]} pairs")
    _kernel()(xq, xk, xv, lr, ln_w, ln_b, tau, pos, W1, b1, W2, b2, K, G1, X2, G2, LR, out, nh, sv, eps, ctas_per_sm,
              pdl.enabled(xq.device), _trace)  # fmt: skip
