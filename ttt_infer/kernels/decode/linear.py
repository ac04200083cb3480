"""TTT-Linear decode kernels: v1 (one program per (sequence, head), W in registers), mh (several heads a
program), v3 (smaller register footprint), ps (persistent grid pipelining the next heads' W)."""

from __future__ import annotations

from ..pdl import pdl_enter
from .common import _ln_fwd, _ln_fwd_rows, _ln_l2_bwd, _ln_l2_bwd_rows, _token_inputs, tl, triton

if triton is not None:

    @triton.jit
    def _with_row_and_output(Kr, Gr, LRr, k, g, lr, cur, q, zq, tau, lnw, lnb, eps, F: tl.constexpr):
        """The mini-batch's rows with this token's put in at row p (cur), and the token's output by the dual
        form: q W_p + b_p = q W + b - tau_p sum_{j<=p} lr_j (q.k_j + 1) g_j (rows j > p have lr 0)."""
        Kr = tl.where(cur[:, None], k[None, :], Kr)
        Gr = tl.where(cur[:, None], g[None, :], Gr)
        LRr = tl.where(cur, lr, LRr)
        a = LRr * (tl.sum(Kr * q[None, :], axis=1) + 1.0)
        zbar = zq - tau * tl.sum(a[:, None] * Gr, axis=0)
        return Kr, Gr, LRr, q + _ln_fwd(zbar, lnw, lnb, eps, F)

    @triton.jit
    def _ttt_linear_decode(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV,
        F: tl.constexpr, MB: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
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
        q, k, v, lr, lnw, lnb, tau = _token_inputs(
            q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pid, head, p, fo, NH, SV, F
        )

        # gradient of this token at the mini-batch's starting weights; q's product shares the W read
        zk = tl.sum(k[:, None] * W, axis=0) + b
        zq = tl.sum(q[:, None] * W, axis=0) + b
        g = _ln_l2_bwd(zk, v - k, lnw, lnb, eps, F)
        tl.store(K_ptr + pid * MB * F + p * F + fo, k)
        tl.store(G_ptr + pid * MB * F + p * F + fo, g)
        tl.store(LR_ptr + pid * MB + p, lr)

        Kr, Gr, LRr, out = _with_row_and_output(Kr, Gr, LRr, k, g, lr, ro == p, q, zq, tau, lnw, lnb, eps, F)
        tl.store(out_ptr + pid * F + fo, out)

        if p == MB - 1:  # end of the mini-batch: W_b becomes the next mini-batch's W
            c = tau * LRr
            dW = tl.dot(tl.trans(Kr * c[:, None]), Gr, input_precision="ieee")  # [F, F]
            tl.store(W_ptr + pid * F * F + fo[:, None] * F + fo[None, :], W - dW)
            tl.store(b_ptr + pid * F + fo, b - tl.sum(c[:, None] * Gr, axis=0))

    @triton.jit
    def _ttt_linear_decode_mh(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV,
        F: tl.constexpr, MB: tl.constexpr, HPP: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        """_ttt_linear_decode for HPP heads per program: the fixed cost of each reduction, barrier
        and layout change is shared by HPP heads, and HPP times more bytes are in flight."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
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
        v = tl.load(v_ptr + ((hb // NH) * SV + head * F)[:, None] + fo[None, :]).to(tl.float32)
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
    def _ttt_linear_decode_v3(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV,
        F: tl.constexpr, MB: tl.constexpr, LATE: tl.constexpr, EV: tl.constexpr, RC: tl.constexpr,
        PDL: tl.constexpr = False
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
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
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
        v = tl.load(v_ptr + (pid // NH) * SV + head * F + fo).to(tl.float32)
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

        Kr, Gr, LRr, out = _with_row_and_output(Kr, Gr, LRr, k, g, lr, ro == p, q, zq, tau, lnw, lnb, eps, F)
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
    def _ttt_linear_decode_ps(
        q_ptr, k_ptr, v_ptr, lr_ptr, lnw_ptr, lnb_ptr, tau_ptr, pos_ptr,
        W_ptr, b_ptr, K_ptr, G_ptr, LR_ptr, out_ptr,
        NH, NPROG, eps, SV, STRIDE,
        F: tl.constexpr, MB: tl.constexpr, NS: tl.constexpr, RC: tl.constexpr, TURNS: tl.constexpr,
        PDL: tl.constexpr = False
    ):  # fmt: skip
        """_ttt_linear_decode_v3 as a persistent kernel: a grid of a few programs per SM, each looping
        over (sequence, head) pairs with Triton's software pipeliner (NS stages): the W tile and rows of
        the next pairs stream into shared memory (async copies) while this pair computes, so the bytes in
        flight no longer cost registers and no program idles between its loads and its arithmetic. The
        end-of-mini-batch update is a second loop over the same pairs (W, rows reread: +1/16 of a W read
        per token on average), since a conditional in the first loop keeps Triton from pipelining it."""
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
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
            v = tl.load(v_ptr + (pid // NH) * SV + head * F + fo).to(tl.float32)
            lr = tl.load(lr_ptr + pid)
            lnw = tl.load(lnw_ptr + head * F + fo).to(tl.float32)
            lnb = tl.load(lnb_ptr + head * F + fo).to(tl.float32)

            zk = tl.sum(k[:, None] * W, axis=0) + b
            zq = tl.sum(q[:, None] * W, axis=0) + b
            g = _ln_l2_bwd(zk, v - k, lnw, lnb, eps, F)
            tl.store(Kb + p * F + fo, k, mask=ok)
            tl.store(Gb + p * F + fo, g, mask=ok)
            tl.store(LR_ptr + pid * MB + p, lr, mask=ok)
            Kr, Gr, LRr, out = _with_row_and_output(Kr, Gr, LRr, k, g, lr, cur, q, zq, tau, lnw, lnb, eps, F)
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
