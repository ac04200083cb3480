// TTT-Linear prefill: the whole dual-form scan over a prompt, one CTA (4 warps) per (batch, head).
// v6 = v4's register layout (below) with conflict-free shared-memory layouts for the input staging and the
// LayerNorm partials (see `stage` and red_index; v4's layouts stay selectable by the V4 template flag).
//
// v4 layout (f = 64, mini-batch b = 16): warp w owns columns s = 16w..16w+15 of everything, end to end:
// W[:, s] as Wt_w = W[:, s]^T (a 16x64 fp32 register tile for the whole prompt), and Z, G, Zbar and the
// output restricted to those columns, all kept in the m16n8 accumulator layout of the tensor-core
// products (lane l: rows l/4 and l/4 + 8, columns s0 + 2 (l%4) + {0, 1, 8, 9}). The row-wise work (the
// inner LayerNorm forward/backward and the output LayerNorm) runs on those registers: the 4 lanes of a
// quad hold a row's 16 values of this warp, and the per-row sums over the 64 features are completed
// through a small shared-memory exchange of per-warp partials (16 rows x 4 warps x float2) at the three
// block barriers a step already had:
//   1: Z = K W + b, Zq = Q W + b (tensor cores); warps 0, 1: A = Q K^T (8 columns each) -> M = -eta *
//      (tril(A) + 1) -> smem; Z's per-warp row partials (sum, centred M2)
//   B1 (Z partials)                 | 2: mean/rstd of Z; R = v - k (identity MMAs); gh; per-warp partials
//                                   |    of sum(gh), sum(gh xh)
//   B2 (gh partials)                | 3: G; Zbar = Zq - (eta*(tril(A)+1)) G (G as the B operand via
//                                   |    movmatrix); Zbar's per-warp row partials
//   B3 (Zbar partials, next input)  | 4: out = q + LN(Zbar) for this warp's columns;
//                                   | 5: W -= (c K)^T G, b -= c . G (full mini-batches; cG as the A operand
//                                   |    via movmatrix)
// v3 moved Z, Zbar and G through shared memory in fp32 (and G again in 16 bits) between the column-split
// products and a row-split layout (8 lanes a row); v4 never leaves the accumulator layout, so those
// round trips (~8 KB of shared-memory traffic a warp a step) and their address arithmetic are gone.
// The row statistics are combined across warps exactly (Chan et al.: each warp sends its row sum and
// the sum of squares about its own 16-column mean; mean = sum / 64, M2 = sum M2_w + 16 sum (m_w - mean)^2),
// so the variance is still a centred two-pass one, not E[z^2] - mean^2.
// The 16-bit inputs reach the accumulator layout through MMAs with a +-identity B fragment (v - k, q + lb;
// exact products), not by unpacking. Inputs are staged by warps 1-3 (one tensor each), lr by warp 0.
// scripts/emulate_linear_prefill.py mirrors this kernel lane by lane (numpy) for checks without a GPU.
// A prompt may start inside a mini-batch (rows 0..start-1 come from the state: k, g1, lr) and may end
// inside one (its rows are written back to the state).
#include "ttt_common.cuh"
#include "ttt_linear_frag.cuh"
#include "ttt_prefill.h"

namespace ttt {

// Input ring depth (v3's timing): the wait for segment seg+1 sits before B3 of step seg, and the slot that
// the top of step seg refills, (seg-2) % STAGES, is one no warp can still read (a warp at the top of step
// seg has passed B3 of seg-1, so every warp has finished step seg-2). 4 on Hopper, 3 on Ampere.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr int LIN_STAGES = 3;
#else
constexpr int LIN_STAGES = 4;
#endif

// Lifetimes of the exchange buffers (each written before one barrier of step s, read after it, and written
// again in step s+1 only after a barrier that every reader of step s has passed):
//   red_z, mfrag: written in phase 1 (before B1), read after B1 (red_z) / after B2 (mfrag); rewritten in phase 1
//                 of s+1, after B3(s), and every read of step s happens before its reader reaches B3(s).
//   red_g:        written before B2, read after B2 (before B3); rewritten after B1(s+1).
//   red_b:        written before B3, read in phase 4 (before B1(s+1)); rewritten before B3(s+1), after B2(s+1).
template <typename TT>
struct LinearSmem {
  // per-row, per-warp partial sums (row r, warp w at red_index<V4>(r, w)): Z (sum, M2), gh (sum gh, sum gh xh),
  // Zbar (sum, M2)
  float2 red_z[4 * MB], red_g[4 * MB], red_b[4 * MB];
  // M = -eta * (tril(Q K^T) + 1) (16x16, 16-bit) as lane l's A fragment of the phase-3 product: .x, .y from
  // warp 0 (columns 0-7 of M), .z, .w from warp 1 (columns 8-15)
  uint4 mfrag[32];
  TT q[LIN_STAGES][MB * PB], k[LIN_STAGES][MB * PB], v[LIN_STAGES][MB * PB];  // input ring
  float lr[LIN_STAGES][MB];
  float tau[MB];
};


// V4 = true: v4's shared-memory layouts (the opt-in impl "v4", kept for same-run timing): input staging a half
// row a lane and row-major partials. v6 (the default) changes only those two layouts; the arithmetic is the
// same, so the two give bit-identical results (tests/gpu/test_prefill.py checks it).
template <typename TT, bool V4>
__global__ void __launch_bounds__(128, 4) ttt_linear_prefill_kernel(const LinearPrefillArgs a) {
  using namespace lin4;
  __shared__ __align__(16) LinearSmem<TT> s;

  const int bh = blockIdx.x, head = bh % a.nh;
  const int tid = threadIdx.x, w = warpid(), lane = laneid();
  const int T = a.T, start = a.start;
  const TT *gq = static_cast<const TT *>(a.xq) + (size_t)bh * T * F;
  const TT *gk = static_cast<const TT *>(a.xk) + (size_t)bh * T * F;
  const TT *gv = static_cast<const TT *>(a.xv) + (size_t)bh * T * F;
  TT *gout = static_cast<TT *>(a.out) + (size_t)bh * T * F;
  const float *glr = a.lr + (size_t)bh * T;
  float *gW = a.W1 + (size_t)bh * F * F;
  float *gk_rows = a.k + (size_t)bh * MB * F;
  float *gg_rows = a.g1 + (size_t)bh * MB * F;
  float *glr_rows = a.lr_rows + (size_t)bh * MB;

  const int nseg = (start + T + MB - 1) / MB;
  const int n_last = start + T - (nseg - 1) * MB;  // rows of the last segment, 1..16

  // Input staging: warp 1 copies q, warp 2 k, warp 3 v, four 16-byte copies a lane (all at immediate offsets
  // from one base address); warp 0 (which computes M in phase 1) copies only the 16 learning rates.
  // v6: copy c of lane l is row 4c + l / 8, features 8 (l % 8)..+7: one copy instruction moves 4 whole rows
  // (512 contiguous bytes of global memory; in shared memory each 128-byte row meets every bank once).
  // v4: lane l copied one half row (row l / 2, features 32 (l % 2)..+31): ncu (session 5) counted 24 shared
  // wavefronts a copy instruction where 4 would do, ~35% of all the kernel's shared-memory wavefronts.
  // v3: every thread one chunk of each of q, k and v (three 64-bit address computations a thread).
  constexpr int ST_ROWS = V4 ? 0 : 4;  // rows between a lane's copies (v4: 0, its copies are 8 features apart)
  const int st_row = V4 ? lane / 2 : lane / 8, st_col = V4 ? 32 * (lane % 2) : 8 * (lane % 8);
  const TT *st_src = (w == 1 ? gq : w == 2 ? gk : gv) + st_col;
  TT *st_dst = (w == 1 ? s.q[0] : w == 2 ? s.k[0] : s.v[0]) + st_row * PB + st_col;
  auto stage = [&](int seg) {
    const int slot = seg % LIN_STAGES;
    if (w > 0) {
      const int t = seg * MB + st_row - start;  // prompt index of the lane's first row
      TT *d = st_dst + slot * (MB * PB);
      if constexpr (V4) {
        if ((unsigned)t < (unsigned)T) {
          const TT *src = st_src + (unsigned)t * F;
#pragma unroll
          for (int c = 0; c < 4; c++) cp_async16(d + 8 * c, src + 8 * c);
        } else {  // rows outside [0, T) are zero (rows t < 0 are then filled from the state)
#pragma unroll
          for (int c = 0; c < 4; c++) *reinterpret_cast<uint4 *>(d + 8 * c) = make_uint4(0, 0, 0, 0);
        }
      } else if (t >= 0 && t + 3 * ST_ROWS < T) {  // all four rows inside the prompt (every step but the ends)
        const TT *src = st_src + (ptrdiff_t)t * F;
#pragma unroll
        for (int c = 0; c < 4; c++) cp_async16(d + c * ST_ROWS * PB, src + c * ST_ROWS * F);
      } else {  // rows outside [0, T) are zero (rows t < 0 are then filled from the state)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int tc = t + c * ST_ROWS;
          if ((unsigned)tc < (unsigned)T) cp_async16(d + c * ST_ROWS * PB, st_src + (ptrdiff_t)tc * F);
          else *reinterpret_cast<uint4 *>(d + c * ST_ROWS * PB) = make_uint4(0, 0, 0, 0);
        }
      }
    } else {
      stage_lr(s.lr[slot], glr, seg, start, T, tid);
    }
  };
#pragma unroll
  for (int p = 0; p < LIN_STAGES - 2; p++) {  // cp.async group p = segment p
    if (p < nseg) stage(p);
    cp_async_commit();
  }

  // state: Wt[r][i] = W[i][16w + r]; b1 of this warp's columns in accumulator-column order
  rt_fl<16, 64> Wt;
  for_each(Wt, [&](int r, int c, float &x) { x = gW[c * F + 16 * w + r]; });
  const int g8 = lane / 4;                 // rows g8 (data[0], data[2]) and g8 + 8 (data[1], data[3])
  const int cq = 16 * w + 2 * (lane % 4);  // columns cq, cq+1 (data[0], data[1]) and cq+8, cq+9 (data[2], data[3])
  float2 b1v[2];
  b1v[0] = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + cq);
  b1v[1] = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + cq + 8);
  // b of the one column this lane owns in the b update (phase 5): cq + 8 (g & 1) + ((g >> 1) & 1)
  float bo = a.b1[(size_t)bh * F + cq + 8 * ((lane >> 2) & 1) + ((lane >> 3) & 1)];
  // LayerNorm weights at the lane's 4 columns (slot c = col_of(e)): lw^2, -lw, lw lb, lb
  float lw2[4], nlw[4], lwlb[4], lb[4];
#pragma unroll
  for (int c = 0; c < 4; c++) {
    const int col = cq + 8 * (c >> 1) + (c & 1);
    const float wv = a.ln_w[head * F + col], bv = a.ln_b[head * F + col];
    lw2[c] = wv * wv;
    nlw[c] = -wv;
    lwlb[c] = wv * bv;
    lb[c] = bv;
  }
  // 16x8 identity (and its negative) as this lane's MMA B fragment: b0 = (rows 2q, 2q+1; column g) of an
  // n-tile whose columns match k = 0..7 (b1 = 0), or b1 of one whose columns match k = 8..15 (b0 = 0).
  // K V I = V exactly in fp32 (one product with 1, the others with 0): the 16-bit inputs reach the
  // accumulator layout without unpacking, and accumulate onto what the accumulator held.
  const uint32_t id1 = pack2<TT>(2 * (lane % 4) == g8 ? 1.f : 0.f, 2 * (lane % 4) + 1 == g8 ? 1.f : 0.f);
  const uint32_t idn = pack2<TT>(2 * (lane % 4) == g8 ? -1.f : 0.f, 2 * (lane % 4) + 1 == g8 ? -1.f : 0.f);
  if (tid < MB) s.tau[tid] = a.tau[tid];
  const float ntaul = -a.tau[MB - 1];  // -tau_b: c_j = -tau_b lr_j in the W and b updates
  cp_async_wait<LIN_STAGES - 3>();  // segment 0 has landed
  __syncthreads();  // the zero fill of segment 0 is done: old rows may overwrite it
  if (start > 0) {  // rows 0..start-1 of the first mini-batch come from the state
    for (int e = tid; e < start * F; e += 128) s.k[0][(e / F) * PB + e % F] = io<TT>::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }
  __syncthreads();  // segment 0 (and tau) visible to all

  for (int seg = 0; seg < nseg; seg++) {
    const int slot = seg % LIN_STAGES;
    const bool full = (seg < nseg - 1) || (n_last == MB);
    const int t0 = seg * MB + g8 - start;  // prompt index of row g8 (row g8 + 8: t0 + 8)
    // segment seg is in shared memory (B3 of the previous step, or the barrier before the loop)
    if (seg + LIN_STAGES - 2 < nseg) stage(seg + LIN_STAGES - 2);  // slot (seg - 2) % STAGES: free
    cp_async_commit();  // group seg + STAGES - 2 (possibly empty)

    // ---- 1: Z = K W + b, Zq = Q W + b, A = Q K^T  (columns of this warp); Z's row partials -> B1
    float2 zq[4];  // Zq = Q W + b, until phase 3
    float z[8];
    {
      float2 za[4];
#pragma unroll
      for (int k = 0; k < 4; k++) za[k] = zq[k] = b1v[k >> 1];
      const uint32_t kb = static_cast<uint32_t>(__cvta_generic_to_shared(s.k[slot]));
      const uint32_t qb = static_cast<uint32_t>(__cvta_generic_to_shared(s.q[slot]));
      float2 a0 = make_float2(0.f, 0.f), a1 = make_float2(0.f, 0.f);
      // A = Q K^T and M: warps 0 and 1, 8 columns each (v3 had all four warps compute all of it); M is read
      // after B2
      if (w == 0) {
        phase1<0, TT>(za, zq, a0, a1, Wt, kb, qb, lane);
        m_store<0, TT>(a0, a1, s.tau, s.lr[slot], s.mfrag, lane);
      } else if (w == 1) {
        phase1<1, TT>(za, zq, a0, a1, Wt, kb, qb, lane);
        m_store<1, TT>(a0, a1, s.tau, s.lr[slot], s.mfrag, lane);
      } else {
        phase1<-1, TT>(za, zq, a0, a1, Wt, kb, qb, lane);
      }
#pragma unroll
      for (int k = 0; k < 4; k++) {
        z[2 * k] = za[k].x;
        z[2 * k + 1] = za[k].y;
      }
    }
    ln_partials<V4>(z, s.red_z, w, lane);
    __syncthreads();  // B1

    // ---- 2: G = d/dZ 1/2 ||LN(Z) - (v - k)||^2 on this warp's columns
    float gr[8];  // G
    {
      float rstd[2], nmr[2];
      const float rown = ln_stats<V4>(s.red_z, lane, rstd, nmr);
      uint32_t kr[4], vr[4];
      ld_block(kr, s.k[slot], 16 * w, lane);
      ld_block(vr, s.v[slot], 16 * w, lane);
      // R = v - k on this warp's columns in the accumulator layout: -K I, then + V I (n-tile 0: identity in
      // b0; n-tile 1: in b1)
      float2 rr[4];
#pragma unroll
      for (int k = 0; k < 4; k++) rr[k] = make_float2(0.f, 0.f);
      mma16816<TT>(rr[0], rr[1], kr, idn, 0u);
      mma16816<TT>(rr[2], rr[3], kr, 0u, idn);
      mma16816<TT>(rr[0], rr[1], vr, id1, 0u);
      mma16816<TT>(rr[2], rr[3], vr, 0u, id1);
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const int r = row_of(e), c = col_of(e);
        const float xh = fmaf(z[e], rstd[r], nmr[r]);
        const float re = (e & 1) ? rr[e >> 1].y : rr[e >> 1].x;
        // gh = lw (lw xh + lb - (v - k))
        gr[e] = fmaf(lw2[c], xh, fmaf(nlw[c], re, lwlb[c]));
        z[e] = xh;
      }
      // row partials over the lane's 4 columns: row 0 = elements 0, 1, 4, 5; row 1 = 2, 3, 6, 7
      float p1[2], p2[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int e0 = 2 * r;
        p1[r] = (gr[e0] + gr[e0 + 1]) + (gr[e0 + 4] + gr[e0 + 5]);
        p2[r] = fmaf(gr[e0 + 5], z[e0 + 5], fmaf(gr[e0 + 4], z[e0 + 4], fmaf(gr[e0 + 1], z[e0 + 1], gr[e0] * z[e0])));
      }
      {  // quad sums, transposed: lane keeps row q & 1
        const bool odd = lane & 1;
        float k1 = odd ? p1[1] : p1[0], k2 = odd ? p2[1] : p2[0];
        const float o1 = odd ? p1[0] : p1[1], o2 = odd ? p2[0] : p2[1];
        k1 += __shfl_xor_sync(0xffffffffu, o1, 1);
        k2 += __shfl_xor_sync(0xffffffffu, o2, 1);
        k1 += __shfl_xor_sync(0xffffffffu, k1, 2);
        k2 += __shfl_xor_sync(0xffffffffu, k2, 2);
        s.red_g[red_index<V4>(g8 + 8 * (lane & 1), w)] = make_float2(k1, k2);
      }
      __syncthreads();  // B2

      // G = (F gh - sum gh - xh sum(gh xh)) rstd / F = gh rstd - (sum gh + xh sum(gh xh)) rstd / F
      float n1[2], n2[2];
      {  // the lane's own row, then the partner's (lane ^ 1) for the other
        const bool odd = lane & 1;
        const float4 u = red_pair<V4>(s.red_g, g8 + 8 * (lane & 1), 0);  // warps 0, 1
        const float4 v = red_pair<V4>(s.red_g, g8 + 8 * (lane & 1), 2);  // warps 2, 3
        const float nrf = rown * (-1.f / F);
        const float a1 = ((u.x + u.z) + (v.x + v.z)) * nrf, a2 = ((u.y + u.w) + (v.y + v.w)) * nrf;
        const float o1 = __shfl_xor_sync(0xffffffffu, a1, 1), o2 = __shfl_xor_sync(0xffffffffu, a2, 1);
        n1[0] = odd ? o1 : a1;
        n1[1] = odd ? a1 : o1;
        n2[0] = odd ? o2 : a2;
        n2[1] = odd ? a2 : o2;
      }
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const int r = row_of(e);
        gr[e] = fmaf(gr[e], rstd[r], fmaf(z[e], n2[r], n1[r]));
      }
      // rows outside [0, T) exist only at the ends: before the prompt, the row kept from the previous call
      if (seg == 0 || seg == nseg - 1) {
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const int t = t0 + 8 * row_of(e);
          if (t < 0) gr[e] = gg_rows[(g8 + 8 * row_of(e)) * F + cq + 8 * (e >> 2) + (e & 1)];
          if (t >= T) gr[e] = 0.f;
        }
      }
      if (!full) {  // the partial last mini-batch's rows go to the state
        uint32_t kr2[4];  // reloaded (rare path): keeping kr live costs 4 registers in every step
        ld_block(kr2, s.k[slot], 16 * w, lane);
        float kk[8];
        unpack8<TT>(kk, kr2);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const int t = t0 + 8 * row_of(e);
          const int o = (g8 + 8 * row_of(e)) * F + cq + 8 * (e >> 2) + (e & 1);
          if (t >= 0 && t < T) {
            gk_rows[o] = kk[e];
            gg_rows[o] = gr[e];
          }
        }
        if (w == 0 && (lane % 4) == 0) {
          if (t0 >= 0 && t0 < T) glr_rows[g8] = s.lr[slot][g8];
          if (t0 + 8 >= 0 && t0 + 8 < T) glr_rows[g8 + 8] = s.lr[slot][g8 + 8];
        }
      }
    }

    // ---- 3: Zbar = Zq - (eta * (tril(A) + 1)) G  (the +1 is the b_bar term); Zbar's row partials -> B3
    {
      uint32_t gp[4];
#pragma unroll
      for (int k = 0; k < 4; k++) gp[k] = pack2<TT>(gr[2 * k], gr[2 * k + 1]);
      const uint4 mf = s.mfrag[lane];  // A fragment of M: (row g, cols 2q..), (g + 8, 2q..), (g, 2q + 8..), (g + 8, 2q + 8..)
      const uint32_t m[4] = {mf.x, mf.y, mf.z, mf.w};
      // B operand (k = row j of G, n = column): the transposes of the 8x8 blocks of G; n-tile 0 = columns
      // cq..: rows 0-7 (gp[0]) and 8-15 (gp[1]); n-tile 1 = columns cq+8..: gp[2], gp[3]
      mma16816<TT>(zq[0], zq[1], m, movm(gp[0]), movm(gp[1]));
      mma16816<TT>(zq[2], zq[3], m, movm(gp[2]), movm(gp[3]));
#pragma unroll
      for (int k = 0; k < 4; k++) {
        z[2 * k] = zq[k].x;
        z[2 * k + 1] = zq[k].y;
      }
    }
    ln_partials<V4>(z, s.red_b, w, lane);
    cp_async_wait<LIN_STAGES - 3>();  // groups up to seg + 1 complete (this thread's copies)
    __syncthreads();  // B3: Zbar partials stored; segment seg + 1 visible to all

    // ---- 4: out = q + LN(Zbar) on this warp's columns; only rows of the prompt are stored
    {
      float rstd[2], nmr[2];
      ln_stats<V4>(s.red_b, lane, rstd, nmr);
      uint32_t qr[4];
      ld_block(qr, s.q[slot], 16 * w, lane);
      // q + lb in the accumulator layout: Q I onto lb
      float2 ql[4] = {make_float2(lb[0], lb[1]), make_float2(lb[0], lb[1]), make_float2(lb[2], lb[3]),
                      make_float2(lb[2], lb[3])};
      mma16816<TT>(ql[0], ql[1], qr, id1, 0u);
      mma16816<TT>(ql[2], ql[3], qr, 0u, id1);
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const int r = row_of(e), c = col_of(e);
        const float qe = (e & 1) ? ql[e >> 1].y : ql[e >> 1].x;
        z[e] = fmaf(-nlw[c], fmaf(z[e], rstd[r], nmr[r]), qe);
      }
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int t = t0 + 8 * (k & 1);
        if (t >= 0 && t < T)
          *reinterpret_cast<uint32_t *>(&gout[(size_t)t * F + cq + 8 * (k >> 1)]) = pack2<TT>(z[2 * k], z[2 * k + 1]);
      }
    }

    // ---- 5: W -= (c K)^T G;  b -= c . G  (full mini-batches), c_j = tau_b lr_j. After B3 (as v3): W and b
    // are next used in phase 1 of the next step; the k, lr slot stays until the top of step seg + 2.
    if (full) {
      const float c0 = ntaul * s.lr[slot][g8], c1 = ntaul * s.lr[slot][g8 + 8];
      float cg[8];
#pragma unroll
      for (int e = 0; e < 8; e++) cg[e] = (row_of(e) ? c1 : c0) * gr[e];
      uint32_t cp[4];
#pragma unroll
      for (int k = 0; k < 4; k++) cp[k] = pack2<TT>(cg[2 * k], cg[2 * k + 1]);
      // A operand (m = this warp's column r, k = row j): A[r][j] = cG[j][r], the transposed 8x8 blocks:
      // (m 0-7, k 0-7) = rows 0-7 x cols 0-7 (cp[0]); (m 8-15, k 0-7) = rows 0-7 x cols 8-15 (cp[2]);
      // (m 0-7, k 8-15) = cp[1]; (m 8-15, k 8-15) = cp[3]
      const uint32_t ca[4] = {movm(cp[0]), movm(cp[2]), movm(cp[1]), movm(cp[3])};
      const uint32_t kbase = static_cast<uint32_t>(__cvta_generic_to_shared(s.k[slot]));
#pragma unroll
      for (int j = 0; j < 4; j++) {
        // B operand (k = row j of K, n = feature i): ldmatrix.trans of the 16x16 block at columns 16j:
        // matrices rows 0-7 / 8-15 of columns 16j..+7 (n-tile 2j), then of columns 16j+8..+15 (n-tile 2j+1)
        uint32_t b0, b1, b2, b3;
        ldsm4t(b0, b1, b2, b3, kbase + 2u * ((lane % 16) * PB + 16 * j + 8 * (lane / 16)));
        float2 *wd = Wt.tiles[0][j].data;
        mma16816<TT>(wd[0], wd[1], ca, b0, b1);
        mma16816<TT>(wd[2], wd[3], ca, b2, b3);
      }
      // b += sum_j c_j G_j (fp32). The lane's 4 columns (cq + 8 kh + h), summed over its rows g8, g8 + 8, then
      // over the 8 row groups (lanes ^4, ^8, ^16) "transposed": each exchange halves what a lane keeps, so
      // lane (g8, q) ends with the full sum of column cq + 8 (g8 & 1) + ((g8 >> 1) & 1) (4 shuffles, not 12),
      // adds it to the b it owns (bo), and the quad columns' b values are gathered back (4 shuffles).
      {
        const float v00 = cg[0] + cg[2], v01 = cg[1] + cg[3], v10 = cg[4] + cg[6], v11 = cg[5] + cg[7];
        const bool a1 = (lane >> 2) & 1, a2 = (lane >> 3) & 1;
        float kx = a1 ? v10 : v00, ky = a1 ? v11 : v01;
        const float sx = a1 ? v00 : v10, sy = a1 ? v01 : v11;
        kx += __shfl_xor_sync(0xffffffffu, sx, 4);
        ky += __shfl_xor_sync(0xffffffffu, sy, 4);
        float kv = a2 ? ky : kx;
        kv += __shfl_xor_sync(0xffffffffu, a2 ? kx : ky, 8);
        kv += __shfl_xor_sync(0xffffffffu, kv, 16);
        bo += kv;
        const int q4 = lane % 4;
        b1v[0].x = __shfl_sync(0xffffffffu, bo, q4);
        b1v[1].x = __shfl_sync(0xffffffffu, bo, q4 + 4);
        b1v[0].y = __shfl_sync(0xffffffffu, bo, q4 + 8);
        b1v[1].y = __shfl_sync(0xffffffffu, bo, q4 + 12);
      }
    }
  }

  // final state: W (columns of this warp) and b
  for_each(Wt, [&](int r, int c, float &x) { gW[c * F + 16 * w + r] = x; });
  if (lane < 4) {
    *reinterpret_cast<float2 *>(a.b1 + (size_t)bh * F + cq) = b1v[0];
    *reinterpret_cast<float2 *>(a.b1 + (size_t)bh * F + cq + 8) = b1v[1];
  }
}

template <bool V4>
static cudaError_t launch(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  if (dt == InDtype::bf16) {
    ttt_linear_prefill_kernel<bf16, V4><<<a.BH, 128, 0, stream>>>(a);
  } else {
    ttt_linear_prefill_kernel<half, V4><<<a.BH, 128, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

cudaError_t launch_linear_prefill(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  return launch<false>(a, dt, stream);
}

cudaError_t launch_linear_prefill_v4(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  return launch<true>(a, dt, stream);
}

}  // namespace ttt
