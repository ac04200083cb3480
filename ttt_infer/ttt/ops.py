"""Backend selection: the one place that maps a backend name to the inner-loop implementation.

A backend provides `inner(state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position)` for a chunk of T
tokens (prefill when T > 1, a decode step when T == 1), updating `state` in place and returning
[B, nh, T, f]. `start` is the python position inside the current mini-batch (reference), `position`
the absolute offset as a device tensor (kernels, CUDA graphs, the compiled reference decode).

A backend with `compiled_decode = True` has the model run each decode step through
`backend.compile(fn)` (TTTForCausalLM.forward); it then gets `start=None` for decode steps (the
compiled graph must not depend on a python position) and reads `position` instead.
"""

from __future__ import annotations

from typing import Protocol

import torch

from . import reference
from .cache import TTTState

BACKENDS = ("reference", "reference-compiled", "kernels")


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


class CompiledReferenceBackend(ReferenceBackend):
    """The reference with torch.compile'd decode steps: the whole model step (embedding to logits) is
    compiled once, with the position only in the cache's device tensor (`reference.primal_step_at`),
    so the graph does not change from token to token. Prompts (T > 1) run the eager dual form.

    `compiler`: the torch.compile backend ("inductor", the default; the CPU tests use "aot_eager": the
    same dynamo trace and functionalised graph, without inductor's C++ code generation).
    """

    name = "reference-compiled"
    compiled_decode = True

    def __init__(self, compiler: str = "inductor", mode: str | None = None) -> None:
        self.compiler, self.mode = compiler, mode
        self._compiled: dict = {}

    def compile(self, fn):
        """torch.compile(fn), wrapped once per function. fullgraph: a graph break is an error, not a
        silent eager fallback; dynamic=False: one static graph per batch size (a new batch size compiles
        once more; the position never does)."""
        key = (fn, self.compiler, self.mode)
        if key not in self._compiled:
            kw = {} if self.mode is None else {"mode": self.mode}
            self._compiled[key] = torch.compile(fn, backend=self.compiler, fullgraph=True, dynamic=False, **kw)
        return self._compiled[key]

    def inner(self, state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position):
        if xq.shape[2] == 1:
            return reference.primal_step_at(state, xq, xk, xv, lr, ln_w, ln_b, tau, position)
        if start is None:
            raise ValueError("a prompt (T > 1) needs the python position `start` (the eager dual form)")
        return reference.dual_forward(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)


def get_backend(name: str) -> Backend:
    if name == "reference":
        return ReferenceBackend()
    if name == "reference-compiled":
        return CompiledReferenceBackend()
    if name == "kernels":
        from ..kernels import KernelBackend

        return KernelBackend()
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
