"""Small fused Triton kernels of the baselines (what torch.compile would fuse in gpt-fast, written by hand so
that nothing compiles for minutes on the benchmark machine). Each has a PyTorch twin in the model code; the
tests compare them (on the CPU through TRITON_INTERPRET=1).

- `rope_qkv`: from the fused QKV projection [B*T, 3*H*D]: rotary embedding of q and k at positions
  start+t (start read from a device tensor, so one CUDA graph serves every decode step), q written to a
  [B, T, H, D] buffer, k and v written straight into the KV cache [B, H, S, D] at their absolute positions.
- `silu_mul`: SwiGLU's silu(gate) * up from the fused gate/up projection.
- `mamba2_conv_step`: one step of the depthwise causal conv: dot with the rolling state, bias, SiLU, and
  the state shifted in place.
- `mamba2_ssd_step`: one step of Mamba-2's SSD for all heads: h = exp(dt*A) h + B (dt x)^T, o = C h, with
  dt = softplus(dt_raw + dt_bias); the state [B, heads, N, P] read once and written once, in place.
- `gated_rmsnorm`: y = RMSNorm((o + D x) * silu(z)) * w, Mamba-2's skip, gate and norm in one pass.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_qkv_kernel(
    qkv,
    q_out,
    k_out,
    v_out,
    start_ptr,
    T,
    stride_row,
    sq_b,
    sq_t,
    sq_h,
    sk_b,
    sk_t,
    sk_h,
    log2_theta,
    H: tl.constexpr,
    D: tl.constexpr,
    HALF: tl.constexpr,
):
    row = tl.program_id(0)
    h = tl.program_id(1)
    b = row // T
    t = row % T
    pos = tl.load(start_ptr) + t
    i = tl.arange(0, HALF)
    inv = tl.exp2(-(2.0 * i.to(tl.float32) / D) * log2_theta)
    ang = pos.to(tl.float32) * inv
    c = tl.cos(ang)
    s = tl.sin(ang)
    src = qkv + row.to(tl.int64) * stride_row + h * D
    q1 = tl.load(src + i).to(tl.float32)
    q2 = tl.load(src + HALF + i).to(tl.float32)
    k1 = tl.load(src + H * D + i).to(tl.float32)
    k2 = tl.load(src + H * D + HALF + i).to(tl.float32)
    v1 = tl.load(src + 2 * H * D + i)
    v2 = tl.load(src + 2 * H * D + HALF + i)
    qd = q_out + b.to(tl.int64) * sq_b + t.to(tl.int64) * sq_t + h * sq_h
    tl.store(qd + i, (q1 * c - q2 * s).to(q_out.dtype.element_ty))
    tl.store(qd + HALF + i, (q2 * c + q1 * s).to(q_out.dtype.element_ty))
    off = b.to(tl.int64) * sk_b + pos.to(tl.int64) * sk_t + h * sk_h
    tl.store(k_out + off + i, (k1 * c - k2 * s).to(k_out.dtype.element_ty))
    tl.store(k_out + off + HALF + i, (k2 * c + k1 * s).to(k_out.dtype.element_ty))
    tl.store(v_out + off + i, v1)
    tl.store(v_out + off + HALF + i, v2)


def rope_qkv(
    qkv: torch.Tensor, q_out: torch.Tensor, k_out: torch.Tensor, v_out: torch.Tensor, start: torch.Tensor, theta: float
) -> None:
    """qkv [B, T, 3*H*D] (rows contiguous); q_out [B, T, H, D]; k_out/v_out [B, H, S, D] (or any strides
    with a unit last stride) receive rotated k and v at positions start + t; start: int64 [1] tensor."""
    B, T, H, D = q_out.shape
    assert qkv.stride(-1) == 1 and qkv.shape[-1] == 3 * H * D and qkv.stride(0) == T * qkv.stride(1)
    assert k_out.stride() == v_out.stride() and k_out.stride(-1) == 1 and q_out.stride(-1) == 1
    _rope_qkv_kernel[(B * T, H)](
        qkv,
        q_out,
        k_out,
        v_out,
        start,
        T,
        qkv.stride(1),
        q_out.stride(0),
        q_out.stride(1),
        q_out.stride(2),
        k_out.stride(0),
        k_out.stride(2),
        k_out.stride(1),
        math.log2(theta),
        H=H,
        D=D,
        HALF=D // 2,
    )


@triton.jit
def _silu_mul_kernel(x, out, F, stride_x, stride_o, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < F
    g = tl.load(x + row * stride_x + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(x + row * stride_x + F + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out + row * stride_o + offs, (g * tl.sigmoid(g) * u).to(out.dtype.element_ty), mask=m)


def silu_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2F] = [gate | up] -> silu(gate) * up [..., F]."""
    F2 = x.shape[-1]
    x2 = x.reshape(-1, F2)
    assert x2.stride(-1) == 1
    out = x.new_empty(*x.shape[:-1], F2 // 2)
    M, BLOCK = x2.shape[0], 1024
    _silu_mul_kernel[(M, triton.cdiv(F2 // 2, BLOCK))](x2, out, F2 // 2, x2.stride(0), F2 // 2, BLOCK=BLOCK)
    return out


@triton.jit
def _conv_step_kernel(
    zxbcdt, state, w, bias, out, stride_zx, col0, C, W1: tl.constexpr, WP: tl.constexpr, BD: tl.constexpr
):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BD + tl.arange(0, BD)
    m = offs < C
    j = tl.arange(0, WP)
    mj = j < W1
    xnew = tl.load(zxbcdt + b * stride_zx + col0 + offs, mask=m, other=0.0).to(tl.float32)
    sp = state + (b * C + offs[:, None]) * W1 + j[None, :]
    s = tl.load(sp, mask=m[:, None] & mj[None, :], other=0.0).to(tl.float32)
    wt = tl.load(w + offs[:, None] * (W1 + 1) + j[None, :], mask=m[:, None] & mj[None, :], other=0.0).to(tl.float32)
    wl = tl.load(w + offs * (W1 + 1) + W1, mask=m, other=0.0).to(tl.float32)
    acc = tl.sum(s * wt, axis=1) + xnew * wl + tl.load(bias + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out + b * C + offs, (acc * tl.sigmoid(acc)).to(out.dtype.element_ty), mask=m)
    # shift: state[j] <- state[j+1], the last <- the new input (all loads above precede the store)
    nxt = tl.load(sp + 1, mask=m[:, None] & (j[None, :] + 1 < W1), other=0.0).to(tl.float32)
    new = tl.where(j[None, :] == W1 - 1, xnew[:, None], nxt)
    tl.store(sp, new.to(state.dtype.element_ty), mask=m[:, None] & mj[None, :])


def mamba2_conv_step(
    zxbcdt: torch.Tensor, col0: int, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """zxbcdt [B, *] (the conv input is columns col0:col0+C); state [B, C, W-1] (contiguous, updated in
    place); weight [C, W]; returns silu(conv) [B, C]."""
    B, C, W1 = state.shape
    assert state.is_contiguous() and weight.is_contiguous() and weight.shape == (C, W1 + 1) and zxbcdt.stride(-1) == 1
    out = zxbcdt.new_empty(B, C)
    BD = 256
    _conv_step_kernel[(B, triton.cdiv(C, BD))](
        zxbcdt, state, weight, bias, out, zxbcdt.stride(0), col0, C, W1=W1, WP=triton.next_power_of_2(W1), BD=BD
    )
    return out


@triton.jit
def _ssd_step_kernel(
    xbc,
    zxbcdt,
    state,
    dt_bias,
    A_log,
    o,
    stride_xbc,
    stride_zx,
    dt_col,
    stride_o,
    H: tl.constexpr,
    G: tl.constexpr,
    N: tl.constexpr,
    P: tl.constexpr,
    NB: tl.constexpr,
    BP: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    g = h // (H // G)
    offs_p = tl.program_id(1) * BP + tl.arange(0, BP)
    n = tl.arange(0, NB)
    mp = offs_p < P
    mn = n < N
    dt = tl.load(zxbcdt + b * stride_zx + dt_col + h).to(tl.float32) + tl.load(dt_bias + h).to(tl.float32)
    dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))  # softplus
    dA = tl.exp(-dt * tl.exp(tl.load(A_log + h).to(tl.float32)))
    row = xbc + b * stride_xbc
    x = tl.load(row + h * P + offs_p, mask=mp, other=0.0).to(tl.float32)
    Bv = tl.load(row + H * P + g * N + n, mask=mn, other=0.0).to(tl.float32)
    Cv = tl.load(row + H * P + G * N + g * N + n, mask=mn, other=0.0).to(tl.float32)
    sp = state + bh * N * P + n[:, None] * P + offs_p[None, :]
    mh = mn[:, None] & mp[None, :]
    s = tl.load(sp, mask=mh, other=0.0).to(tl.float32)
    s = s * dA + Bv[:, None] * (x * dt)[None, :]
    tl.store(sp, s.to(state.dtype.element_ty), mask=mh)
    out = tl.sum(s * Cv[:, None], axis=0)
    tl.store(o + b * stride_o + h * P + offs_p, out.to(o.dtype.element_ty), mask=mp)


def mamba2_ssd_step(
    xbc: torch.Tensor,
    zxbcdt: torch.Tensor,
    dt_col: int,
    state: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    ngroups: int,
) -> torch.Tensor:
    """xbc [B, H*P + 2*G*N] (x | B | C, after the conv); dt_raw = zxbcdt[:, dt_col:dt_col+H];
    state [B, H, N, P] contiguous, updated in place; returns o = C h [B, H*P] (no D skip, no gate)."""
    B, H, N, P = state.shape
    assert state.is_contiguous() and xbc.stride(-1) == 1 and zxbcdt.stride(-1) == 1
    o = xbc.new_empty(B, H * P)
    BP = min(32, triton.next_power_of_2(P))
    _ssd_step_kernel[(B * H, triton.cdiv(P, BP))](
        xbc,
        zxbcdt,
        state,
        dt_bias,
        A_log,
        o,
        xbc.stride(0),
        zxbcdt.stride(0),
        dt_col,
        o.stride(0),
        H=H,
        G=ngroups,
        N=N,
        P=P,
        NB=triton.next_power_of_2(N),
        BP=BP,
        num_warps=4,
    )
    return o


@triton.jit
def _gated_rmsnorm_kernel(
    o, x, z, Dp, w, y, stride_o, stride_x, stride_z, stride_y, E, eps, P: tl.constexpr, BLOCK: tl.constexpr
):
    r = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = offs < E
    t = tl.load(o + r * stride_o + offs, mask=m, other=0.0).to(tl.float32)
    xv = tl.load(x + r * stride_x + offs, mask=m, other=0.0).to(tl.float32)
    t += xv * tl.load(Dp + offs // P, mask=m, other=0.0).to(tl.float32)
    zv = tl.load(z + r * stride_z + offs, mask=m, other=0.0).to(tl.float32)
    t = t * zv * tl.sigmoid(zv)
    rstd = 1.0 / tl.sqrt(tl.sum(t * t, axis=0) / E + eps)
    wv = tl.load(w + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(y + r * stride_y + offs, (t * rstd * wv).to(y.dtype.element_ty), mask=m)


def gated_rmsnorm(
    o: torch.Tensor, x: torch.Tensor, z: torch.Tensor, D: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """Rows [M, E] (any row stride, unit column stride): RMSNorm((o + D[col // P] x) * silu(z)) * weight."""
    E = o.shape[-1]
    o2, x2, z2 = o.reshape(-1, E), x.reshape(-1, E), z.reshape(-1, E)
    assert o2.stride(-1) == x2.stride(-1) == z2.stride(-1) == 1
    y = torch.empty(o2.shape, dtype=z.dtype, device=z.device)
    _gated_rmsnorm_kernel[(o2.shape[0],)](
        o2,
        x2,
        z2,
        D,
        weight,
        y,
        o2.stride(0),
        x2.stride(0),
        z2.stride(0),
        E,
        E,
        eps,
        P=E // D.numel(),
        BLOCK=triton.next_power_of_2(E),
        num_warps=8,
    )
    return y.view(*o.shape[:-1], E)
