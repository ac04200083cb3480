"""The TTT inner loop in PyTorch: the ground truth every kernel is compared against.

Two independent forms of the same computation (MATH.md):
- `dual_forward`: any number of tokens, mini-batch by mini-batch in dual form (what prefill computes);
  it may start inside a mini-batch (the state holds the rows already seen) and may stop inside one.
- `primal_step`: one token in primal form, materialising W_i = W - tau_i sum_j lr_j k_j^T g_j
  (what decode computes).

Shapes: xq, xk, xv [B, nh, T, f]; lr [B, nh, T] (lr_j = base_lr * sigmoid(.) / f); tau [b]
(tau_i = max(0, 1/i + beta_i)); ln_w, ln_b [nh, f]; `start` = tokens of the current mini-batch
already in `state`. Both update `state` in place and return the output q + LN(z_bar), [B, nh, T, f],
in the state's dtype.

Precision: the state and every accumulation are in the state's dtype (fp32, or fp64 for fp64
inputs). For fp16/bf16 inputs the operands of every matrix product are rounded to that dtype
first, as a tensor-core kernel does; elementwise math stays in the state's dtype.
"""

from __future__ import annotations

import math

import torch

from .cache import TTTState

LN_EPS = 1e-6
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _op_dtype(dtype: torch.dtype) -> torch.dtype | None:
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


class _Matmul:
    """a @ b with operands rounded to `op` (when set) and the product accumulated in `acc`."""

    def __init__(self, op: torch.dtype | None, acc: torch.dtype) -> None:
        self.op, self.acc = op, acc

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.op is not None:
            a, b = a.to(self.op), b.to(self.op)
        return a.to(self.acc) @ b.to(self.acc)


def ln_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = LN_EPS) -> torch.Tensor:
    """LayerNorm over the last axis with per-head weight/bias broadcast from [nh, 1, f]."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return w * ((x - mu) / torch.sqrt(var + eps)) + b


def ln_l2_bwd(z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = LN_EPS):
    """d/dz of 1/2 ||LN(z) - target||^2, in closed form."""
    f = z.shape[-1]
    mu = z.mean(-1, keepdim=True)
    std = torch.sqrt(z.var(-1, keepdim=True, unbiased=False) + eps)
    xh = (z - mu) / std
    gh = w * (w * xh + b - target)
    return (f * gh - gh.sum(-1, keepdim=True) - xh * (gh * xh).sum(-1, keepdim=True)) / (f * std)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))


def gelu_tanh_bwd(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)


def _gradients(st: TTTState, k, v, lnw, lnb, mm: _Matmul):
    """Forward at the mini-batch's starting weights and the inner-loss gradients of rows k, v.

    Returns g1 [.., m, h] and, for TTT-MLP, x2 = gelu(z1) [.., m, h] and g2 [.., m, f].
    """
    z1 = mm(k, st.W1) + st.b1[:, :, None]
    if st.W2 is None:
        return ln_l2_bwd(z1, v - k, lnw, lnb), None, None
    x2 = gelu_tanh(z1)
    z2 = mm(x2, st.W2) + st.b2[:, :, None]
    g2 = ln_l2_bwd(z2, v - k, lnw, lnb)
    g1 = mm(g2, st.W2.transpose(-1, -2)) * gelu_tanh_bwd(z1)
    return g1, x2, g2


def _store_rows(st: TTTState, p: int, k, lr, g1, x2, g2) -> None:
    m = k.shape[2]
    st.k[:, :, p : p + m] = k
    st.lr[:, :, p : p + m] = lr
    st.g1[:, :, p : p + m] = g1
    if x2 is not None:
        st.x2[:, :, p : p + m] = x2
        st.g2[:, :, p : p + m] = g2


def _end_mini_batch(st: TTTState, tau_last, mm: _Matmul) -> None:
    """W <- W - (tau_b lr_j k_j)^T g_j summed over the mini-batch's rows (the last row of eta)."""
    c = (tau_last * st.lr)[..., None]  # [B, nh, b, 1]
    st.W1 -= mm((c * st.k).transpose(-1, -2), st.g1)
    st.b1 -= (c * st.g1).sum(2)
    if st.W2 is not None:
        st.W2 -= mm((c * st.x2).transpose(-1, -2), st.g2)
        st.b2 -= (c * st.g2).sum(2)


def _prepare(st: TTTState, xq, xk, xv, lr, ln_w, ln_b, tau, start: int):
    B, nh, T, f = xq.shape
    b = st.mini_batch_size
    if not 0 <= start < b:
        raise ValueError(f"start must be in [0, {b}), got {start}")
    acc = st.W1.dtype
    mm = _Matmul(_op_dtype(xq.dtype), acc)
    lnw = ln_w.to(acc).reshape(1, nh, 1, f)
    lnb = ln_b.to(acc).reshape(1, nh, 1, f)
    xs = [x.to(acc) for x in (xq, xk, xv)]
    return b, acc, mm, lnw, lnb, xs, lr.to(acc), tau.to(acc)


@torch.no_grad()
def dual_forward(st: TTTState, xq, xk, xv, lr, ln_w, ln_b, tau, start: int = 0) -> torch.Tensor:
    """T tokens in dual form, mini-batch segment by segment. Returns [B, nh, T, f]."""
    b, acc, mm, lnw, lnb, (q_all, k_all, v_all), lr, tau = _prepare(st, xq, xk, xv, lr, ln_w, ln_b, tau, start)
    T = q_all.shape[2]
    out = torch.empty_like(q_all)
    t, p = 0, start
    while t < T:
        m = min(b - p, T - t)  # rows p .. p+m-1 of the current mini-batch
        q, k, v = (x[:, :, t : t + m] for x in (q_all, k_all, v_all))
        g1, x2, g2 = _gradients(st, k, v, lnw, lnb, mm)
        _store_rows(st, p, k, lr[:, :, t : t + m], g1, x2, g2)
        n = p + m
        # eta[i, j] = tau_i * lr_j for j <= i (causal within the mini-batch): [B, nh, m, n]
        causal = torch.ones(m, n, dtype=torch.bool, device=q.device).tril(diagonal=p)
        eta = (tau[p:n, None] * st.lr[:, :, None, :n]) * causal
        K, G1 = st.k[:, :, :n], st.g1[:, :, :n]
        z = mm(q, st.W1) + st.b1[:, :, None] - mm(eta * mm(q, K.transpose(-1, -2)), G1) - mm(eta, G1)
        if st.W2 is not None:
            x2bar = gelu_tanh(z)
            X2, G2 = st.x2[:, :, :n], st.g2[:, :, :n]
            z = mm(x2bar, st.W2) + st.b2[:, :, None] - mm(eta * mm(x2bar, X2.transpose(-1, -2)), G2) - mm(eta, G2)
        out[:, :, t : t + m] = q + ln_fwd(z, lnw, lnb)
        if n == b:
            _end_mini_batch(st, tau[b - 1], mm)
            p = 0
        else:
            p = n
        t += m
    return out


@torch.no_grad()
def primal_step(st: TTTState, xq, xk, xv, lr, ln_w, ln_b, tau, start: int) -> torch.Tensor:
    """One token (T == 1) in primal form. Returns [B, nh, 1, f]."""
    if xq.shape[2] != 1:
        raise ValueError(f"primal_step takes one token, got {xq.shape[2]}")
    b, acc, mm, lnw, lnb, (q, k, v), lr, tau = _prepare(st, xq, xk, xv, lr, ln_w, ln_b, tau, start)
    p = start
    g1, x2, g2 = _gradients(st, k, v, lnw, lnb, mm)
    _store_rows(st, p, k, lr, g1, x2, g2)
    n = p + 1
    lr_rows = st.lr[:, :, :n, None]  # [B, nh, n, 1]
    # W_i = W - tau_i * sum_{j<=i} lr_j k_j^T g_j, likewise b_i
    W1 = st.W1 - tau[p] * mm((lr_rows * st.k[:, :, :n]).transpose(-1, -2), st.g1[:, :, :n])
    b1 = st.b1 - tau[p] * (lr_rows * st.g1[:, :, :n]).sum(2)
    z = mm(q, W1) + b1[:, :, None]
    if st.W2 is not None:
        W2 = st.W2 - tau[p] * mm((lr_rows * st.x2[:, :, :n]).transpose(-1, -2), st.g2[:, :, :n])
        b2 = st.b2 - tau[p] * (lr_rows * st.g2[:, :, :n]).sum(2)
        z = mm(gelu_tanh(z), W2) + b2[:, :, None]
    out = q + ln_fwd(z, lnw, lnb)
    if n == b:  # the mini-batch is complete: its last W_i is the next mini-batch's W
        st.W1.copy_(W1)
        st.b1.copy_(b1)
        if st.W2 is not None:
            st.W2.copy_(W2)
            st.b2.copy_(b2)
    return out


@torch.no_grad()
def primal_step_at(st: TTTState, xq, xk, xv, lr, ln_w, ln_b, tau, position: torch.Tensor) -> torch.Tensor:
    """`primal_step` with the position read from a device tensor and no python branch on it.

    `position` ([1] or [] int64, the absolute token offset) stays on the device: the row of the
    mini-batch is p = position mod b, the rows written by index_copy_, the rows j > p masked out of the
    sums (their lr set to 0) and the end-of-mini-batch update selected by torch.where. The traced graph
    is then the same for every p, so torch.compile compiles it once (backend "reference-compiled").
    Same math as `primal_step`; the sums run over all b rows (the masked ones add exact zeros), so the
    result can differ from it by rounding only. Returns [B, nh, 1, f].
    """
    if xq.shape[2] != 1:
        raise ValueError(f"primal_step_at takes one token, got {xq.shape[2]}")
    b, acc, mm, lnw, lnb, (q, k, v), lr, tau = _prepare(st, xq, xk, xv, lr, ln_w, ln_b, tau, 0)
    row = position.reshape(1).to(torch.int64) % b  # [1]: p
    g1, x2, g2 = _gradients(st, k, v, lnw, lnb, mm)
    st.k.index_copy_(2, row, k)
    st.lr.index_copy_(2, row, lr)
    st.g1.index_copy_(2, row, g1)
    if x2 is not None:
        st.x2.index_copy_(2, row, x2)
        st.g2.index_copy_(2, row, g2)
    seen = torch.arange(b, device=row.device) <= row  # [b]: rows 0..p of the current mini-batch
    lr_rows = torch.where(seen, st.lr, torch.zeros((), dtype=acc, device=st.lr.device))[..., None]  # [B, nh, b, 1]
    tau_p = tau.index_select(0, row)  # [1]
    # W_i = W - tau_i * sum_{j<=i} lr_j k_j^T g_j, likewise b_i
    W1 = st.W1 - tau_p * mm((lr_rows * st.k).transpose(-1, -2), st.g1)
    b1 = st.b1 - tau_p * (lr_rows * st.g1).sum(2)
    z = mm(q, W1) + b1[:, :, None]
    if st.W2 is not None:
        W2 = st.W2 - tau_p * mm((lr_rows * st.x2).transpose(-1, -2), st.g2)
        b2 = st.b2 - tau_p * (lr_rows * st.g2).sum(2)
        z = mm(gelu_tanh(z), W2) + b2[:, :, None]
    out = q + ln_fwd(z, lnw, lnb)
    # the mini-batch is complete at p == b - 1: its last W_i is the next mini-batch's W
    last = row == b - 1  # [1], broadcast over every state tensor
    st.W1.copy_(torch.where(last, W1, st.W1))
    st.b1.copy_(torch.where(last, b1, st.b1))
    if st.W2 is not None:
        st.W2.copy_(torch.where(last, W2, st.W2))
        st.b2.copy_(torch.where(last, b2, st.b2))
    return out


def primal_forward(st: TTTState, xq, xk, xv, lr, ln_w, ln_b, tau, start: int = 0) -> torch.Tensor:
    """T tokens, one primal step each (slow; for tests)."""
    outs = []
    b = st.mini_batch_size
    for t in range(xq.shape[2]):
        sl = slice(t, t + 1)
        outs.append(primal_step(st, xq[:, :, sl], xk[:, :, sl], xv[:, :, sl], lr[:, :, sl], ln_w, ln_b, tau, start))
        start = (start + 1) % b
    return torch.cat(outs, 2)
