"""Backend selection: the one place that maps a backend name to the inner-loop implementation.

A backend provides `inner(state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position)` for a chunk of T
tokens (prefill when T > 1, a decode step when T == 1), updating `state` in place and returning
[B, nh, T, f]. `start` is the python position inside the current mini-batch (reference), `position`
the absolute offset as a device tensor (kernels, CUDA graphs).
"""

from __future__ import annotations

from typing import Protocol

import torch

from . import reference
from .cache import TTTState

BACKENDS = ("reference", "kernels")


class Backend(Protocol):
    name: str

    def inner(
        self,
        state: TTTState,
        xq: torch.Tensor,
        xk: torch.Tensor,
        xv: torch.Tensor,
        lr: torch.Tensor,
        ln_w: torch.Tensor,
        ln_b: torch.Tensor,
        tau: torch.Tensor,
        start: int,
        position: torch.Tensor,
    ) -> torch.Tensor: ...


class ReferenceBackend:
    """PyTorch: dual form for prompts, primal form for single decode steps."""

    name = "reference"

    def inner(self, state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position):
        if xq.shape[2] == 1:
            return reference.primal_step(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)
        return reference.dual_forward(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)


def get_backend(name: str) -> Backend:
    if name == "reference":
        return ReferenceBackend()
    if name == "kernels":
        from ..kernels import KernelBackend

        return KernelBackend()
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
