"""Inputs and drivers shared by the decode-kernel tests (CPU interpreter and GPU)."""

from __future__ import annotations

import torch

from ttt_infer.ttt import reference
from ttt_infer.ttt.cache import TTTState

F = 64


def make_case(kind: str, B: int, nh: int, T: int, act_dtype: torch.dtype, seed: int = 0, device="cpu"):
    """A random non-init fp64 TTT state and T tokens of inputs (activations rounded to act_dtype).

    Scales: z = k W has unit scale, lr in [0, 0.2], tau_i = 1/i + N(0, 0.1): the inner-loop terms move
    the outputs by O(1), so a wrong row, tau or update is visible far above rounding.
    """
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=1.0):
        return s * torch.randn(*shape, generator=g, dtype=torch.float64)

    h = F if kind == "linear" else 4 * F
    W2, b2 = (r(nh, h, F, s=h**-0.5), r(nh, 1, F, s=0.1)) if kind == "mlp" else (None, None)
    st = TTTState.from_params(B, r(nh, F, h, s=F**-0.5), r(nh, 1, h, s=0.1), W2, b2, dtype=torch.float64)
    xq, xk, xv = (r(B, nh, T, F).to(act_dtype) for _ in range(3))
    lr = (torch.rand(B, nh, T, generator=g, dtype=torch.float64) * 0.2).float()
    ln_w, ln_b = (1 + r(nh, F, s=0.2)).float(), r(nh, F, s=0.2).float()
    tau = (1 / torch.arange(1, 17, dtype=torch.float64) + 0.1 * r(16)).clamp_min(0).float()
    st = TTTState(**{k: v.to(device) for k, v in st.tensors().items()})
    ins = tuple(t.to(device) for t in (xq, xk, xv, lr, ln_w, ln_b, tau))
    return st, ins


def as_dtype(st: TTTState, dtype: torch.dtype) -> TTTState:
    return TTTState(**{k: v.to(dtype).clone() for k, v in st.tensors().items()})


def step_inputs(ins, t: int):
    xq, xk, xv, lr, ln_w, ln_b, tau = ins
    sl = slice(t, t + 1)
    return xq[:, :, sl], xk[:, :, sl], xv[:, :, sl], lr[:, :, sl], ln_w, ln_b, tau


def reference_run(st: TTTState, ins, t0: int, t1: int, upcast: bool) -> torch.Tensor:
    """Reference primal steps for tokens t0..t1-1 (position = token index). upcast: feed fp64 inputs."""
    outs = []
    for t in range(t0, t1):
        xs = step_inputs(ins, t)
        if upcast:
            xs = tuple(x.double() for x in xs)
        outs.append(reference.primal_step(st, *xs, start=t % st.mini_batch_size))
    return torch.cat(outs, 2)


def reference_prefill(st: TTTState, ins, T: int, upcast: bool) -> None:
    xq, xk, xv, lr, ln_w, ln_b, tau = ins
    xs = (xq[:, :, :T], xk[:, :, :T], xv[:, :, :T], lr[:, :, :T], ln_w, ln_b, tau)
    if upcast:
        xs = tuple(x.double() for x in xs)
    reference.dual_forward(st, *xs, start=0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()
