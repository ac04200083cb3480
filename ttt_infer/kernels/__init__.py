"""The kernel backend: ThunderKittens prefill (`prefill.py`) and Triton decode (`decode/`).

Both follow the reference's interface (ttt_infer/ttt/ops.py): they update the TTTState in place and
return the TTT output [B, nh, T, f]. Imports are lazy so that `import ttt_infer` never needs a GPU,
Triton or the compiled extension.
"""

from __future__ import annotations

import os


def _interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (TRITON_INTERPRET=1) rather than compiled."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class KernelsUnavailable(RuntimeError):
    """The kernel backend cannot run here (no GPU, extension not built, ...); the message says why."""


class KernelBackend:
    """Prefill (T > 1) through the TK extension, decode steps (T == 1) through Triton."""

    name = "kernels"

    def __init__(self) -> None:
        try:
            from . import decode, prefill
        except ImportError as e:  # a module of the kernel backend is missing from this install
            raise KernelsUnavailable(f"the kernel backend cannot be imported: {e}") from e
        prefill.check_available()
        decode.check_available()
        from .glue import TritonGlue

        self._prefill, self._decode = prefill.ttt_prefill, decode.ttt_decode_step
        self.glue = TritonGlue()  # the norms, convs, RoPE, gates around the TTT op, fused

    def inner(self, state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position):
        if xq.shape[2] == 1:
            return self._decode(state, xq, xk, xv, lr, ln_w, ln_b, tau, position)
        return self._prefill(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)
