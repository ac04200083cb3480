"""Programmatic dependent launch (PDL) between our decode kernels (the Triton ones and the CUDA TTT-MLP step), sm_90+.

A decode step is ~10 small kernels a layer of a few microseconds each, so the time from one kernel's end to
the next one's start (launch processing, CTA scheduling, the prologue) is a large share of it. Launched with
PDL (`launch_pdl`), a kernel's CTAs may be scheduled before the kernel ahead of it in the stream has ended.
Every kernel that takes `PDL` starts with `pdl_enter`: first `griddepcontrol.wait` (returns once the grid
ahead has completed and its memory is visible), then `griddepcontrol.launch_dependents` (lets the next
kernel's CTAs be scheduled). So no kernel touches memory before everything launched ahead of it has finished
(the ordering of a plain stream), and besides the running kernel only the next one's CTAs, waiting, are
resident. The one exception (`early_loads`, on unless TTT_INFER_EARLY_LOADS=0): the glue kernels load what
no kernel ahead of them writes (weights; a kernel's own state from the previous token) before their wait. A
kernel's CTAs start only after the kernel ahead passed its own wait, so everything before that one has
finished by then. A kernel launched without PDL ahead of ours (cuBLAS, the CUDA and TK kernels, torch's) lets its
dependents start only when it ends: plain stream order. Inside a CUDA graph capture the launches become
programmatic edges.

On by default where it exists (sm_90+); `TTT_INFER_PDL=0` turns it off (same-run A/Bs); never under
TRITON_INTERPRET or on older GPUs (`griddepcontrol` is an sm_90 instruction). Measured on the H200 (bf16, full
model): -8 to -11% a decode step at B <= 16, -1 to -2% at B = 64, none at 256-512; bit-identical outputs
(docs/perf-notes.md, session 8).
"""

from __future__ import annotations

import functools
import os

import torch

from . import _interpreting

try:  # not through decode.common: the decode package imports this module while it initialises
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - without Triton nothing launches (decode.common says why)
    triton = None

if triton is not None:

    @triton.jit
    def pdl_enter(PDL: tl.constexpr):
        if PDL:
            gdc_wait()
            gdc_launch_dependents()

else:
    pdl_enter = None


@functools.cache
def _capable(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (9, 0)


def enabled(device: torch.device) -> bool:
    """Whether kernels launched on `device` use PDL (read on every launch, so an A/B can flip it)."""
    if device.type != "cuda" or _interpreting():
        return False
    if os.environ.get("TTT_INFER_PDL", "1") == "0":
        return False
    return _capable(device.index if device.index is not None else torch.cuda.current_device())


def early_loads() -> bool:
    """Whether the glue kernels (the block front, the RMSNorm, the post-norm gate) issue their loads of what no
    kernel ahead writes (weights, their own state) before the PDL wait. TTT_INFER_EARLY_LOADS=0 turns it off
    (same-run A/Bs; read on every launch). Measured on the H200 (bf16, full model, run 52): -0.9 to -2.4% a decode
    step at B <= 64. The same for the decode GEMM's first weight tile was 0.6-4.7% slower (tag
    measured/s15-gemm-early), so the GEMM waits first."""
    return os.environ.get("TTT_INFER_EARLY_LOADS", "1") != "0"


def launch_kwargs(device: torch.device) -> dict:
    """The launch's extra keyword arguments: the kernel's PDL constexpr and Triton's launch_pdl option."""
    return {"PDL": True, "launch_pdl": True} if enabled(device) else {}
