"""The CUDA decode kernels, the tuner's "cu" variants: TTT-MLP (csrc/ttt_mlp_decode.cu) and TTT-Linear
(csrc/ttt_linear_decode.cu).

They live in the compiled extension (`python -m ttt_infer.kernels.build`), so they are candidates only where
that loads on a CUDA device; the Triton variants need nothing but Triton. Same arguments and semantics as the
Triton kernels of their layer type; mini-batch 16 and an int64 position only (the model's cache). TTT-MLP: one
CTA of 256 threads per (sequence, head), W2 held in shared memory; `n` of its configuration is the number of
CTAs an SM its registers are budgeted for (2 or 3). TTT-Linear: one CTA of 128 threads per pair, eight an SM
(`cu:4:8`, the only configuration).
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


def available(kind: str = "mlp") -> bool:
    """True when the extension with this layer type's CUDA decode kernel loads here (never raises)."""
    try:
        _kernel(kind)
    except (KernelsUnavailable, ImportError, RuntimeError):
        return False
    return True


@functools.cache
def _kernel(kind: str = "mlp"):
    """The extension's `mlp_decode` or `linear_decode`, looked up once per process (not on every decode step);
    raises KernelsUnavailable when there is no GPU, no built extension, or one built before this kernel
    existed. Failures are not cached (functools.cache keeps only returned values)."""
    from ..prefill import _load

    if not torch.cuda.is_available():
        raise KernelsUnavailable("the CUDA decode kernels need a CUDA GPU")
    fn = getattr(_load(), f"{kind}_decode", None)
    if fn is None:
        raise KernelsUnavailable(f"the compiled extension predates the CUDA TTT-{kind} decode kernel; rebuild it")
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


def _check(kind: str, xq, ln_w, pos, K) -> None:
    """What the CUDA kernels take beyond what decode/step.py's checks allow: mini-batch 16, an int64 position,
    the LayerNorm's parameters in fp32 or the activations' dtype."""
    name = f"the CUDA TTT-{'MLP' if kind == 'mlp' else 'Linear'} decode kernel"
    if K.shape[-2] != MINI_BATCH:
        raise ValueError(f"{name} takes mini-batch {MINI_BATCH}, got {K.shape[-2]}")
    if pos.dtype != torch.int64:
        raise TypeError(f"{name} reads an int64 position, got {pos.dtype}")
    if ln_w.dtype not in (torch.float32, xq.dtype):
        raise TypeError(f"{name} takes ln_w in fp32 or {xq.dtype}, got {ln_w.dtype}")


def launch_mlp(args: list, ctas_per_sm: int) -> None:
    """args: the Triton TTT-MLP kernels' argument list (decode/step.py `_kernel_args`)."""
    (xq, xk, xv, lr, ln_w, ln_b, tau, pos, W1, b1, W2, b2, K, G1, X2, G2, LR, out, nh, _nprog, eps, sv) = args
    _check("mlp", xq, ln_w, pos, K)
    if ctas_per_sm not in (2, 3):
        raise ValueError(f"cu:<warps>:<ctas per SM>: 2 or 3, got {ctas_per_sm}")
    if _trace is not None and _trace.shape[0] < W1.shape[0] * W1.shape[1]:
        raise ValueError(f"the trace buffer has {_trace.shape[0]} rows for {W1.shape[0] * W1.shape[1]} pairs")
    _kernel("mlp")(xq, xk, xv, lr, ln_w, ln_b, tau, pos, W1, b1, W2, b2, K, G1, X2, G2, LR, out, nh, sv, eps,
                   ctas_per_sm, pdl.enabled(xq.device), _trace)  # fmt: skip


def launch_linear(args: list, warps: int, ctas_per_sm: int) -> None:
    """args: the Triton TTT-Linear kernels' argument list (decode/step.py `_kernel_args`); the configuration
    must be cu:4:8 (128 threads a CTA, eight CTAs an SM: what the kernel is compiled for)."""
    (xq, xk, xv, lr, ln_w, ln_b, tau, pos, W, b, K, G, LR, out, nh, _nprog, eps, sv) = args
    _check("linear", xq, ln_w, pos, K)
    if (warps, ctas_per_sm) != (4, 8):
        raise ValueError(f"the CUDA TTT-Linear decode kernel's configuration is cu:4:8, got cu:{warps}:{ctas_per_sm}")
    _kernel("linear")(xq, xk, xv, lr, ln_w, ln_b, tau, pos, W, b, K, G, LR, out, nh, sv, eps,
                      pdl.enabled(xq.device))  # fmt: skip
