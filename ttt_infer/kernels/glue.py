"""Triton kernels for the work around the TTT op in a block ("glue"), one pass each where PyTorch
takes several: RMSNorm, the causal depthwise convs (with the conv history, the residual, and for
Q/K the head layout and RoPE at position mod the mini-batch), the learning-rate gate, the post-norm
LayerNorm with the output gate, and SwiGLU's silu(a) * b.

`linear` adds the block's residual inside the output projection's GEMM (torch.addmm, or for few rows the
decode GEMM of `gemm.py` where it measured faster) instead of a separate pass. Each kernel computes what the
PyTorch reference in `ttt_infer/layers.py` computes (`TorchGlue`), in fp32, rounding to the activation dtype at
the same points as the reference, so the two agree to the rounding of the accumulation order. `TritonGlue` has
the same methods as `TorchGlue`; the kernel backends use it (`backend.glue`). Positions come from the cache's
device tensor (CUDA-graph safe).

Under TRITON_INTERPRET=1 the kernels run on CPU tensors (tests).
"""

from __future__ import annotations

import math

import torch

from ..layers import TorchGlue, rope_rotation
from . import KernelsUnavailable, gemm
from .decode.common import _ACT_DTYPES, _TRITON_ERROR, tl, triton  # Triton is optional: None (and why) without it
from .decode.tune import _num_sms
from .pdl import early_loads, launch_kwargs, pdl_enter

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# lr_gate with at most this many rows (B*T: decode batches) runs a program a (row, 4 heads) instead of the
# tensor-core kernel: that one's K loop is 16 dependent steps in one or two programs there (7.8 us a layer at
# B=16 on the H200, session 4's profile).
LR_GATE_ROWS_MAX = 64


def check_available() -> None:
    from .decode import check_available as decode_available

    if triton is None:
        raise KernelsUnavailable(f"Triton is not installed ({_TRITON_ERROR})")
    decode_available()  # same conditions: a CUDA GPU or the interpreter


if triton is not None:

    @triton.jit
    def _rms_norm_kernel(X, W, Y, N, eps, BLOCK: tl.constexpr, PDL: tl.constexpr = False,
                         EARLY: tl.constexpr = False):  # fmt: skip
        """EARLY: the weight's load before the PDL wait (no kernel writes it), as _decode_preblock_kernel."""
        if not EARLY:
            pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        if EARLY:
            pdl_enter(PDL)
        x = tl.load(X + row * N + cols, mask=m, other=0.0).to(tl.float32)
        r = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
        xn = (x * r).to(Y.dtype.element_ty).to(tl.float32)  # reference: (x * rsqrt).to(dtype), then * weight
        tl.store(Y + row * N + cols, (xn * w).to(Y.dtype.element_ty), mask=m)

    @triton.jit
    def _conv_taps(xb, hb, c, cmask, t, tmask, sxt, C, KS: tl.constexpr, j: tl.constexpr):
        """Input of tap j for times t [BT] and channels c [BC]: x[t + j - (KS-1)] or the history [KS-1, C]."""
        s = t + (j - (KS - 1))
        from_x = tl.load(
            xb + s[:, None] * sxt + c[None, :], mask=((s >= 0) & tmask)[:, None] & cmask[None, :], other=0.0
        )
        from_h = tl.load(
            hb + (s + (KS - 1))[:, None] * C + c[None, :],
            mask=((s < 0) & tmask)[:, None] & cmask[None, :],
            other=0.0,
        )
        return from_x.to(tl.float32) + from_h.to(tl.float32)

    @triton.jit
    def _rope_factors(TAB, pos0, t, c, BT: tl.constexpr, BC: tl.constexpr, F: tl.constexpr, MB: tl.constexpr):
        """cos and sin [BT, BC/2] of the RoPE angle at position (pos0 + t) mod MB for the pairs of channels c,
        gathered from the table [MB, F/2, 2] (fp32; the reference's own rotation factors)."""
        pair = tl.reshape(c % F, (BC // 2, 2)).min(axis=1) // 2  # pair index inside the head
        off = (((pos0 + t) % MB)[:, None] * (F // 2) + pair[None, :]) * 2
        return tl.load(TAB + off), tl.load(TAB + off + 1)

    @triton.jit
    def _conv_store(Y, y, b, t, tmask, c, cmask, T, C, NH, cs, sn,
                    BT: tl.constexpr, BC: tl.constexpr, F: tl.constexpr, ROPE: tl.constexpr):  # fmt: skip
        """Store y [BT, BC] (already rounded to Y's dtype): plain [B, T, C], or rotated by (cs, sn) on the
        interleaved pairs (2i, 2i+1) into the head layout [B, NH, T, F]."""
        m = tmask[:, None] & cmask[None, :]
        if ROPE:
            e, o = tl.split(tl.reshape(y.to(tl.float32), (BT, BC // 2, 2)))  # the pairs (x_2i, x_2i+1)
            dt = Y.dtype.element_ty
            rot = tl.reshape(tl.join((e * cs - o * sn).to(dt), (e * sn + o * cs).to(dt)), (BT, BC))
            off = (
                b * NH * T * F + (c // F)[None, :].to(tl.int64) * T * F + t[:, None].to(tl.int64) * F + (c % F)[None, :]
            )
            tl.store(Y + off, rot, mask=m)
        else:
            tl.store(Y + b * T * C + t[:, None].to(tl.int64) * C + c[None, :], y, mask=m)

    @triton.jit
    def _conv_kernel(X, HIST, W1, B1, W2, B2, RES, Y1, Y2, POS, TAB,
                     T, C, sxb, sxt, NH,
                     KS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, TWO: tl.constexpr,
                     HAS_RES: tl.constexpr, ROPE: tl.constexpr, F: tl.constexpr, MB: tl.constexpr,
                     UPDATE_HIST: tl.constexpr, KSP: tl.constexpr, PDL: tl.constexpr = False):  # fmt: skip
        """Causal depthwise conv of x [B, T, C] after the history [B, KS-1, C], BT times x BC channels a
        program: y1 = conv_1(x) (+ res), y2 = conv_2(x) when TWO."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        pid_t, b, pid_c = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
        t = pid_t * BT + tl.arange(0, BT)
        c = pid_c * BC + tl.arange(0, BC)
        tmask = t < T
        cmask = c < C
        xb = X + b * sxb
        hb = HIST + b * C * (KS - 1)
        a1 = tl.zeros([BT, BC], tl.float32) + tl.load(B1 + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if TWO:
            a2 = tl.zeros([BT, BC], tl.float32) + tl.load(B2 + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
        for j in tl.static_range(KS):
            v = _conv_taps(xb, hb, c, cmask, t, tmask, sxt, C, KS, j)
            a1 += v * tl.load(W1 + c * KS + j, mask=cmask, other=0.0).to(tl.float32)[None, :]
            if TWO:
                a2 += v * tl.load(W2 + c * KS + j, mask=cmask, other=0.0).to(tl.float32)[None, :]
        dt = Y1.dtype.element_ty
        y1 = a1.to(dt)  # the conv's output, rounded as F.conv1d rounds it
        if HAS_RES:
            r = tl.load(RES + b * T * C + t[:, None].to(tl.int64) * C + c[None, :],
                        mask=tmask[:, None] & cmask[None, :], other=0.0)  # fmt: skip
            y1 = (r.to(tl.float32) + y1.to(tl.float32)).to(dt)
        if ROPE:  # one rotation for both outputs
            cs, sn = _rope_factors(TAB, tl.load(POS), t, c, BT, BC, F, MB)
        else:
            cs = tl.zeros([BT, BC // 2], tl.float32)
            sn = cs
        _conv_store(Y1, y1, b, t, tmask, c, cmask, T, C, NH, cs, sn, BT, BC, F, ROPE)
        if TWO:
            _conv_store(Y2, a2.to(dt), b, t, tmask, c, cmask, T, C, NH, cs, sn, BT, BC, F, ROPE)
        if UPDATE_HIST:  # the only program along T: it alone reads and writes these channels' history
            i = tl.arange(0, KSP)
            s = T - (KS - 1) + i  # the new history: inputs T-(KS-1) .. T-1, from x or the old history
            m = cmask[:, None] & (i < KS - 1)[None, :]
            fx = tl.load(xb + s[None, :] * sxt + c[:, None], mask=m & (s >= 0)[None, :], other=0.0)
            fh = tl.load(hb + (s + KS - 1)[None, :] * C + c[:, None], mask=m & (s < 0)[None, :], other=0.0)
            new = fx.to(tl.float32) + fh.to(tl.float32)
            tl.debug_barrier()  # every read of the old history (the taps above too) is done before it is overwritten
            tl.store(hb + i[None, :] * C + c[:, None], new.to(HIST.dtype.element_ty), mask=m)

    @triton.jit
    def _decode_preblock_kernel(X, W1, CW, CB, HIST, W2, XO, HO, C, eps1, eps2, KS: tl.constexpr,
                                BLOCK: tl.constexpr, KP: tl.constexpr, PDL: tl.constexpr = False,
                                EARLY: tl.constexpr = False):  # fmt: skip
        """One token (T = 1) of a Mamba block's front, a program a sequence b (all C channels of its row):
        n = RMSNorm_1(x); x2 = x + conv(n) after the history [KS-1, C] (then advanced by n); h = RMSNorm_2(x2).
        The same roundings as _rms_norm_kernel and _conv_kernel (taps in the same order), in one launch
        instead of three. Every load but x's is issued first, together (KP = next_pow2(KS) taps a row of the
        [BLOCK, KP] tiles); EARLY: before the PDL wait, since none of it is written by the kernels ahead (the
        weights never; the history only by this kernel, at the previous token, which finished before the
        kernel ahead of this one passed its own wait, kernels/pdl.py)."""
        if not EARLY:
            pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        b = tl.program_id(0).to(tl.int64)
        c = tl.arange(0, BLOCK)
        m = c < C
        i = tl.arange(0, KP)[None, :]
        dt = XO.dtype.element_ty
        w1 = tl.load(W1 + c, mask=m, other=0.0).to(tl.float32)
        w2 = tl.load(W2 + c, mask=m, other=0.0).to(tl.float32)
        acc = tl.load(CB + c, mask=m, other=0.0).to(tl.float32)
        cw = tl.load(CW + c[:, None] * KS + i, mask=m[:, None] & (i < KS), other=0.0).to(tl.float32)
        hrow = HIST + b * C * (KS - 1) + c  # channel c's history slots, C apart
        hist = tl.load(hrow[:, None] + i * C, mask=m[:, None] & (i < KS - 1), other=0.0)
        if EARLY:
            pdl_enter(PDL)
        x = tl.load(X + b * C + c, mask=m, other=0.0).to(tl.float32)
        r1 = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / C + eps1)
        n = ((x * r1).to(dt).to(tl.float32) * w1).to(dt)
        hf = hist.to(tl.float32)
        for j in tl.static_range(KS - 1):  # taps 0..KS-2 from the history, as _conv_kernel at T = 1 (a column of
            # the tiles picked by a sum with zeros: exact)
            acc += tl.sum(tl.where(i == j, hf, 0.0), axis=1) * tl.sum(tl.where(i == j, cw, 0.0), axis=1)
        acc += n.to(tl.float32) * tl.sum(tl.where(i == KS - 1, cw, 0.0), axis=1)
        x2 = (x + acc.to(dt).to(tl.float32)).to(dt)  # x is already in dt: the residual add rounds once
        tl.store(XO + b * C + c, x2, mask=m)
        y = x2.to(tl.float32)
        r2 = 1.0 / tl.sqrt(tl.sum(y * y, axis=0) / C + eps2)
        tl.store(HO + b * C + c, ((y * r2).to(dt).to(tl.float32) * w2).to(dt), mask=m)
        # the history advances by one input: tap j to slot j - 1, n to the last slot; after a barrier, so that
        # every thread's history load has been served before any slot is overwritten
        tl.debug_barrier()
        tl.store(hrow[:, None] + (i - 1) * C, hist, mask=m[:, None] & (i >= 1) & (i < KS - 1))
        tl.store(hrow + (KS - 2) * C, n.to(HIST.dtype.element_ty), mask=m)

    @triton.jit
    def _push_history_kernel(X, HIST, T, C, sxb, sxt, KS: tl.constexpr, BC: tl.constexpr, PDL: tl.constexpr = False):
        """history <- the last KS-1 inputs of x (T >= KS-1 here: every value comes from x)."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        b = tl.program_id(0).to(tl.int64)
        cb = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = cb < C
        for i in tl.static_range(KS - 1):
            v = tl.load(X + b * sxb + (T - (KS - 1) + i) * sxt + cb, mask=cm, other=0.0)
            tl.store(HIST + b * C * (KS - 1) + i * C + cb, v.to(HIST.dtype.element_ty), mask=cm)

    @triton.jit
    def _lr_gate_kernel(X, W, BIAS, OUT, M, T, NH, scale, C: tl.constexpr,
                        BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, EXACT16: tl.constexpr,
                        PDL: tl.constexpr = False):  # fmt: skip
        """lr[b, h, t] = scale * sigmoid(x[b, t] . w[h] + bias[h]) in fp32 (rows r = b * T + t). EXACT16: x and w
        share a 16-bit dtype, whose products are exact in fp32, so the tensor cores (fp32 accumulation)
        compute the reference's fp32 dot product; otherwise an fp32 (ieee) dot."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        rm = rows < M
        n = tl.program_id(1) * BN + tl.arange(0, BN)  # heads: several programs when there are few rows
        nm = n < NH
        acc = tl.zeros([BM, BN], tl.float32)
        for k0 in range(0, C, BK):
            k = k0 + tl.arange(0, BK)
            km = k < C
            x = tl.load(X + rows[:, None].to(tl.int64) * C + k[None, :], mask=rm[:, None] & km[None, :], other=0.0)
            w = tl.load(W + n[None, :] * C + k[:, None], mask=km[:, None] & nm[None, :], other=0.0)
            if EXACT16:
                acc += tl.dot(x, w)
            else:
                acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        logits = acc + tl.load(BIAS + n, mask=nm, other=0.0).to(tl.float32)[None, :]
        lr = scale * tl.sigmoid(logits)
        bi = (rows // T).to(tl.int64)
        ti = rows % T
        tl.store(OUT + bi[:, None] * NH * T + n[None, :] * T + ti[:, None], lr, mask=rm[:, None] & nm[None, :])

    @triton.jit
    def _lr_gate_rows_kernel(X, W, BIAS, OUT, T, NH, scale, C: tl.constexpr, BC: tl.constexpr, BH: tl.constexpr,
                             PDL: tl.constexpr = False):  # fmt: skip
        """The same gate for few rows (decode): program (row r, head block) takes x[r] once and BH heads' weights,
        one fp32 dot product each (products of 16-bit values are exact in fp32, as on the tensor cores).
        The tensor-core kernel above walks K in 16 dependent steps in one or two programs at decode."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        r = tl.program_id(0)
        h = tl.program_id(1) * BH + tl.arange(0, BH)
        hm = h < NH
        c = tl.arange(0, BC)
        cm = c < C
        x = tl.load(X + r.to(tl.int64) * C + c, mask=cm, other=0.0).to(tl.float32)
        w = tl.load(W + h[:, None] * C + c[None, :], mask=hm[:, None] & cm[None, :], other=0.0).to(tl.float32)
        logits = tl.sum(w * x[None, :], axis=1) + tl.load(BIAS + h, mask=hm, other=0.0).to(tl.float32)
        b = r // T
        tl.store(OUT + (b * NH + h).to(tl.int64) * T + r % T, scale * tl.sigmoid(logits), mask=hm)

    @triton.jit
    def _gelu_tanh(x, C: tl.constexpr):
        u = C * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + (2.0 * tl.sigmoid(2.0 * u) - 1.0))

    @triton.jit
    def _post_gate_kernel(OUT_TTT, G, LNW, LNB, Y, T, C, NH, eps, SG,
                          F: tl.constexpr, BLOCK: tl.constexpr, HAS_GATE: tl.constexpr, K: tl.constexpr,
                          PDL: tl.constexpr = False, EARLY: tl.constexpr = False):  # fmt: skip
        """y[b, t] = gelu_tanh(g[b, t]) * LayerNorm(o[b, :, t, :] as one row of C), one row a program; the gate's
        rows are SG apart (a column slice of a stacked projection). Every load is issued first, together;
        EARLY: the LayerNorm's parameters before the PDL wait (no kernel writes them), as
        _decode_preblock_kernel."""
        if not EARLY:
            pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        row = tl.program_id(0).to(tl.int64)
        b = row // T
        t = row % T
        c = tl.arange(0, BLOCK)
        m = c < C
        dt = Y.dtype.element_ty
        w = tl.load(LNW + c, mask=m, other=0.0).to(tl.float32)
        bias = tl.load(LNB + c, mask=m, other=0.0).to(tl.float32)
        if EARLY:
            pdl_enter(PDL)
        o = tl.load(OUT_TTT + b * NH * T * F + (c // F).to(tl.int64) * T * F + t * F + c % F, mask=m, other=0.0)
        if HAS_GATE:
            g = tl.load(G + row * SG + c, mask=m, other=0.0).to(tl.float32)
        o = o.to(dt).to(tl.float32)  # the reference rounds the TTT output to the activation dtype first
        mean = tl.sum(o, axis=0) / C
        d = tl.where(m, o - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / C + eps)
        y = (d * rstd * w + bias).to(dt)
        if HAS_GATE:
            y = (_gelu_tanh(g, K).to(dt).to(tl.float32) * y.to(tl.float32)).to(dt)
        tl.store(Y + row * C + c, y, mask=m)

    @triton.jit
    def _silu_mul_kernel(A, B, Y, N, SA, SB, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
        """y[r] = silu(a[r]) * b[r] for rows r of N values (program axis 0: up to 2^31 - 1 rows; axis 1 is
        limited to 65535), rows of a and b SA and SB apart."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        r = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = i < N
        a = tl.load(A + r * SA + i, mask=m, other=0.0).to(tl.float32)
        s = (a * tl.sigmoid(a)).to(Y.dtype.element_ty).to(tl.float32)  # F.silu rounds, then the product
        b = tl.load(B + r * SB + i, mask=m, other=0.0).to(tl.float32)
        tl.store(Y + r * N + i, (s * b).to(Y.dtype.element_ty), mask=m)


def _fail(fn: str, msg: str, exc=ValueError):
    raise exc(f"{fn}: {msg}")


def _check_act(fn: str, name: str, x: torch.Tensor, dev: torch.device | None = None) -> None:
    if x.dtype not in _ACT_DTYPES:
        _fail(fn, f"{name} must be fp16, bf16 or fp32 (fp64 runs through the reference), got {x.dtype}", TypeError)
    if dev is not None and x.device != dev:
        _fail(fn, f"{name} is on {x.device}, expected {dev}")


def _rows_of(x: torch.Tensor) -> bool:
    """x [B, T, C] is rows of C unit-stride values, equally spaced (contiguous, or a column slice of a wider
    contiguous tensor)."""
    return x.stride(2) == 1 and x.stride(0) == x.shape[1] * x.stride(1)


def _split(y: torch.Tensor, projs: tuple[torch.nn.Linear, ...]) -> tuple[torch.Tensor, ...]:
    """The stacked projections' output as one column slice (a view) per projection."""
    return y.split([p.out_features for p in projs], dim=-1) if len(projs) > 1 else (y,)


def _conv_params(conv: torch.nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor, int]:
    w = conv.weight
    C, one, ks = w.shape
    if one != 1 or conv.groups != C or conv.bias is None:
        raise ValueError("expected a depthwise Conv1d (groups == channels) with a bias")
    return w.reshape(C, ks).contiguous(), conv.bias.contiguous(), ks


class TritonGlue:
    """The Triton kernels behind the same methods as `layers.TorchGlue`."""

    name = "triton"

    def __init__(self, conv_tile: tuple[int, int, int] = (32, 128, 4),
                 decode_conv_tile: tuple[int, int] = (128, 4), preblock_warps: int = 8) -> None:  # fmt: skip
        """conv_tile: (times, channels, warps) of one program of the causal convolutions (powers of two); the
        default was the fastest of six for both convs on the H200 (B=16, T=8k: results/h200/glue.jsonl).
        decode_conv_tile: (channels, warps) of one program of the convolutions at one token (T = 1);
        preblock_warps: the warps of the decode block front's program (one a sequence)."""
        check_available()
        sizes = (*conv_tile, *decode_conv_tile, preblock_warps)
        if any(v < 1 or v & (v - 1) for v in sizes) or min(conv_tile[1], decode_conv_tile[0]) < 2:
            raise ValueError(f"conv tiles and warps must be powers of two (channels >= 2), got {conv_tile}, "
                             f"{decode_conv_tile}, {preblock_warps}")  # fmt: skip
        self.conv_tile = tuple(conv_tile)
        self.decode_conv_tile = tuple(decode_conv_tile)
        self.preblock_warps = preblock_warps
        self._rope_tables: dict[tuple, torch.Tensor] = {}
        self._stacks: dict[tuple, tuple] = {}  # stacked projection weights, by the projections' ids

    def projections(self, x: torch.Tensor, projs: tuple[torch.nn.Linear, ...]) -> tuple[torch.Tensor, ...]:
        """proj(x) for each projection, as one GEMM over their stacked weights (made once, kept while the
        weights are unchanged: a second copy of them); the results are column slices of one tensor."""
        w, bias = self._stacked(projs) if len(projs) > 1 else (projs[0].weight, projs[0].bias)
        if bias is not None:
            y = torch.nn.functional.linear(x, w, bias)
        else:  # few rows: the decode GEMM where it measured faster than cuBLAS (kernels/gemm.py)
            y = gemm.linear(x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[0])
        return _split(y, projs)

    def projections_lr(self, x: torch.Tensor, projs: tuple[torch.nn.Linear, ...], lr_weight: torch.Tensor,
                       lr_bias: torch.Tensor, scale: float) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:  # fmt: skip
        """(projections(x, projs), lr_gate(x, lr_weight, lr_bias, scale)). The lr gate's weights are stacked
        below the projections' (one copy of the weights for prompts and decode); at decode (T = 1) where the
        decode GEMM runs the stacked shape, its last column block computes the gate in its epilogue (fp32
        accumulation, as `lr_gate`): one launch for both. Otherwise the projections' GEMM and `lr_gate`."""
        B, T, C = x.shape
        nh = lr_weight.shape[0]
        if not (
            all(p.bias is None and p.weight.dtype == x.dtype for p in projs)
            and lr_weight.dtype == x.dtype
            and lr_weight.shape == (nh, C)
        ):
            return self.projections(x, projs), self.lr_gate(x, lr_weight, lr_bias, scale)
        w_all, _ = self._stacked(projs, extra=lr_weight)
        ny = w_all.shape[0] - nh
        x2 = x.reshape(-1, C)
        cfg = gemm.choose(x2, w_all[:ny], None) if T == 1 and "lr" in gemm.folds() else None
        if cfg is not None and ny % cfg[0] == 0:
            y, lr = gemm.skinny_linear(x2, w_all, None, cfg, lr_gate=(lr_bias, scale))
            lr = lr.view(B, nh, 1)  # [B*T, nh] is [B, nh, T] at T = 1
        else:
            y, lr = gemm.linear(x2, w_all[:ny]), self.lr_gate(x, lr_weight, lr_bias, scale)
        y = y.view(B, T, ny)
        return _split(y, projs), lr

    def swiglu(self, x: torch.Tensor, gate: torch.nn.Linear, up: torch.nn.Linear, down: torch.nn.Linear,
               residual: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """down(silu(gate(x)) * up(x)) (+ residual): gate/up as one GEMM. With the "silu" fold switched on
        (TTT_INFER_GEMM_FOLDS; measured slower on the H200, so off by default), for <= gemm.FOLD_SILU_MAX_ROWS
        rows where the decode GEMM runs down's shape, silu * mul happens as it loads its input (one launch less,
        the same roundings)."""
        a, b = self.projections(x, (gate, up))
        rows = a.shape[:-1].numel()
        if (
            0 < rows <= gemm.FOLD_SILU_MAX_ROWS
            and "silu" in gemm.folds()
            and down.bias is None
            and (residual is None or residual.dtype == x.dtype)
            and a.dtype == down.weight.dtype
        ):
            a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])  # views: column slices of one output
            r2 = None if residual is None else residual.reshape(-1, residual.shape[-1])
            cfg = gemm.choose(a2, down.weight, r2) if b2.stride(1) == 1 else None
            if cfg is not None:
                return gemm.skinny_linear(a2, down.weight, r2, cfg, glu_b=b2).view(*x.shape[:-1], down.out_features)
        return self.linear(self.silu_mul(a, b), down, residual)

    def _stacked(self, projs: tuple[torch.nn.Linear, ...],
                 extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """The projections' weights (and `extra` rows below them) as one tensor, made once and kept while the
        weights are unchanged (a second copy of them), with the stacked bias (None without biases)."""
        # extra is often a fresh view of a parameter (a new id each call): keyed by its storage and shape
        key = tuple(id(p) for p in projs) + ((extra.data_ptr(), tuple(extra.shape)) if extra is not None else ())
        sig = tuple(
            (p.weight.data_ptr(), p.weight._version, None if p.bias is None else p.bias._version) for p in projs
        ) + (((extra.data_ptr(), extra._version),) if extra is not None else ())
        hit = self._stacks.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        w = torch.cat([p.weight.detach() for p in projs] + ([extra.detach()] if extra is not None else []))
        bias = None
        if any(p.bias is not None for p in projs):
            bias = torch.cat([p.bias.detach() if p.bias is not None else w.new_zeros(p.out_features) for p in projs]
                             + ([w.new_zeros(extra.shape[0])] if extra is not None else []))  # fmt: skip
        if not (w.device.type == "cuda" and torch.cuda.is_current_stream_capturing()):  # as for the RoPE table
            self._stacks[key] = (sig, (w, bias))
        return w, bias

    def _rope_table(self, device: torch.device, f: int, theta: float, mb: int) -> torch.Tensor:
        """[mb, f/2, 2] fp32 (cos, sin) at positions 0..mb-1: the reference's rotation factors, made once per
        device and shape (during CUDA-graph capture an uncached table is recorded into the graph instead)."""
        key = (device, f, float(theta), mb)
        tab = self._rope_tables.get(key)
        if tab is None:
            pos = torch.arange(mb, device=device)
            tab = torch.view_as_real(rope_rotation(pos, f, theta, torch.float32)).contiguous()
            if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
                self._rope_tables[key] = tab
        return tab

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        _check_act("rms_norm", "x", x)
        C = x.shape[-1]
        if weight.shape != (C,):
            _fail("rms_norm", f"weight must be [{C}], got {tuple(weight.shape)}")
        x = x.contiguous()
        y = torch.empty_like(x)
        _rms_norm_kernel[(x.numel() // C,)](x, weight, y, C, eps, BLOCK=triton.next_power_of_2(C), num_warps=8,
                                            EARLY=early_loads(), **launch_kwargs(x.device))  # fmt: skip
        return y

    def causal_conv(self, x: torch.Tensor, conv: torch.nn.Conv1d, history: torch.Tensor,
                    residual: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """residual + conv(x) continuing after `history` [B, k-1, C] (updated in place): [B, T, C]."""
        return self._conv(x, (conv,), history, residual=residual)[0]

    def qk_conv_rope(self, x: torch.Tensor, conv_q: torch.nn.Conv1d, conv_k: torch.nn.Conv1d, history: torch.Tensor,
                     position: torch.Tensor, num_heads: int, theta: float,
                     mini_batch: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """XQ, XK = RoPE(conv_q(x)), RoPE(conv_k(x)) in the head layout [B, nh, T, f], contiguous; RoPE
        at position (position + t) mod mini_batch; `history` advanced past x."""
        return self._conv(x, (conv_q, conv_k), history, rope=(position, num_heads, theta, mini_batch))

    def _conv(self, x, convs, history, residual=None, rope=None):
        fn = "qk_conv_rope" if rope else "causal_conv"
        _check_act(fn, "x", x)
        B, T, C = x.shape
        if x.stride(2) != 1:
            x = x.contiguous()
        (w1, b1, ks), *rest = [_conv_params(c) for c in convs]
        w2, b2 = (rest[0][0], rest[0][1]) if rest else (w1, b1)
        if tuple(history.shape) != (B, ks - 1, C) or not history.is_contiguous() or history.device != x.device:
            _fail(fn, f"history must be a contiguous [B, k-1, C] = {(B, ks - 1, C)} tensor on {x.device}, "
                      f"got {tuple(history.shape)} on {history.device}")  # fmt: skip
        if C % 2:
            _fail(fn, f"channels must be even, got {C}")
        if residual is not None:
            if residual.shape != x.shape or residual.dtype != x.dtype:
                _fail(fn, f"residual must match x ({tuple(x.shape)}, {x.dtype})")
            residual = residual.contiguous()
        if rope is not None:
            position, nh, theta, mb = rope
            f = C // nh
            if nh * f != C or f % 2:
                _fail(fn, f"{C} channels do not split into {nh} heads of an even size")
            shape = (B, nh, T, f)
        else:
            position, nh, theta, mb, f = torch.zeros(1, dtype=torch.int64, device=x.device), 1, 1.0, 1, 2
            shape = (B, T, C)
        table = self._rope_table(x.device, f, theta, mb) if rope is not None else position  # (unused without RoPE)
        y1 = torch.empty(shape, device=x.device, dtype=x.dtype)
        y2 = torch.empty(shape, device=x.device, dtype=x.dtype) if len(convs) == 2 else y1
        bt, bc, warps = (1, *self.decode_conv_tile) if T == 1 else self.conv_tile
        BT, BC = min(bt, triton.next_power_of_2(T)), min(bc, triton.next_power_of_2(C))
        grid = (triton.cdiv(T, BT), B, triton.cdiv(C, BC))
        single = grid[0] == 1
        _conv_kernel[grid](
            x, history, w1, b1, w2, b2, residual if residual is not None else x, y1, y2, position, table,
            T, C, x.stride(0), x.stride(1), nh,
            KS=ks, BT=BT, BC=BC, TWO=len(convs) == 2, HAS_RES=residual is not None, ROPE=rope is not None,
            F=f, MB=mb, UPDATE_HIST=single, KSP=triton.next_power_of_2(ks - 1), num_warps=warps,
            **launch_kwargs(x.device),
        )  # fmt: skip
        if not single:
            _push_history_kernel[(B, triton.cdiv(C, 256))](x, history, T, C, x.stride(0), x.stride(1), KS=ks, BC=256,
                                                           **launch_kwargs(x.device))  # fmt: skip
        return (y1, y2)

    def pre_block(self, x: torch.Tensor, conv_norm, conv: torch.nn.Conv1d, history: torch.Tensor,
                  seq_norm) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(x2, h) with x2 = x + conv(RMSNorm_1(x)) (history advanced) and h = RMSNorm_2(x2), as
        `layers.TorchGlue.pre_block`. One token (T = 1: decode): one kernel a sequence row; prompts: the
        three kernels (the conv needs the other times of the row block)."""
        B, T, C = x.shape
        w, cb, ks = _conv_params(conv)
        fused = (
            T == 1 and ks >= 2 and C <= 8192 and tuple(history.shape) == (B, ks - 1, C) and history.is_contiguous()
            and history.dtype == x.dtype and x.dtype in _ACT_DTYPES
            and all(p.shape == (C,) for p in (conv_norm.weight, seq_norm.weight))
        )  # fmt: skip
        if not fused:  # the reference's composition, through this class's kernels
            return TorchGlue.pre_block(self, x, conv_norm, conv, history, seq_norm)
        x = x.contiguous()
        x2, h = torch.empty_like(x), torch.empty_like(x)
        _decode_preblock_kernel[(B,)](x, conv_norm.weight, w, cb, history, seq_norm.weight, x2, h, C,
                                      conv_norm.eps, seq_norm.eps, KS=ks, BLOCK=triton.next_power_of_2(C),
                                      KP=triton.next_power_of_2(ks), EARLY=early_loads(),
                                      num_warps=self.preblock_warps,
                                      **launch_kwargs(x.device))  # fmt: skip
        return x2, h

    def lr_gate(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
        """scale * sigmoid(x . weight[h] + bias[h]): x [B, T, C], weight [nh, C] -> [B, nh, T] fp32."""
        _check_act("lr_gate", "x", x)
        B, T, C = x.shape
        nh = weight.shape[0]
        if weight.shape != (nh, C) or bias.numel() != nh:
            _fail("lr_gate", f"weight must be [nh, {C}] and bias [nh], got {tuple(weight.shape)}, {tuple(bias.shape)}")
        x, weight, bias = x.contiguous(), weight.contiguous(), bias.reshape(nh).contiguous()
        out = torch.empty(B, nh, T, device=x.device, dtype=torch.float32)
        M, BN = B * T, max(16, triton.next_power_of_2(nh))
        if M <= LR_GATE_ROWS_MAX and C <= 8192:  # decode: a program a (row, 4 heads), one pass over x's row
            BH = 4
            _lr_gate_rows_kernel[(M, triton.cdiv(nh, BH))](x, weight, bias, out, T, nh, float(scale), C=C,
                                                           BC=triton.next_power_of_2(C), BH=BH, num_warps=4,
                                                           **launch_kwargs(x.device))  # fmt: skip
            return out
        sms = _num_sms(x.device)
        BM = 64 if M >= 64 * sms else 16  # enough programs for every SM
        if triton.cdiv(M, BM) < sms:  # few rows (decode): the heads split over programs too, 16 a program
            BN = 16
        exact16 = x.dtype in (torch.float16, torch.bfloat16) and weight.dtype == x.dtype
        _lr_gate_kernel[(triton.cdiv(M, BM), triton.cdiv(nh, BN))](x, weight, bias, out, M, T, nh, float(scale), C=C,
                                               BM=BM, BK=128, BN=BN, EXACT16=exact16, num_warps=4,
                                               **launch_kwargs(x.device))  # fmt: skip
        return out

    def post_gate(self, o: torch.Tensor, gate: torch.Tensor | None, ln: torch.nn.LayerNorm, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
        """gelu_tanh(gate) * LayerNorm(o as [B, T, nh * f] in `dtype`): o [B, nh, T, f] -> [B, T, C] of dtype."""
        B, nh, T, f = o.shape
        C = nh * f
        if not o.is_contiguous():
            o = o.contiguous()
        if gate is not None:
            _check_act("post_gate", "gate", gate)
            if gate.shape != (B, T, C) or gate.dtype != dtype:
                _fail("post_gate", f"gate must be [{B}, {T}, {C}] of {dtype}, got {tuple(gate.shape)} {gate.dtype}")
            if not _rows_of(gate):
                gate = gate.contiguous()
        y = torch.empty(B, T, C, device=o.device, dtype=dtype)
        sg = gate.stride(1) if gate is not None else C
        _post_gate_kernel[(B * T,)](o, gate if gate is not None else y, ln.weight, ln.bias, y, T, C, nh, eps, sg,
                                    F=f, BLOCK=triton.next_power_of_2(C), HAS_GATE=gate is not None,
                                    K=_SQRT_2_OVER_PI, EARLY=early_loads(), num_warps=8,
                                    **launch_kwargs(o.device))  # fmt: skip
        return y

    @staticmethod
    def linear(x: torch.Tensor, proj: torch.nn.Linear, residual: torch.Tensor | None = None) -> torch.Tensor:
        """proj(x) + residual as one GEMM with the residual in its epilogue (cuBLAS beta = 1, or the decode
        GEMM of kernels/gemm.py for few rows): one rounding."""
        if proj.bias is not None or (residual is not None and residual.dtype != x.dtype):
            y = proj(x)
            return y if residual is None else residual + y
        r2 = None if residual is None else residual.reshape(-1, residual.shape[-1])
        out = gemm.linear(x.reshape(-1, x.shape[-1]), proj.weight, r2)
        return out.view(*x.shape[:-1], out.shape[-1])

    def silu_mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_act("silu_mul", "a", a)
        if a.shape != b.shape or a.dtype != b.dtype:
            _fail("silu_mul", f"a and b must match, got {tuple(a.shape)} {a.dtype} and {tuple(b.shape)} {b.dtype}")
        n = a.shape[-1]
        a2, b2 = (t.reshape(-1, n) for t in (a, b))  # views for column slices of a stacked projection
        a2, b2 = (t if t.stride(-1) == 1 else t.contiguous() for t in (a2, b2))
        y = torch.empty(a.shape, device=a.device, dtype=a.dtype)
        if y.numel():
            grid = (a2.shape[0], triton.cdiv(n, 1024))  # rows on axis 0: B*T can exceed 65535
            _silu_mul_kernel[grid](
                a2, b2, y, n, a2.stride(0), b2.stride(0), BLOCK=1024, num_warps=4, **launch_kwargs(a.device)
            )
        return y
