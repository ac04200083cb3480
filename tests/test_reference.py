"""The PyTorch reference inner loop: dual form, primal form, and MATH.md's formulas written out."""

import pytest
import torch
import torch.nn.functional as F
from _models import random_inner, rel_err

from ttt_infer.ttt import reference as ref

KINDS = ["linear", "mlp"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("start,T", [(0, 37), (0, 16), (5, 30), (15, 3)])
def test_dual_equals_primal_fp64(kind, start, T):
    st, inp = random_inner(kind, T=T)
    st_p = st.clone()
    out_d = ref.dual_forward(st, *inp, start=start)
    out_p = ref.primal_forward(st_p, *inp, start=start)
    assert rel_err(out_d, out_p) < 1e-10
    n = (start + T) % 16  # rows of the unfinished mini-batch
    for name in ("W1", "b1", "W2", "b2"):
        if getattr(st, name) is not None:
            assert rel_err(getattr(st, name), getattr(st_p, name)) < 1e-10, name
    for name in ("k", "g1", "lr", "x2", "g2"):
        if getattr(st, name) is not None:
            assert rel_err(getattr(st, name)[:, :, :n], getattr(st_p, name)[:, :, :n]) < 1e-10 or n == 0


@pytest.mark.parametrize("kind", KINDS)
def test_dual_is_chunk_invariant(kind):
    """Prefill in pieces (stopping and restarting inside mini-batches) == prefill at once."""
    st, (xq, xk, xv, lr, *rest) = random_inner(kind, T=53)
    st2 = st.clone()
    whole = ref.dual_forward(st, xq, xk, xv, lr, *rest, start=0)
    outs, t = [], 0
    for n in (7, 20, 1, 25):
        sl = slice(t, t + n)
        outs.append(ref.dual_forward(st2, xq[:, :, sl], xk[:, :, sl], xv[:, :, sl], lr[:, :, sl], *rest, start=t % 16))
        t += n
    assert rel_err(torch.cat(outs, 2), whole) < 1e-12
    assert rel_err(st2.W1, st.W1) < 1e-12


def _math_md_linear_minibatch(W, b, xq, xk, xv, lr, ln_w, ln_b, tau):
    """MATH.md's dual form for one full mini-batch of TTT-Linear, written out independently."""
    f = xq.shape[-1]
    Z = xk @ W + b
    R = xv - xk
    mu = Z.mean(-1, keepdim=True)
    std = (Z.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    xh = (Z - mu) / std
    gh = ln_w * (ln_w * xh + ln_b - R)
    G = (f * gh - gh.sum(-1, keepdim=True) - xh * (gh * xh).sum(-1, keepdim=True)) / (f * std)
    eta = tau[:, None] * lr[..., None, :]  # eta[i, j] = tau_i lr_j
    A = torch.tril(xq @ xk.transpose(-1, -2))
    b_bar = b - torch.tril(eta) @ G
    Z_bar = xq @ W - (eta * A) @ G + b_bar
    m2 = Z_bar.mean(-1, keepdim=True)
    s2 = (Z_bar.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    out = xq + ln_w * (Z_bar - m2) / s2 + ln_b
    W_new = W - (eta[..., -1, :, None] * xk).transpose(-1, -2) @ G
    return out, W_new, b_bar[..., -1:, :]


def test_dual_matches_math_md_formula():
    st, (xq, xk, xv, lr, ln_w, ln_b, tau) = random_inner("linear", T=16)
    W, b = st.W1.clone(), st.b1.clone()[:, :, None]
    out = ref.dual_forward(st, xq, xk, xv, lr, ln_w, ln_b, tau)
    lw, lb = ln_w[None, :, None], ln_b[None, :, None]
    out_m, W_m, b_m = _math_md_linear_minibatch(W, b, xq, xk, xv, lr, lw, lb, tau)
    assert rel_err(out, out_m) < 1e-12
    assert rel_err(st.W1, W_m) < 1e-12
    assert rel_err(st.b1, b_m[:, :, 0]) < 1e-12


def test_ln_l2_bwd_is_the_gradient():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 4, 5, 16, dtype=torch.float64, generator=g).requires_grad_()
    tgt = torch.randn(3, 4, 5, 16, dtype=torch.float64, generator=g)
    w = 1 + 0.3 * torch.randn(4, 1, 16, dtype=torch.float64, generator=g)
    b = 0.3 * torch.randn(4, 1, 16, dtype=torch.float64, generator=g)
    loss = 0.5 * ((ref.ln_fwd(z, w, b) - tgt) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, z)
    assert rel_err(ref.ln_l2_bwd(z.detach(), tgt, w, b), grad) < 1e-12


def test_gelu_and_its_derivative():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64).requires_grad_()
    y = ref.gelu_tanh(x)
    assert rel_err(y, F.gelu(x, approximate="tanh")) < 1e-14
    (dy,) = torch.autograd.grad(y.sum(), x)
    assert rel_err(ref.gelu_tanh_bwd(x.detach()), dy) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_keeps_fp32_state_and_is_close(kind, dtype):
    st, inp = random_inner(kind, T=40)
    st_lo = st.clone()
    for name, t in st_lo.tensors().items():
        setattr(st_lo, name, t.float())
    xq, xk, xv, lr, ln_w, ln_b, tau = inp
    lo = [x.to(dtype) for x in (xq, xk, xv)]
    out_lo = ref.dual_forward(st_lo, *lo, lr.float(), ln_w.float(), ln_b.float(), tau.float())
    out_hi = ref.dual_forward(st, *[x.double() for x in lo], lr, ln_w, ln_b, tau)  # same rounded inputs
    assert out_lo.dtype == torch.float32 and st_lo.W1.dtype == torch.float32
    bound = 2e-2 if dtype == torch.bfloat16 else 3e-3
    assert 0 < rel_err(out_lo, out_hi) < bound
    assert rel_err(st_lo.W1, st.W1) < bound


def test_start_out_of_range_is_an_error():
    st, inp = random_inner("linear", T=4)
    with pytest.raises(ValueError, match="start"):
        ref.dual_forward(st, *inp, start=16)
    with pytest.raises(ValueError, match="one token"):
        ref.primal_step(st, *inp, start=0)
