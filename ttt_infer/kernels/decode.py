"""Triton decode kernels: one token of TTT-Linear / TTT-MLP for all heads of all sequences, one launch.

The scheme is MATH.md's "Decode traffic": inside a mini-batch the weights W (TTTState.W1, b1 and, for
TTT-MLP, W2, b2) stay at the mini-batch's starting value and the state keeps the rows of the
mini-batch (k_j, g_j, lr_j; for TTT-MLP also x2_j, g2_j). One program per (sequence, head):

  p      = position % b                     (read from the device tensor: graph-safe)
  z      = k W + b                          gradient at the mini-batch's starting weights
  g      = d/dz 1/2 ||LN(z) - (v - k)||^2   (inner LayerNorm + L2 backward, fused)
  rows[p] = (k, g, lr)
  zbar   = q W + b - tau_p * sum_{j<=p} lr_j (q . k_j + 1) g_j
  out    = q + LN(zbar)                      (inner LayerNorm + residual, fused)
  p == b-1:  W -= tau_p sum_j lr_j k_j^T g_j,  b -= tau_p sum_j lr_j g_j

TTT-MLP does the same through its two layers (z1 -> gelu -> z2, g1 = (g2 W2^T) * gelu'(z1)).

So W is read once per token and written once per mini-batch. The state and every accumulation are
fp32; activations may be fp16, bf16 or fp32 (upcast on load). Outputs are fp32 [B, nh, 1, f], the
reference's dtype.

Under TRITON_INTERPRET=1 the kernels run on CPU tensors (tests) with a fixed configuration. On a GPU
the first call for each (layer type, B * nh, dtype) times the candidate configurations (CANDIDATES:
structural variant, num_warps and a variant parameter) at a middle position and at the mini-batch's
last one (the W update), on scratch rows, output and weights (the live state is only read), and keeps
the fastest on average over a mini-batch; make that call before a CUDA graph capture. Variants: "v1" (above); "v3", the same
with a smaller register footprint (TTT-Linear) or the hidden axis streamed in pipelined chunks (TTT-MLP);
"ps" (TTT-Linear), a persistent grid pipelining the next heads' W into shared memory. Two more exist as
opt-in experiments (several heads per program for TTT-Linear, "mh"; a 2-pass hidden-chunk TTT-MLP,
"chunk"; both measured slower on the H200, docs/perf-notes.md).
TTT_DECODE_CONFIG="linear=ps:4:33,mlp=v3:4:2064" (variant:num_warps[:n] per layer type) forces one.
"""

from __future__ import annotations

import math
import os

import torch

from . import KernelsUnavailable

try:  # Triton is optional: the package imports without it; check_available() says why it can't run
    import triton
    import triton.language as tl
except ImportError as _e:  # pragma: no cover - exercised only where Triton is absent
    triton = None
    tl = None
    _TRITON_ERROR: Exception | None = _e
else:
    _TRITON_ERROR = None

HEAD_DIM = 64
MLP_HIDDEN = 4 * HEAD_DIM
LN_EPS = 1e-6
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_available() -> None:
    """Raise KernelsUnavailable (saying why) when the decode kernels cannot run here."""
    if triton is None:
        raise KernelsUnavailable(f"Triton is not installed ({_TRITON_ERROR}); install ttt-infer[triton]")
    if not _interpreting() and not torch.cuda.is_available():
        raise KernelsUnavailable("the Triton decode kernels need a CUDA GPU (or TRITON_INTERPRET=1 to run on the CPU)")


if triton is not None:

    @triton.jit
    def _tanh(x):
        # 1 - 2 / (exp(2x) + 1): exact limits at +-inf, no libdevice (runs in the interpreter too)
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)

    @triton.jit
    def _gelu(x, C: tl.constexpr):
        return 0.5 * x * (1.0 + _tanh(C * (x + 0.044715 * x * x * x)))

    @triton.jit
    def _gelu_bwd(x, C: tl.constexpr):
        t = _tanh(C * (x + 0.044715 * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044715 * x * x)

    @triton.jit
    def _ln_l2_bwd(z, target, w, b, eps, N: tl.constexpr):
        """d/dz 1/2 ||w * xhat(z) + b - target||^2 for a vector z [N]."""
        mu = tl.sum(z, axis=0) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=0) / N + eps)
        xh = zc * rstd
        gh = w * (w * xh + b - target)
        return (N * gh - tl.sum(gh, axis=0) - xh * tl.sum(gh * xh, axis=0)) * (rstd / N)

    @triton.jit
    def _ln_fwd(z, w, b, eps, N: tl.constexpr):
        mu = tl.sum(z, axis=0) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=0) / N + eps)
        return w * (zc * rstd) + b

    @triton.jit
    def _ttt_linear_decode(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps,
        F: tl.constexpr, MB: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0).to(tl.int64)  # sequence * NH + head
        head = pid % NH
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        fo = tl.arange(0, F)
        ro = tl.arange(0, MB)

        # every load up front: the weights, the mini-batch's earlier rows, the token
        W = tl.load(W_ptr + pid * F * F + fo[:, None] * F + fo[None, :])  # [F, F]
        b = tl.load(b_ptr + pid * F + fo)
        prev = ro < p
        rows = pid * MB * F + ro[:, None] * F + fo[None, :]
        Kr = tl.load(K_ptr + rows, mask=prev[:, None], other=0.0)  # [MB, F]
        Gr = tl.load(G_ptr + rows, mask=prev[:, None], other=0.0)
        LRr = tl.load(LR_ptr + pid * MB + ro, mask=prev, other=0.0)  # [MB]
        q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
        k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
        v = tl.load(v_ptr + pid * F + fo).to(tl.float32)
        lr = tl.load(lr_ptr + pid)
        lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
        lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)
        tau = tl.load(tau_ptr + p)

        # gradient of this token at the mini-batch's starting weights; q's product shares the W read
        zk = tl.sum(k[:, None] * W, axis=0) + b
        zq = tl.sum(q[:, None] * W, axis=0) + b
        g = _ln_l2_bwd(zk, v - k, lnw, lnb, eps, F)
        tl.store(K_ptr + pid * MB * F + p * F + fo, k)
        tl.store(G_ptr + pid * MB * F + p * F + fo, g)
        tl.store(LR_ptr + pid * MB + p, lr)

        cur = ro == p
        Kr = tl.where(cur[:, None], k[None, :], Kr)
        Gr = tl.where(cur[:, None], g[None, :], Gr)
        LRr = tl.where(cur, lr, LRr)
        # q W_p + b_p = q W + b - tau_p sum_{j<=p} lr_j (q.k_j + 1) g_j  (rows j > p have lr 0)
        a = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)
        zbar = zq - tau * tl.sum(a[:, None] * Gr, axis=0)
        out = q + _ln_fwd(zbar, lnw, lnb, eps, F)
        tl.store(out_ptr + pid * F + fo, out)

        if p == MB - 1:  # end of the mini-batch: W_b becomes the next mini-batch's W
            c = tau * LRr
            dW = tl.dot(tl.trans(Kr * c[:, None]), Gr, input_precision="ieee")  # [F, F]
            tl.store(W_ptr + pid * F * F + fo[:, None] * F + fo[None, :], W - dW)
            tl.store(b_ptr + pid * F + fo, b - tl.sum(c[:, None] * Gr, axis=0))

    @triton.jit
    def _ttt_mlp_decode(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W1_ptr, b1_ptr, W2_ptr, b2_ptr, K_ptr, G1_ptr, X2_ptr, G2_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps,
        F: tl.constexpr, H: tl.constexpr, MB: tl.constexpr, C: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0).to(tl.int64)
        head = pid % NH
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        fo = tl.arange(0, F)
        ho = tl.arange(0, H)
        ro = tl.arange(0, MB)

        W1 = tl.load(W1_ptr + pid * F * H + fo[:, None] * H + ho[None, :])  # [F, H]
        b1 = tl.load(b1_ptr + pid * H + ho)
        W2 = tl.load(W2_ptr + pid * H * F + ho[:, None] * F + fo[None, :])  # [H, F]
        b2 = tl.load(b2_ptr + pid * F + fo)
        q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
        k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
        v = tl.load(v_ptr + pid * F + fo).to(tl.float32)
        lr = tl.load(lr_ptr + pid)
        lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
        lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)
        tau = tl.load(tau_ptr + p)
        prev = ro < p
        rows_f = pid * MB * F + ro[:, None] * F + fo[None, :]
        rows_h = pid * MB * H + ro[:, None] * H + ho[None, :]
        Kr = tl.load(K_ptr + rows_f, mask=prev[:, None], other=0.0)  # [MB, F]
        G1r = tl.load(G1_ptr + rows_h, mask=prev[:, None], other=0.0)  # [MB, H]
        X2r = tl.load(X2_ptr + rows_h, mask=prev[:, None], other=0.0)  # [MB, H]
        G2r = tl.load(G2_ptr + rows_f, mask=prev[:, None], other=0.0)  # [MB, F]
        LRr = tl.load(LR_ptr + pid * MB + ro, mask=prev, other=0.0)

        # forward and inner-loss gradients of this token at the mini-batch's starting weights
        z1k = tl.sum(k[:, None] * W1, axis=0) + b1  # [H]
        z1q = tl.sum(q[:, None] * W1, axis=0) + b1
        x2k = _gelu(z1k, C)
        z2k = tl.sum(x2k[:, None] * W2, axis=0) + b2  # [F]
        g2 = _ln_l2_bwd(z2k, v - k, lnw, lnb, eps, F)
        g1 = tl.sum(W2 * g2[None, :], axis=1) * _gelu_bwd(z1k, C)  # [H]
        tl.store(K_ptr + pid * MB * F + p * F + fo, k)
        tl.store(G1_ptr + pid * MB * H + p * H + ho, g1)
        tl.store(X2_ptr + pid * MB * H + p * H + ho, x2k)
        tl.store(G2_ptr + pid * MB * F + p * F + fo, g2)
        tl.store(LR_ptr + pid * MB + p, lr)

        cur = ro == p
        Kr = tl.where(cur[:, None], k[None, :], Kr)
        G1r = tl.where(cur[:, None], g1[None, :], G1r)
        X2r = tl.where(cur[:, None], x2k[None, :], X2r)
        G2r = tl.where(cur[:, None], g2[None, :], G2r)
        LRr = tl.where(cur, lr, LRr)

        a1 = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)  # [MB]
        z1bar = z1q - tau * tl.sum(a1[:, None] * G1r, axis=0)  # [H]
        x2bar = _gelu(z1bar, C)
        a2 = LRr * (tl.sum(X2r * x2bar[None, :], axis=1) + 1.0)
        z2bar = tl.sum(x2bar[:, None] * W2, axis=0) + b2 - tau * tl.sum(a2[:, None] * G2r, axis=0)  # [F]
        out = q + _ln_fwd(z2bar, lnw, lnb, eps, F)
        tl.store(out_ptr + pid * F + fo, out)

        if p == MB - 1:
            c = tau * LRr
            dW1 = tl.dot(tl.trans(Kr * c[:, None]), G1r, input_precision="ieee")  # [F, H]
            W1_now = tl.load(W1_ptr + pid * F * H + fo[:, None] * H + ho[None, :])  # reload: W1 dies early
            tl.store(W1_ptr + pid * F * H + fo[:, None] * H + ho[None, :], W1_now - dW1)
            tl.store(b1_ptr + pid * H + ho, b1 - tl.sum(c[:, None] * G1r, axis=0))
            dW2 = tl.dot(tl.trans(X2r * c[:, None]), G2r, input_precision="ieee")  # [H, F]
            tl.store(W2_ptr + pid * H * F + ho[:, None] * F + fo[None, :], W2 - dW2)
            tl.store(b2_ptr + pid * F + fo, b2 - tl.sum(c[:, None] * G2r, axis=0))

    @triton.jit
    def _ln_l2_bwd_rows(z, target, w, b, eps, N: tl.constexpr):
        """_ln_l2_bwd for each row of z [R, N]."""
        mu = tl.sum(z, axis=1, keep_dims=True) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=1, keep_dims=True) / N + eps)
        xh = zc * rstd
        gh = w * (w * xh + b - target)
        s1 = tl.sum(gh, axis=1, keep_dims=True)
        s2 = tl.sum(gh * xh, axis=1, keep_dims=True)
        return (N * gh - s1 - xh * s2) * (rstd / N)

    @triton.jit
    def _ln_fwd_rows(z, w, b, eps, N: tl.constexpr):
        mu = tl.sum(z, axis=1, keep_dims=True) / N
        zc = z - mu
        rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=1, keep_dims=True) / N + eps)
        return w * (zc * rstd) + b

    @triton.jit
    def _ttt_linear_decode_mh(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps,
        F: tl.constexpr, MB: tl.constexpr, HPP: tl.constexpr,
    ):  # fmt: skip
        """_ttt_linear_decode for HPP heads per program: the fixed cost of each reduction, barrier
        and layout change is shared by HPP heads, and HPP times more bytes are in flight."""
        hb = tl.program_id(0).to(tl.int64) * HPP + tl.arange(0, HPP).to(tl.int64)  # [HPP] sequence*NH + head
        head = hb % NH
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        fo = tl.arange(0, F)
        ro = tl.arange(0, MB)
        vec = hb[:, None] * F + fo[None, :]  # [HPP, F]

        W = tl.load(W_ptr + hb[:, None, None] * F * F + fo[None, :, None] * F + fo[None, None, :])  # [HPP, F, F]
        b = tl.load(b_ptr + vec)
        prev = (ro < p)[None, :, None]
        rows = hb[:, None, None] * MB * F + ro[None, :, None] * F + fo[None, None, :]  # [HPP, MB, F]
        Kr = tl.load(K_ptr + rows, mask=prev, other=0.0)
        Gr = tl.load(G_ptr + rows, mask=prev, other=0.0)
        LRr = tl.load(LR_ptr + hb[:, None] * MB + ro[None, :], mask=(ro < p)[None, :], other=0.0)  # [HPP, MB]
        q = tl.load(q_ptr + vec).to(tl.float32)
        k = tl.load(k_ptr + vec).to(tl.float32)
        v = tl.load(v_ptr + vec).to(tl.float32)
        lr = tl.load(lr_ptr + hb)  # [HPP]
        lnw = tl.load(lnw_ptr + head[:, None] * F + fo[None, :]).to(tl.float32)
        lnb = tl.load(lnb_ptr + head[:, None] * F + fo[None, :]).to(tl.float32)
        tau = tl.load(tau_ptr + p)

        zk = tl.sum(k[:, :, None] * W, axis=1) + b  # [HPP, F]
        zq = tl.sum(q[:, :, None] * W, axis=1) + b
        g = _ln_l2_bwd_rows(zk, v - k, lnw, lnb, eps, F)
        tl.store(K_ptr + hb[:, None] * MB * F + p * F + fo[None, :], k)
        tl.store(G_ptr + hb[:, None] * MB * F + p * F + fo[None, :], g)
        tl.store(LR_ptr + hb * MB + p, lr)

        cur = (ro == p)[None, :, None]
        Kr = tl.where(cur, k[:, None, :], Kr)
        Gr = tl.where(cur, g[:, None, :], Gr)
        LRr = tl.where((ro == p)[None, :], lr[:, None], LRr)
        a = LRr * (tl.sum(Kr * q[:, None, :], axis=2) + 1.0)  # [HPP, MB]
        zbar = zq - tau * tl.sum(a[:, :, None] * Gr, axis=1)
        out = q + _ln_fwd_rows(zbar, lnw, lnb, eps, F)
        tl.store(out_ptr + vec, out)

        if p == MB - 1:
            c = tau * LRr
            dW = tl.dot(tl.permute(Kr * c[:, :, None], (0, 2, 1)), Gr, input_precision="ieee")  # [HPP, F, F]
            tl.store(W_ptr + hb[:, None, None] * F * F + fo[None, :, None] * F + fo[None, None, :], W - dW)
            tl.store(b_ptr + vec, b - tl.sum(c[:, :, None] * Gr, axis=1))

    @triton.jit
    def _ttt_mlp_decode_chunked(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W1_ptr, b1_ptr, W2_ptr, b2_ptr, K_ptr, G1_ptr, X2_ptr, G2_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps,
        F: tl.constexpr, H: tl.constexpr, MB: tl.constexpr, C: tl.constexpr, HC: tl.constexpr,
    ):  # fmt: skip
        """_ttt_mlp_decode streaming the hidden axis in chunks of HC: a few KB of registers per chunk
        instead of 128 KB of weights, so several programs share an SM. Two passes over the chunks
        (z2 needs all of them before g2 exists; g1 and z2bar need W2 again): the second reads W1, W2
        back through L2, just after the first. The end-of-mini-batch update is done chunk by chunk
        in the second pass, where every row is known."""
        pid = tl.program_id(0).to(tl.int64)
        head = pid % NH
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        fo = tl.arange(0, F)
        co = tl.arange(0, HC)
        ro = tl.arange(0, MB)
        prev = ro < p
        cur = ro == p

        q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
        k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
        v = tl.load(v_ptr + pid * F + fo).to(tl.float32)
        lr = tl.load(lr_ptr + pid)
        lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
        lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)
        tau = tl.load(tau_ptr + p)
        b2 = tl.load(b2_ptr + pid * F + fo)
        rows_f = pid * MB * F + ro[:, None] * F + fo[None, :]
        Kr = tl.load(K_ptr + rows_f, mask=prev[:, None], other=0.0)
        G2r = tl.load(G2_ptr + rows_f, mask=prev[:, None], other=0.0)
        LRr = tl.load(LR_ptr + pid * MB + ro, mask=prev, other=0.0)
        Kr = tl.where(cur[:, None], k[None, :], Kr)
        LRr = tl.where(cur, lr, LRr)
        a1 = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)  # [MB]
        cst = tau * LRr

        # pass 1: z2 of k at the mini-batch's starting weights
        z2k = b2
        for c in range(0, H // HC):
            hc = c * HC + co
            W1c = tl.load(W1_ptr + pid * F * H + fo[:, None] * H + hc[None, :])  # [F, HC]
            z1k = tl.sum(k[:, None] * W1c, axis=0) + tl.load(b1_ptr + pid * H + hc)
            W2c = tl.load(W2_ptr + pid * H * F + hc[:, None] * F + fo[None, :])  # [HC, F]
            z2k += tl.sum(_gelu(z1k, C)[:, None] * W2c, axis=0)
        g2 = _ln_l2_bwd(z2k, v - k, lnw, lnb, eps, F)
        tl.store(K_ptr + pid * MB * F + p * F + fo, k)
        tl.store(G2_ptr + pid * MB * F + p * F + fo, g2)
        tl.store(LR_ptr + pid * MB + p, lr)
        G2r = tl.where(cur[:, None], g2[None, :], G2r)

        # pass 2: g1 and x2 of k (rows p), z1bar, x2bar, and the z2bar sums; the update at b-1
        zacc = b2
        a2 = tl.zeros([MB], dtype=tl.float32)
        for c in range(0, H // HC):
            hc = c * HC + co
            W1c = tl.load(W1_ptr + pid * F * H + fo[:, None] * H + hc[None, :])
            b1c = tl.load(b1_ptr + pid * H + hc)
            W2c = tl.load(W2_ptr + pid * H * F + hc[:, None] * F + fo[None, :])
            rows_c = pid * MB * H + ro[:, None] * H + hc[None, :]
            G1c = tl.load(G1_ptr + rows_c, mask=prev[:, None], other=0.0)  # [MB, HC]
            X2c = tl.load(X2_ptr + rows_c, mask=prev[:, None], other=0.0)
            z1k = tl.sum(k[:, None] * W1c, axis=0) + b1c
            z1q = tl.sum(q[:, None] * W1c, axis=0) + b1c
            g1 = tl.sum(W2c * g2[None, :], axis=1) * _gelu_bwd(z1k, C)  # [HC]
            x2k = _gelu(z1k, C)
            tl.store(G1_ptr + pid * MB * H + p * H + hc, g1)
            tl.store(X2_ptr + pid * MB * H + p * H + hc, x2k)
            G1c = tl.where(cur[:, None], g1[None, :], G1c)
            X2c = tl.where(cur[:, None], x2k[None, :], X2c)
            x2bar = _gelu(z1q - tau * tl.sum(a1[:, None] * G1c, axis=0), C)
            a2 += tl.sum(X2c * x2bar[None, :], axis=1)
            zacc += tl.sum(x2bar[:, None] * W2c, axis=0)
            if p == MB - 1:
                dW1 = tl.dot(tl.trans(Kr * cst[:, None]), G1c, input_precision="ieee")  # [F, HC]
                tl.store(W1_ptr + pid * F * H + fo[:, None] * H + hc[None, :], W1c - dW1)
                tl.store(b1_ptr + pid * H + hc, b1c - tl.sum(cst[:, None] * G1c, axis=0))
                dW2 = tl.dot(tl.trans(X2c * cst[:, None]), G2r, input_precision="ieee")  # [HC, F]
                tl.store(W2_ptr + pid * H * F + hc[:, None] * F + fo[None, :], W2c - dW2)
        z2bar = zacc - tau * tl.sum((LRr * (a2 + 1.0))[:, None] * G2r, axis=0)
        out = q + _ln_fwd(z2bar, lnw, lnb, eps, F)
        tl.store(out_ptr + pid * F + fo, out)
        if p == MB - 1:
            tl.store(b2_ptr + pid * F + fo, b2 - tl.sum(cst[:, None] * G2r, axis=0))

    @triton.jit
    def _ttt_linear_decode_v3(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps,
        F: tl.constexpr, MB: tl.constexpr, LATE: tl.constexpr, EV: tl.constexpr, RC: tl.constexpr,
    ):  # fmt: skip
        """_ttt_linear_decode with a smaller register footprint, so more programs share an SM (ptxas,
        sm_90, 4 warps: 80-96 registers against v1's 231; v1's [F, F] W and dW tiles of the
        end-of-mini-batch branch set its peak):
        - W is dead after the two matvecs; the end-of-mini-batch branch rereads W (L2) in blocks of RC
          rows, with the matching RC columns of this program's K rows from memory, and updates block by
          block (W[i0:i0+RC] -= K[:, i0:i0+RC]^T (c G));
        - LATE: the mini-batch's rows are loaded after the matvecs (not live next to W);
        - EV: cache hints: W streams through L2 (evict_first); the rows, reread by the next tokens of
          the mini-batch, are kept (evict_last)."""
        pid = tl.program_id(0).to(tl.int64)
        head = pid % NH
        fo = tl.arange(0, F)
        ro = tl.arange(0, MB)
        # scalar 64-bit bases, 32-bit tile offsets: int64 offset tiles would double the registers of each tile
        Wb = W_ptr + pid * F * F
        Kb = K_ptr + pid * MB * F
        Gb = G_ptr + pid * MB * F
        w_off = fo[:, None] * F + fo[None, :]
        rows = ro[:, None] * F + fo[None, :]
        if EV:
            W = tl.load(Wb + w_off, eviction_policy="evict_first")  # [F, F]
        else:
            W = tl.load(Wb + w_off)
        b = tl.load(b_ptr + pid * F + fo)
        q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
        k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        prev = ro < p
        if not LATE:
            Kr = tl.load(Kb + rows, mask=prev[:, None], other=0.0)  # [MB, F]
            Gr = tl.load(Gb + rows, mask=prev[:, None], other=0.0)
        v = tl.load(v_ptr + pid * F + fo).to(tl.float32)
        lr = tl.load(lr_ptr + pid)
        lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
        lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)
        tau = tl.load(tau_ptr + p)
        LRr = tl.load(LR_ptr + pid * MB + ro, mask=prev, other=0.0)  # [MB]

        zk = tl.sum(k[:, None] * W, axis=0) + b
        zq = tl.sum(q[:, None] * W, axis=0) + b
        if LATE:
            if EV:
                Kr = tl.load(Kb + rows, mask=prev[:, None], other=0.0, eviction_policy="evict_last")
                Gr = tl.load(Gb + rows, mask=prev[:, None], other=0.0, eviction_policy="evict_last")
            else:
                Kr = tl.load(Kb + rows, mask=prev[:, None], other=0.0)
                Gr = tl.load(Gb + rows, mask=prev[:, None], other=0.0)
        g = _ln_l2_bwd(zk, v - k, lnw, lnb, eps, F)
        tl.store(Kb + p * F + fo, k)
        tl.store(Gb + p * F + fo, g)
        tl.store(LR_ptr + pid * MB + p, lr)

        cur = ro == p
        Kr = tl.where(cur[:, None], k[None, :], Kr)
        Gr = tl.where(cur[:, None], g[None, :], Gr)
        LRr = tl.where(cur, lr, LRr)
        a = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)
        zbar = zq - tau * tl.sum(a[:, None] * Gr, axis=0)
        out = q + _ln_fwd(zbar, lnw, lnb, eps, F)
        tl.store(out_ptr + pid * F + fo, out)

        if p == MB - 1:  # W_b = W - (tau lr K)^T G, in blocks of RC rows of W
            tl.debug_barrier()  # row p of K, just stored by other threads of this program
            cg = Gr * (tau * LRr)[:, None]  # [MB, F]
            rc = tl.arange(0, RC)
            for i0 in range(0, F, RC):
                Kc = tl.load(Kb + ro[:, None] * F + i0 + rc[None, :])  # [MB, RC]
                blk = (i0 + rc)[:, None] * F + fo[None, :]
                Wc = tl.load(Wb + blk)
                tl.store(Wb + blk, Wc - tl.dot(tl.trans(Kc), cg, input_precision="ieee"))
            tl.store(b_ptr + pid * F + fo, b - tl.sum(cg, axis=0))

    @triton.jit
    def _ttt_mlp_decode_v3(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W1_ptr, b1_ptr, W2_ptr, b2_ptr, K_ptr, G1_ptr, X2_ptr, G2_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps,
        F: tl.constexpr, H: tl.constexpr, MB: tl.constexpr, C: tl.constexpr, HC: tl.constexpr,
        EV: tl.constexpr, NS: tl.constexpr, UC: tl.constexpr,
    ):  # fmt: skip
        """_ttt_mlp_decode streaming the hidden axis in chunks of HC, W1 read once, W2 twice (the second
        time from L2, one program lifetime later). Only one chunk of W1, W2 and of the rows is live at a
        time, so several programs share an SM.

        Pass 1, chunk c: z1k_c = k W1c + b1c, z1q_c = q W1c + b1c, the rows' part of z1bar
        (z1q_c - tau sum_{j<p} a1_j G1[j, c]), z2k += gelu(z1k_c) W2c. The two [HC] vectors go to this
        program's row p of X2 and G1 (free until this token's x2, g1 are written there): Triton cannot
        assemble an [H] register vector from chunks, memory can (L1).
        Pass 2, chunk c (g2 known): g1_c = (W2c g2) gelu'(z1k_c), x2k_c, z1bar_c, x2bar_c; the rows'
        X2 . x2bar sums, z2bar += x2bar_c W2c; row p of G1, X2 gets g1_c, x2k_c.
        End of mini-batch: a third loop over the chunks rereads W1c, W2c and the rows (all in memory
        now) and writes W - (tau lr)-weighted outer products, chunk by chunk.
        EV: W1 evict_first; W2 evict_last in pass 1 (reread in pass 2), evict_first in pass 2.
        NS: software-pipelining stages of the two chunk loops (NS > 1: Triton streams the next chunks'
        tiles into shared memory with async copies while this chunk computes; the data in flight then
        costs shared memory, not registers)."""
        pid = tl.program_id(0).to(tl.int64)
        head = pid % NH
        fo = tl.arange(0, F)
        co = tl.arange(0, HC)
        ro = tl.arange(0, MB)
        q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
        k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        prev = ro < p
        # scalar 64-bit bases, 32-bit tile offsets (int64 offset tiles would double each tile's registers)
        W1b = W1_ptr + pid * F * H
        W2b = W2_ptr + pid * H * F
        G1b = G1_ptr + pid * MB * H
        X2b = X2_ptr + pid * MB * H
        Kb = K_ptr + pid * MB * F
        G2b = G2_ptr + pid * MB * F
        rows_f = ro[:, None] * F + fo[None, :]
        Kr = tl.load(Kb + rows_f, mask=prev[:, None], other=0.0)  # [MB, F], rows j < p
        LRr = tl.load(LR_ptr + pid * MB + ro, mask=prev, other=0.0)  # 0 for j >= p
        lr = tl.load(lr_ptr + pid)
        tau = tl.load(tau_ptr + p)
        b2 = tl.load(b2_ptr + pid * F + fo)
        a1 = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)  # [MB], rows j < p
        a1p = lr * (tl.sum(k * q, axis=0) + 1.0)  # row p
        srow = p * H  # row p of G1 and X2: scratch until pass 2 writes g1, x2k

        # pass 1
        z2k = b2
        for c0 in tl.range(0, H, HC, num_stages=NS):
            hc = c0 + co
            w1 = fo[:, None] * H + hc[None, :]
            w2 = hc[:, None] * F + fo[None, :]
            if EV:
                W1c = tl.load(W1b + w1, eviction_policy="evict_first")  # [F, HC]
                W2c = tl.load(W2b + w2, eviction_policy="evict_last")  # [HC, F]
            else:
                W1c = tl.load(W1b + w1)
                W2c = tl.load(W2b + w2)
            b1c = tl.load(b1_ptr + pid * H + hc)
            G1c = tl.load(G1b + ro[:, None] * H + hc[None, :], mask=prev[:, None], other=0.0)
            z1k = tl.sum(k[:, None] * W1c, axis=0) + b1c  # [HC]
            z1q = tl.sum(q[:, None] * W1c, axis=0) + b1c - tau * tl.sum(a1[:, None] * G1c, axis=0)
            z2k += tl.sum(_gelu(z1k, C)[:, None] * W2c, axis=0)
            tl.store(X2b + srow + hc, z1k)
            tl.store(G1b + srow + hc, z1q)
        v = tl.load(v_ptr + pid * F + fo).to(tl.float32)
        lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
        lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)
        g2 = _ln_l2_bwd(z2k, v - k, lnw, lnb, eps, F)
        tl.store(Kb + p * F + fo, k)
        tl.store(G2b + p * F + fo, g2)
        tl.store(LR_ptr + pid * MB + p, lr)

        # pass 2
        tl.debug_barrier()  # pass 1's scratch stores are visible to the (possibly pipelined) loads below
        zacc = b2
        a2 = tl.zeros([MB], dtype=tl.float32)
        a2p = 0.0
        for c0 in tl.range(0, H, HC, num_stages=NS):
            hc = c0 + co
            w2 = hc[:, None] * F + fo[None, :]
            z1k = tl.load(X2b + srow + hc)
            z1q = tl.load(G1b + srow + hc)
            if EV:
                W2c = tl.load(W2b + w2, eviction_policy="evict_first")
            else:
                W2c = tl.load(W2b + w2)
            X2c = tl.load(X2b + ro[:, None] * H + hc[None, :], mask=prev[:, None], other=0.0)
            g1 = tl.sum(W2c * g2[None, :], axis=1) * _gelu_bwd(z1k, C)  # [HC]
            x2k = _gelu(z1k, C)
            x2bar = _gelu(z1q - tau * a1p * g1, C)
            a2 += tl.sum(X2c * x2bar[None, :], axis=1)
            a2p += tl.sum(x2k * x2bar, axis=0)
            zacc += tl.sum(x2bar[:, None] * W2c, axis=0)
            tl.debug_barrier()  # every thread has read this chunk's scratch before it is overwritten
            tl.store(G1b + srow + hc, g1)
            tl.store(X2b + srow + hc, x2k)
        G2r = tl.load(G2b + rows_f, mask=prev[:, None], other=0.0)
        corr = tl.sum((LRr * (a2 + 1.0))[:, None] * G2r, axis=0) + lr * (a2p + 1.0) * g2
        out = q + _ln_fwd(zacc - tau * corr, lnw, lnb, eps, F)
        tl.store(out_ptr + pid * F + fo, out)

        if p == MB - 1:  # W_b: every row of the mini-batch is in memory now
            tl.debug_barrier()
            cur = ro == p
            cst = tau * tl.where(cur, lr, LRr)  # [MB]
            Kc = tl.where(cur[:, None], k[None, :], Kr) * cst[:, None]  # [MB, F]
            G2c = tl.where(cur[:, None], g2[None, :], G2r)
            tl.store(b2_ptr + pid * F + fo, b2 - tl.sum(cst[:, None] * G2c, axis=0))
            # two loops over chunks of UC hidden units, one dot live at a time (this branch's tiles set the
            # kernel's register peak otherwise)
            uo = tl.arange(0, UC)
            for c0 in tl.range(0, H, UC, num_stages=1):
                rows_c = ro[:, None] * H + (c0 + uo)[None, :]
                G1c = tl.load(G1b + rows_c)  # [MB, UC]
                w1 = fo[:, None] * H + (c0 + uo)[None, :]
                tl.store(W1b + w1, tl.load(W1b + w1) - tl.dot(tl.trans(Kc), G1c, input_precision="ieee"))
                b1c = tl.load(b1_ptr + pid * H + c0 + uo)
                tl.store(b1_ptr + pid * H + c0 + uo, b1c - tl.sum(cst[:, None] * G1c, axis=0))
            for c0 in tl.range(0, H, UC, num_stages=1):
                X2c = tl.load(X2b + ro[:, None] * H + (c0 + uo)[None, :]) * cst[:, None]  # [MB, UC]
                w2 = (c0 + uo)[:, None] * F + fo[None, :]
                tl.store(W2b + w2, tl.load(W2b + w2) - tl.dot(tl.trans(X2c), G2c, input_precision="ieee"))

    @triton.jit
    def _ttt_linear_decode_ps(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, STRIDE,
        F: tl.constexpr, MB: tl.constexpr, NS: tl.constexpr, RC: tl.constexpr, TURNS: tl.constexpr,
    ):  # fmt: skip
        """_ttt_linear_decode_v3 as a persistent kernel: a grid of a few programs per SM, each looping
        over (sequence, head) pairs with Triton's software pipeliner (NS stages): the W tile and rows of
        the next pairs stream into shared memory (async copies) while this pair computes, so the bytes in
        flight no longer cost registers and no program idles between its loads and its arithmetic. The
        end-of-mini-batch update is a second loop over the same pairs (W, rows reread: +1/16 of a W read
        per token on average), since a conditional in the first loop keeps Triton from pipelining it."""
        fo = tl.arange(0, F)
        ro = tl.arange(0, MB)
        w_off = fo[:, None] * F + fo[None, :]
        rows = ro[:, None] * F + fo[None, :]
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        prev = ro < p
        cur = ro == p
        tau = tl.load(tau_ptr + p)
        # program g takes pairs g, g + STRIDE, ... (STRIDE = the grid, TURNS = cdiv(NPROG, STRIDE), a
        # constexpr: the interpreter wants constant loop bounds); a turn past NPROG rereads the last pair
        # (in bounds) and stores nothing
        for t in tl.range(0, TURNS, num_stages=NS):
            ok = t * STRIDE + tl.program_id(0) < NPROG
            pid = tl.minimum(t * STRIDE + tl.program_id(0), NPROG - 1).to(tl.int64)
            head = pid % NH
            Wb = W_ptr + pid * F * F
            Kb = K_ptr + pid * MB * F
            Gb = G_ptr + pid * MB * F
            W = tl.load(Wb + w_off)  # [F, F]
            b = tl.load(b_ptr + pid * F + fo)
            Kr = tl.load(Kb + rows, mask=prev[:, None], other=0.0)  # [MB, F]
            Gr = tl.load(Gb + rows, mask=prev[:, None], other=0.0)
            LRr = tl.load(LR_ptr + pid * MB + ro, mask=prev, other=0.0)  # [MB]
            q = tl.load(q_ptr + pid * F + fo).to(tl.float32)
            k = tl.load(k_ptr + pid * F + fo).to(tl.float32)
            v = tl.load(v_ptr + pid * F + fo).to(tl.float32)
            lr = tl.load(lr_ptr + pid)
            lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
            lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)

            zk = tl.sum(k[:, None] * W, axis=0) + b
            zq = tl.sum(q[:, None] * W, axis=0) + b
            g = _ln_l2_bwd(zk, v - k, lnw, lnb, eps, F)
            tl.store(Kb + p * F + fo, k, mask=ok)
            tl.store(Gb + p * F + fo, g, mask=ok)
            tl.store(LR_ptr + pid * MB + p, lr, mask=ok)
            Kr = tl.where(cur[:, None], k[None, :], Kr)
            Gr = tl.where(cur[:, None], g[None, :], Gr)
            LRr = tl.where(cur, lr, LRr)
            a = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)
            zbar = zq - tau * tl.sum(a[:, None] * Gr, axis=0)
            out = q + _ln_fwd(zbar, lnw, lnb, eps, F)
            tl.store(out_ptr + pid * F + fo, out, mask=ok)

        if p == MB - 1:  # a second loop (an scf.if in the first would stop its pipelining): W rereads
            tl.debug_barrier()  # this program's rows p, stored by other threads
            rc = tl.arange(0, RC)
            for t in tl.range(0, TURNS, num_stages=1):
                ok = t * STRIDE + tl.program_id(0) < NPROG
                pid = tl.minimum(t * STRIDE + tl.program_id(0), NPROG - 1).to(tl.int64)
                Wb = W_ptr + pid * F * F
                Kb = K_ptr + pid * MB * F
                cg = tl.load(G_ptr + pid * MB * F + rows) * (tau * tl.load(LR_ptr + pid * MB + ro))[:, None]
                for i0 in tl.range(0, F, RC, num_stages=1):
                    Kc = tl.load(Kb + ro[:, None] * F + i0 + rc[None, :])  # [MB, RC]
                    blk = (i0 + rc)[:, None] * F + fo[None, :]
                    Wc = tl.load(Wb + blk)
                    tl.store(Wb + blk, Wc - tl.dot(tl.trans(Kc), cg, input_precision="ieee"), mask=ok)
                bb = tl.load(b_ptr + pid * F + fo)
                tl.store(b_ptr + pid * F + fo, bb - tl.sum(cg, axis=0), mask=ok)

    _KERNELS = {
        ("linear", "v1"): _ttt_linear_decode,
        ("linear", "mh"): _ttt_linear_decode_mh,
        ("linear", "v3"): _ttt_linear_decode_v3,
        ("linear", "ps"): _ttt_linear_decode_ps,
        ("mlp", "v1"): _ttt_mlp_decode,
        ("mlp", "chunk"): _ttt_mlp_decode_chunked,
        ("mlp", "v3"): _ttt_mlp_decode_v3,
    }

# A configuration: (variant, num_warps, n): n = heads per program (linear "mh"), hidden chunk (mlp "chunk"),
# flags for linear "v3" (bit 0: rows loaded after the matvecs, bit 1: cache hints), NS * 10 + programs per
# SM for linear "ps", EV * 10000 + NS * 1000 + hidden chunk for mlp "v3" (NS: pipelining stages).
# The tuner's candidates. "mh" and "chunk" were slower on the H200 at every batch measured
# (docs/perf-notes.md, "Decode (Triton)"); they stay selectable through TTT_DECODE_CONFIG and tested.
# The "ps" programs per SM are what fits beside each other (ptxas for sm_90: 124-128 registers, 27 KB
# (NS=2) / 53 KB (NS=3) shared memory at 4 warps); more would start a second wave.
CANDIDATES = {
    "linear": [
        ("v1", 2, 1),
        ("v1", 4, 1),
        ("v3", 4, 0),
        ("v3", 4, 1),
        ("v3", 4, 3),
        ("v3", 8, 1),
        ("v3", 2, 0),
        ("ps", 4, 23),
        ("ps", 4, 24),
        ("ps", 4, 33),
        ("ps", 4, 34),
        ("ps", 8, 32),
    ],
    "mlp": [
        ("v1", 8, 0),
        ("v1", 16, 0),
        ("v3", 4, 1064),
        ("v3", 4, 2032),
        ("v3", 4, 2064),
        ("v3", 4, 3032),
        ("v3", 4, 12032),
        ("v3", 4, 12064),
        ("v3", 8, 2032),
        ("v3", 8, 3032),
    ],
}
DEFAULT = {"linear": ("v1", 4, 1), "mlp": ("v1", 8, 0)}
# (kind, B * nh, activation dtype) -> configuration, filled by _tune on the first GPU call of each shape
TUNED: dict[tuple[str, int, torch.dtype], tuple[str, int, int]] = {}
# the same key -> {configuration: median ms} of the last tuning (benchmark reports)
TIMINGS: dict[tuple[str, int, torch.dtype], dict] = {}


def _parse_config(text: str, kind: str) -> tuple[str, int, int] | None:
    """TTT_DECODE_CONFIG="linear=mh:4:4,mlp=chunk:4:64": variant:num_warps[:n] per layer type."""
    for entry in text.split(","):
        k, _, spec = entry.strip().rpartition("=")
        if k != kind:
            continue
        parts = spec.split(":")
        variant, warps = parts[0], int(parts[1])
        extra = (
            int(parts[2])
            if len(parts) > 2
            else {
                "v1": 1 if kind == "linear" else 0,
                "mh": 4,
                "chunk": 64,
                "v3": 0 if kind == "linear" else 2064,
                "ps": 34,
            }[variant]
        )
        if (kind, variant) not in _KERNELS:
            raise ValueError(f"TTT_DECODE_CONFIG: no variant {variant!r} for TTT-{kind}")
        return variant, warps, extra
    return None


def _fits(cfg: tuple[str, int, int], nprog: int) -> bool:
    variant, _, n = cfg
    return variant != "mh" or nprog % n == 0


_SMS: dict = {}


def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of the device (1 under the interpreter: a small persistent grid)."""
    if device.type != "cuda":
        return 1
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS[device]


def _launch(kind: str, nprog: int, args: list, cfg: tuple[str, int, int], consts: dict) -> None:
    variant, warps, n = cfg
    kern = _KERNELS[(kind, variant)]
    if variant == "mh":
        kern[(nprog // n,)](*args, num_warps=warps, HPP=n, **consts)
    elif variant == "chunk":
        kern[(nprog,)](*args, num_warps=warps, HC=n, **consts)
    elif kind == "linear" and variant == "v3":  # n: bit 0 LATE, bit 1 EV
        kern[(nprog,)](*args, num_warps=warps, LATE=n & 1, EV=(n >> 1) & 1, RC=16, **consts)
    elif variant == "ps":  # n = NS * 10 + programs per SM; as few turns as that allows, the grid evened out
        turns = triton.cdiv(nprog, _num_sms(args[0].device) * (n % 10))
        grid = triton.cdiv(nprog, turns)
        kern[(grid,)](*args, grid, num_warps=warps, NS=n // 10, RC=16, TURNS=triton.cdiv(nprog, grid), **consts)
    elif kind == "mlp" and variant == "v3":  # n = EV * 10000 + NS * 1000 + HC
        kern[(nprog,)](*args, num_warps=warps, HC=n % 1000, NS=n // 1000 % 10, EV=n // 10000, UC=32, **consts)
    else:
        kern[(nprog,)](*args, num_warps=warps, **consts)


def _tune(kind: str, nprog: int, args: list, names: list[str], consts: dict) -> tuple[str, int, int]:
    """Time each candidate configuration and keep the one fastest on average over a mini-batch: at a middle
    position (p = b/2: W only read) and at its last position (p = b-1: the W update, which some variants
    pay for with a second pass), weighted (b-1) : 1. Everything a timed launch writes is scratch (rows,
    output, position, and a copy of W, b for the last position): the live state is only read, so this is
    safe on a live cache."""
    from triton.testing import do_bench

    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "ttt_decode_step: first call for this batch size is inside a CUDA graph capture; "
            "run one eager step first (it picks the kernel configuration)"
        )
    mb = consts["MB"]
    dev = args[names.index("pos_ptr")].device
    mid = dict(zip(names, args, strict=True))
    for name in ("K_ptr", "G_ptr", "G1_ptr", "X2_ptr", "G2_ptr", "LR_ptr", "out_ptr"):
        if name in mid:
            mid[name] = mid[name].clone()
    mid["pos_ptr"] = torch.full((1,), mb // 2, dtype=torch.int64, device=dev)
    end = dict(mid)
    for name in ("W_ptr", "b_ptr", "W1_ptr", "b1_ptr", "W2_ptr", "b2_ptr"):
        if name in end:
            end[name] = end[name].clone()
    end["pos_ptr"] = torch.full((1,), mb - 1, dtype=torch.int64, device=dev)
    positions = [([mid[n] for n in names], mb - 1), ([end[n] for n in names], 1)]
    times, err = {}, None
    for cfg in CANDIDATES[kind]:
        if not _fits(cfg, nprog):
            continue
        try:
            t = [
                do_bench(lambda c=cfg, a=a: _launch(kind, nprog, a, c, consts), warmup=5, rep=25, return_mode="median")
                for a, _ in positions
            ]
            times[cfg] = sum(ti * w for ti, (_, w) in zip(t, positions, strict=True)) / mb
        except Exception as e:  # a configuration that does not compile or fit is skipped, not fatal
            times[cfg] = float("inf")
            err = e
    del mid, end, positions
    if not times or all(t == float("inf") for t in times.values()):
        raise RuntimeError(f"ttt_decode_step: no configuration in {CANDIDATES[kind]} ran for TTT-{kind}") from err
    return min(times, key=times.get), times


def _fail(msg: str, exc=ValueError):
    raise exc(f"ttt_decode_step: {msg}")


def _check(
    state, xq: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor, lr, ln_w, ln_b, tau, position
) -> tuple[int, int, int, int]:
    for name, t in (("xq", xq), ("xk", xk), ("xv", xv), ("lr", lr), ("ln_w", ln_w), ("ln_b", ln_b), ("tau", tau)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if not isinstance(position, torch.Tensor):
        _fail(
            "position must be the cache's [1] int64 device tensor (a python int would be frozen by a CUDA graph)",
            TypeError,
        )
    if xq.dim() != 4:
        _fail(f"xq must be [B, nh, 1, f], got shape {tuple(xq.shape)}")
    B, nh, T, f = xq.shape
    if T != 1:
        _fail(f"one token per call, got {T}")
    for name, t in (("xk", xk), ("xv", xv)):
        if t.shape != xq.shape:
            _fail(f"{name} has shape {tuple(t.shape)}, xq {tuple(xq.shape)}")
    if xq.dtype not in _ACT_DTYPES:
        _fail(f"activations must be fp16, bf16 or fp32, got {xq.dtype}", TypeError)
    for name, t in (("xk", xk), ("xv", xv)):
        if t.dtype != xq.dtype:
            _fail(f"{name} is {t.dtype}, xq {xq.dtype}: all three must share a dtype", TypeError)
    if f != HEAD_DIM:
        _fail(f"head dim must be {HEAD_DIM}, got {f} (use the reference backend for other head dims)")

    kind = state.kind
    h = HEAD_DIM if kind == "linear" else MLP_HIDDEN
    mb = state.mini_batch_size
    if mb < 1 or mb & (mb - 1) or mb > 64:
        _fail(f"mini-batch size must be a power of two <= 64, got {mb}")
    want = {"W1": (B, nh, f, h), "b1": (B, nh, h), "k": (B, nh, mb, f), "g1": (B, nh, mb, h), "lr": (B, nh, mb)}
    if kind == "mlp":
        want |= {"W2": (B, nh, h, f), "b2": (B, nh, f), "x2": (B, nh, mb, h), "g2": (B, nh, mb, f)}
    dev = xq.device
    for name, t in state.tensors().items():
        if tuple(t.shape) != want[name]:
            _fail(
                f"state.{name} has shape {tuple(t.shape)}, expected {want[name]} for TTT-{kind} with xq {tuple(xq.shape)}"
            )
        if t.dtype != torch.float32:
            _fail(
                f"state.{name} is {t.dtype}: the kernels keep the state in fp32 (fp64: use the reference backend)",
                TypeError,
            )
        if not t.is_contiguous():
            _fail(f"state.{name} is not contiguous; the kernels index the cache buffers directly")
        if t.device != dev:
            _fail(f"state.{name} is on {t.device}, xq on {dev}")
    if tuple(lr.shape) != (B, nh, 1):
        _fail(f"lr must be [B, nh, 1] = {(B, nh, 1)}, got {tuple(lr.shape)}")
    if lr.dtype != torch.float32:
        _fail(f"lr must be fp32, got {lr.dtype}", TypeError)
    for name, t in (("ln_w", ln_w), ("ln_b", ln_b)):
        if tuple(t.shape) != (nh, f):
            _fail(f"{name} must be [nh, f] = {(nh, f)}, got {tuple(t.shape)}")
        if not t.is_floating_point():
            _fail(f"{name} must be floating point, got {t.dtype}", TypeError)
    if tuple(tau.shape) != (mb,):
        _fail(f"tau must be [{mb}] (one scale per mini-batch position), got {tuple(tau.shape)}")
    if position.numel() != 1 or position.dtype not in (torch.int64, torch.int32):
        _fail(
            f"position must be a one-element int64 tensor, got {position.dtype} of shape {tuple(position.shape)}",
            TypeError,
        )
    for name, t in (
        ("xk", xk),
        ("xv", xv),
        ("lr", lr),
        ("ln_w", ln_w),
        ("ln_b", ln_b),
        ("tau", tau),
        ("position", position),
    ):
        if t.device != dev:
            _fail(f"{name} is on {t.device}, xq on {dev}")
    if _interpreting():
        if dev.type != "cpu":
            _fail(f"under TRITON_INTERPRET=1 the kernels run on CPU tensors, got {dev}")
    elif dev.type != "cuda":
        _fail(f"tensors are on {dev}: the Triton decode kernels need CUDA tensors (or TRITON_INTERPRET=1)")
    return B, nh, f, mb


def _kernel_args(state, xq, xk, xv, lr, ln_w, ln_b, tau, position, out):
    """(kind, programs, parameter names, arguments, constexprs) of the decode kernel for these (checked) inputs."""
    B, nh, _, f = xq.shape
    mb = state.mini_batch_size
    kind = state.kind
    if kind == "linear":
        names = ["q_ptr", "k_ptr", "v_ptr", "lr_ptr", "lnw_ptr", "lnb_ptr", "tau_ptr", "pos_ptr",
                 "W_ptr", "b_ptr", "K_ptr", "G_ptr", "LR_ptr", "out_ptr", "NH", "NPROG", "eps"]  # fmt: skip
        args = [xq, xk, xv, lr, ln_w, ln_b, tau, position, state.W1, state.b1, state.k, state.g1, state.lr, out]
        consts = {"F": f, "MB": mb}
    else:
        names = ["q_ptr", "k_ptr", "v_ptr", "lr_ptr", "lnw_ptr", "lnb_ptr", "tau_ptr", "pos_ptr",
                 "W1_ptr", "b1_ptr", "W2_ptr", "b2_ptr", "K_ptr", "G1_ptr", "X2_ptr", "G2_ptr", "LR_ptr",
                 "out_ptr", "NH", "NPROG", "eps"]  # fmt: skip
        args = [xq, xk, xv, lr, ln_w, ln_b, tau, position, state.W1, state.b1, state.W2, state.b2,
                state.k, state.g1, state.x2, state.g2, state.lr, out]  # fmt: skip
        consts = {"F": f, "H": MLP_HIDDEN, "MB": mb, "C": _SQRT_2_OVER_PI}
    return kind, B * nh, names, args + [nh, B * nh, LN_EPS], consts


def ttt_decode_step(state, xq, xk, xv, lr, ln_w, ln_b, tau, position, out: torch.Tensor | None = None) -> torch.Tensor:
    """One decode step of the TTT layer for every (sequence, head); updates `state` in place.

    xq, xk, xv [B, nh, 1, 64] (fp16/bf16/fp32, RoPE applied); lr [B, nh, 1] fp32; ln_w, ln_b [nh, 64];
    tau [16] fp32; position: [1] int64 device tensor, the tokens before this one. Returns fp32 [B, nh, 1, 64]
    (written into `out` when given: contiguous fp32 of that shape).
    """
    check_available()
    B, nh, f, mb = _check(state, xq, xk, xv, lr, ln_w, ln_b, tau, position)
    xq, xk, xv = xq.contiguous(), xk.contiguous(), xv.contiguous()
    lr, ln_w, ln_b = lr.contiguous(), ln_w.contiguous(), ln_b.contiguous()
    tau = tau.to(torch.float32).contiguous()
    if out is None:
        out = torch.empty(B, nh, 1, f, device=xq.device, dtype=torch.float32)
    elif out.shape != (B, nh, 1, f) or out.dtype != torch.float32 or not out.is_contiguous() or out.device != xq.device:
        _fail(f"out must be a contiguous fp32 [B, nh, 1, f] tensor on {xq.device}")
    kind, nprog, names, args, consts = _kernel_args(state, xq, xk, xv, lr, ln_w, ln_b, tau, position, out)
    forced = os.environ.get("TTT_DECODE_CONFIG", "")
    cfg = _parse_config(forced, kind) if forced else None
    if cfg is not None:
        if not _fits(cfg, nprog):
            _fail(f"TTT_DECODE_CONFIG={forced}: {nprog} (sequence, head) pairs are not a multiple of {cfg[2]}")
    elif _interpreting():
        cfg = DEFAULT[kind]
    else:
        key = (kind, nprog, xq.dtype)
        if key not in TUNED:
            TUNED[key], TIMINGS[key] = _tune(kind, nprog, args, names, consts)
        cfg = TUNED[key]
    _launch(kind, nprog, args, cfg, consts)
    return out


class DecodeKernelBackend:
    """Decode steps through these kernels, prompts (T > 1) through the PyTorch reference dual form.

    For when the TK prefill extension is not built (tests, benchmarks of decode alone). It reads the
    position from the device tensor, so it is CUDA-graph safe, and calls itself "kernels" so that the
    model treats it as the kernel backend. Install with `model._backend = DecodeKernelBackend()`.
    """

    name = "kernels"

    def __init__(self) -> None:
        check_available()
        from .glue import TritonGlue

        self.glue = TritonGlue()

    def inner(self, state, xq, xk, xv, lr, ln_w, ln_b, tau, start, position):
        if xq.shape[2] == 1:
            return ttt_decode_step(state, xq, xk, xv, lr, ln_w, ln_b, tau, position)
        from ..ttt.reference import dual_forward

        return dual_forward(state, xq, xk, xv, lr, ln_w, ln_b, tau, start)
