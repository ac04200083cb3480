"""TTT-MLP decode kernels: v1 (one program per (sequence, head)), chunk (2-pass hidden chunks), v3 (hidden
chunks pipelined, W1 read once)."""

from __future__ import annotations

from ..pdl import pdl_enter
from .common import _gelu, _gelu_bwd, _ln_fwd, _ln_l2_bwd, _token_inputs, tl, triton

if triton is not None:

    @triton.jit
    def _ttt_mlp_decode(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W1_ptr, b1_ptr, W2_ptr, b2_ptr, K_ptr, G1_ptr, X2_ptr, G2_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV,
        F: tl.constexpr, H: tl.constexpr, MB: tl.constexpr, C: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
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
        q, k, v, lr, lnw, lnb, tau = _token_inputs(
            q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pid, head, p, fo, NH, SV, F
        )
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
    def _ttt_mlp_decode_chunked(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W1_ptr, b1_ptr, W2_ptr, b2_ptr, K_ptr, G1_ptr, X2_ptr, G2_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV,
        F: tl.constexpr, H: tl.constexpr, MB: tl.constexpr, C: tl.constexpr, HC: tl.constexpr,
        PDL: tl.constexpr = False
    ):  # fmt: skip
        """_ttt_mlp_decode streaming the hidden axis in chunks of HC: a few KB of registers per chunk
        instead of 128 KB of weights, so several programs share an SM. Two passes over the chunks
        (z2 needs all of them before g2 exists; g1 and z2bar need W2 again): the second reads W1, W2
        back through L2, just after the first. The end-of-mini-batch update is done chunk by chunk
        in the second pass, where every row is known."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        pid = tl.program_id(0).to(tl.int64)
        head = pid % NH
        p = (tl.load(pos_ptr) % MB).to(tl.int32)
        fo = tl.arange(0, F)
        co = tl.arange(0, HC)
        ro = tl.arange(0, MB)
        prev = ro < p
        cur = ro == p

        q, k, v, lr, lnw, lnb, tau = _token_inputs(
            q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pid, head, p, fo, NH, SV, F
        )
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
    def _ttt_mlp_decode_v3(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W1_ptr, b1_ptr, W2_ptr, b2_ptr, K_ptr, G1_ptr, X2_ptr, G2_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV,
        F: tl.constexpr, H: tl.constexpr, MB: tl.constexpr, C: tl.constexpr, HC: tl.constexpr,
        EV: tl.constexpr, NS: tl.constexpr, UC: tl.constexpr, PDL: tl.constexpr = False,
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
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
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
        v = tl.load(v_ptr + (pid // NH) * SV + head * F + fo).to(tl.float32)
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
