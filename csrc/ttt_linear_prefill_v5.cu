// TTT-Linear prefill v5: v4's register layout (ttt_linear_prefill.cu) with ONE block barrier a mini-batch
// step instead of three.
//
// v4 exchanges per-row partial sums across the 4 warps at three barriers: Z's LayerNorm statistics (B1),
// the LN-backward sums sum(gh), sum(gh xh) (B2), Zbar's statistics (B3). v5 removes two of them:
// - B2: the backward sums are functions of Z and R = v - k alone, so they are exchanged at B1 with Z's
//   statistics. With u = lw lb - lw R, gh = lw^2 xh + u and xh = (z - mean) rstd:
//     sum gh      = rstd sum lw^2 (z - mean) + sum u
//     sum gh xh   = rstd^2 sum lw^2 (z - mean)^2 + rstd sum u (z - mean)
//   Each warp sends, about its own 16-column mean m_w (s_w = its row sum): s_w, M2_w = sum (z - m_w)^2,
//   A_w = sum lw^2 (z - m_w), Bq_w = sum lw^2 (z - m_w)^2, C_w = sum u (z - m_w), D_w = sum u; with
//   d_w = m_w - mean and L_w = sum of lw^2 over the warp's columns the reader combines exactly:
//     sum lw^2 (z - mean)   = sum_w A_w + d_w L_w
//     sum lw^2 (z - mean)^2 = sum_w Bq_w + 2 d_w A_w + d_w^2 L_w
//     sum u (z - mean)      = sum_w C_w + d_w D_w
//   (all centred: no E[x^2] - E[x]^2 cancellation).
// - B3: Zbar's statistics are needed only by the output, which is not on the state's chain: step s writes
//   Zbar's partials and keeps Zbar (thread-private, in shared memory), and the output of step s is made
//   after the barrier of step s + 1 (and after a last barrier past the loop).
// The step's chain is then: phase 1 (Z, Zq, M; R, u; partials) -> barrier -> statistics -> G -> W, b update
// (-> phase 1 of the next step), with Zbar = Zq - M G, its partials and the previous step's output off it.
// With one barrier a step, a fast warp can be a whole step ahead of a slow one: the exchange buffers are
// double-buffered by step parity (each is written before the barrier of step s or s + 1 and read after it;
// the next write to the same buffer comes after the following barrier), and the input ring has 5 slots:
// the top of step s refills slot (s + 2) % 5 = (s - 3) % 5, which every warp finished with in step s - 2
// (the last reader of slot s - 3 is its output, made in step s - 2); segment s + 2 is waited for before the
// barrier of step s + 1, a whole step after its copy was issued.
#include "ttt_common.cuh"
#include "ttt_linear_frag.cuh"
#include "ttt_prefill.h"

namespace ttt {

constexpr int L5_STAGES = 5;  // see the header: one barrier a step needs 5 input slots

template <typename TT>
struct Linear5Smem {
  // per row, per warp (row r, warp w at [r][w]): s_w, M2_w, A_w, Bq_w, C_w, D_w of Z (a row: 96 B)
  float red_z[2][MB][4][6];
  float2 red_b[2][MB][4];  // Zbar: (s_w, M2_w)
  uint4 mfrag[2][32];      // M = -eta (tril(Q K^T) + 1) as the phase-3 A fragment (lin4::m_store)
  float4 zbar[2][128];     // thread-private: this thread's 8 Zbar values until the next step's output
  TT q[L5_STAGES][MB * PB], k[L5_STAGES][MB * PB], v[L5_STAGES][MB * PB];  // input ring
  float lr[L5_STAGES][MB];
  float tau[MB];
  float lsq[4];  // L_w: sum of lw^2 over warp w's 16 columns (this head)
};

namespace lin5 {

using lin4::col_of;
using lin4::row_of;

// This warp's six partials of the lane's row (see the header), written to red[ro][w][0..5] for the lane's
// own row ro = g + 8 (q & 1). z: Z in the accumulator layout, u = lw lb - lw R (same layout), lw2 = lw^2 at
// the lane's 4 columns. Quad sums: the row sums for both rows (all 4 lanes need both 16-column means),
// then the other five "transposed" (each lane keeps one row after the first exchange).
__device__ inline void partials6(const float (&z)[8], const float (&u)[8], const float (&lw2)[4], float (*red)[4][6],
                                 int w, int lane) {
  const bool odd = lane & 1;
  float s0 = (z[0] + z[1]) + (z[4] + z[5]);
  float s1 = (z[2] + z[3]) + (z[6] + z[7]);
  s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
  s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
  s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
  s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
  float p[2][5];  // rows 0, 1: M2, A, Bq, C, D
#pragma unroll
  for (int r = 0; r < 2; r++)
#pragma unroll
    for (int i = 0; i < 5; i++) p[r][i] = 0.f;
#pragma unroll
  for (int e = 0; e < 8; e++) {
    const int r = row_of(e);
    const float d = fmaf(r ? s1 : s0, -1.f / 16, z[e]);
    const float ld = lw2[col_of(e)] * d;
    p[r][0] = fmaf(d, d, p[r][0]);
    p[r][1] += ld;
    p[r][2] = fmaf(ld, d, p[r][2]);
    p[r][3] = fmaf(u[e], d, p[r][3]);
    p[r][4] += u[e];
  }
  float keep[5];
#pragma unroll
  for (int i = 0; i < 5; i++) {
    keep[i] = odd ? p[1][i] : p[0][i];
    keep[i] += __shfl_xor_sync(0xffffffffu, odd ? p[0][i] : p[1][i], 1);
  }
#pragma unroll
  for (int i = 0; i < 5; i++) keep[i] += __shfl_xor_sync(0xffffffffu, keep[i], 2);
  float2 *dst = reinterpret_cast<float2 *>(red[lane / 4 + 8 * (lane & 1)][w]);
  dst[0] = make_float2(odd ? s1 : s0, keep[0]);
  dst[1] = make_float2(keep[1], keep[2]);
  dst[2] = make_float2(keep[3], keep[4]);
}

// After the barrier: Z's LayerNorm and the backward sums of the lane's two rows from the 4 warps' partials
// (the lane's own row, then its quad partner's, lane ^ 1, for the other). For row r = 0 (g) and 1 (g + 8):
// xh = z rstd[r] + nmr[r] and G = gh rstd[r] + xh n2[r] + n1[r], with n1 = -rstd sum(gh) / F and
// n2 = -rstd sum(gh xh) / F (as v4's phase 2).
__device__ inline void stats6(const float (*red)[4][6], const float *lsq, int lane, float (&rstd)[2], float (&nmr)[2],
                              float (&n1)[2], float (&n2)[2]) {
  const bool odd = lane & 1;
  const float4 *p = reinterpret_cast<const float4 *>(red[lane / 4 + 8 * (lane & 1)]);
  float x[24];
#pragma unroll
  for (int i = 0; i < 6; i++) {
    const float4 t = p[i];
    x[4 * i] = t.x;
    x[4 * i + 1] = t.y;
    x[4 * i + 2] = t.z;
    x[4 * i + 3] = t.w;
  }
  const float4 L4 = *reinterpret_cast<const float4 *>(lsq);
  const float L[4] = {L4.x, L4.y, L4.z, L4.w};
  const float mean = ((x[0] + x[6]) + (x[12] + x[18])) * (1.f / F);
  float d[4];
#pragma unroll
  for (int w = 0; w < 4; w++) d[w] = fmaf(x[6 * w], 1.f / 16, -mean);
  const float m2 = ((x[1] + x[7]) + (x[13] + x[19])) + 16.f * (fmaf(d[0], d[0], d[1] * d[1]) + fmaf(d[2], d[2], d[3] * d[3]));
  const float r = rsqrt_ln(m2 * (1.f / F) + LN_EPS);
  float sa = 0.f, sb = 0.f, sc = 0.f, sd = 0.f;
#pragma unroll
  for (int w = 0; w < 4; w++) {
    const float A = x[6 * w + 2], Bq = x[6 * w + 3], C = x[6 * w + 4], D = x[6 * w + 5];
    sa += fmaf(d[w], L[w], A);
    sb += fmaf(d[w], fmaf(d[w], L[w], 2.f * A), Bq);
    sc += fmaf(d[w], D, C);
    sd += D;
  }
  const float nrf = r * (-1.f / F);
  const float a1 = fmaf(r, sa, sd) * nrf;            // -rstd sum(gh) / F
  const float a2 = (r * fmaf(r, sb, sc)) * nrf;      // -rstd sum(gh xh) / F
  const float nm = -mean * r;
  const float ro = __shfl_xor_sync(0xffffffffu, r, 1), no = __shfl_xor_sync(0xffffffffu, nm, 1);
  const float o1 = __shfl_xor_sync(0xffffffffu, a1, 1), o2 = __shfl_xor_sync(0xffffffffu, a2, 1);
  rstd[0] = odd ? ro : r;
  rstd[1] = odd ? r : ro;
  nmr[0] = odd ? no : nm;
  nmr[1] = odd ? nm : no;
  n1[0] = odd ? o1 : a1;
  n1[1] = odd ? a1 : o1;
  n2[0] = odd ? o2 : a2;
  n2[1] = odd ? a2 : o2;
}

}  // namespace lin5

template <typename TT>
__global__ void __launch_bounds__(128, 4) ttt_linear_prefill_v5_kernel(const LinearPrefillArgs a) {
  using namespace lin4;
  using namespace lin5;
  __shared__ __align__(16) Linear5Smem<TT> s;

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

  // input staging as v4: warp 1 copies q, warp 2 k, warp 3 v (half a row a lane), warp 0 the learning rates
  const int st_row = lane / 2;
  const TT *st_src = (w == 1 ? gq : w == 2 ? gk : gv) + 32 * (lane % 2);
  TT *st_dst = (w == 1 ? s.q[0] : w == 2 ? s.k[0] : s.v[0]) + st_row * PB + 32 * (lane % 2);
  auto stage = [&](int seg) {
    const int slot = seg % L5_STAGES;
    if (w > 0) {
      const int t = seg * MB + st_row - start;
      TT *d = st_dst + slot * (MB * PB);
      if ((unsigned)t < (unsigned)T) {
        const TT *src = st_src + (unsigned)t * F;
#pragma unroll
        for (int c = 0; c < 4; c++) cp_async16(d + 8 * c, src + 8 * c);
      } else {  // rows outside [0, T) are zero (rows t < 0 are then filled from the state)
#pragma unroll
        for (int c = 0; c < 4; c++) *reinterpret_cast<uint4 *>(d + 8 * c) = make_uint4(0, 0, 0, 0);
      }
    } else {
      stage_lr(s.lr[slot], glr, seg, start, T, tid);
    }
  };
  // cp.async groups: 0 = segment 0, 1 = segment 1, then step s commits the group of segment s + 2
  for (int p = 0; p < 2; p++) {
    if (p < nseg) stage(p);
    cp_async_commit();
  }

  // state and constants as v4
  rt_fl<16, 64> Wt;
  for_each(Wt, [&](int r, int c, float &x) { x = gW[c * F + 16 * w + r]; });
  const int g8 = lane / 4;
  const int cq = 16 * w + 2 * (lane % 4);
  float2 b1v[2];
  b1v[0] = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + cq);
  b1v[1] = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + cq + 8);
  float bo = a.b1[(size_t)bh * F + cq + 8 * ((lane >> 2) & 1) + ((lane >> 3) & 1)];
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
  const uint32_t id1 = pack2<TT>(2 * (lane % 4) == g8 ? 1.f : 0.f, 2 * (lane % 4) + 1 == g8 ? 1.f : 0.f);
  const uint32_t idn = pack2<TT>(2 * (lane % 4) == g8 ? -1.f : 0.f, 2 * (lane % 4) + 1 == g8 ? -1.f : 0.f);
  if (tid < MB) s.tau[tid] = a.tau[tid];
  if (tid < 4) {  // the same rounded lw^2 values the lanes use
    float acc = 0.f;
    for (int c = 0; c < 16; c++) {
      const float wv = a.ln_w[head * F + 16 * tid + c];
      acc += wv * wv;
    }
    s.lsq[tid] = acc;
  }
  const float ntaul = -a.tau[MB - 1];
  cp_async_wait<1>();  // segment 0 has landed
  __syncthreads();     // the zero fill of segment 0 is done: old rows may overwrite it
  if (start > 0) {     // rows 0..start-1 of the first mini-batch come from the state
    for (int e = tid; e < start * F; e += 128) s.k[0][(e / F) * PB + e % F] = io<TT>::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }
  __syncthreads();  // segment 0, tau and lsq visible to all

  // Step seg < nseg: mini-batch seg; the extra step seg = nseg only makes the output of the last one.
  for (int seg = 0; seg <= nseg; seg++) {
    const int slot = seg % L5_STAGES, buf = seg & 1;
    const bool live = seg < nseg;
    const bool full = live && ((seg < nseg - 1) || (n_last == MB));
    const int t0 = seg * MB + g8 - start;  // prompt index of row g8 (row g8 + 8: t0 + 8)
    float2 zq[4];
    float z[8], u[8];

    // ---- 1: Z = K W + b, Zq = Q W + b, A = Q K^T -> M (warps 0, 1); u = lw lb - lw (v - k); partials
    if (live) {
      if (seg + 2 < nseg) stage(seg + 2);  // slot (seg - 3) % 5: free (see the header)
      float2 za[4];
#pragma unroll
      for (int k = 0; k < 4; k++) za[k] = zq[k] = b1v[k >> 1];
      const uint32_t kb = static_cast<uint32_t>(__cvta_generic_to_shared(s.k[slot]));
      const uint32_t qb = static_cast<uint32_t>(__cvta_generic_to_shared(s.q[slot]));
      float2 a0 = make_float2(0.f, 0.f), a1 = make_float2(0.f, 0.f);
      if (w == 0) {
        phase1<0, TT>(za, zq, a0, a1, Wt, kb, qb, lane);
        m_store<0, TT>(a0, a1, s.tau, s.lr[slot], s.mfrag[buf], lane);
      } else if (w == 1) {
        phase1<1, TT>(za, zq, a0, a1, Wt, kb, qb, lane);
        m_store<1, TT>(a0, a1, s.tau, s.lr[slot], s.mfrag[buf], lane);
      } else {
        phase1<-1, TT>(za, zq, a0, a1, Wt, kb, qb, lane);
      }
#pragma unroll
      for (int k = 0; k < 4; k++) {
        z[2 * k] = za[k].x;
        z[2 * k + 1] = za[k].y;
      }
      uint32_t kr[4], vr[4];
      ld_block(kr, s.k[slot], 16 * w, lane);
      ld_block(vr, s.v[slot], 16 * w, lane);
      float2 rr[4];  // R = v - k: -K I, then + V I
#pragma unroll
      for (int k = 0; k < 4; k++) rr[k] = make_float2(0.f, 0.f);
      mma16816<TT>(rr[0], rr[1], kr, idn, 0u);
      mma16816<TT>(rr[2], rr[3], kr, 0u, idn);
      mma16816<TT>(rr[0], rr[1], vr, id1, 0u);
      mma16816<TT>(rr[2], rr[3], vr, 0u, id1);
#pragma unroll
      for (int e = 0; e < 8; e++) u[e] = fmaf(nlw[col_of(e)], (e & 1) ? rr[e >> 1].y : rr[e >> 1].x, lwlb[col_of(e)]);
      partials6(z, u, lw2, s.red_z[buf], w, lane);
    }
    cp_async_commit();  // group seg + 2 (possibly empty)
    cp_async_wait<1>();  // this thread's copies of segment seg + 1 have landed
    __syncthreads();     // the step's one barrier: partials of Z (step seg) and Zbar (step seg - 1), M, segment seg + 1

    if (live) {
      // ---- 2: G = d/dZ 1/2 ||LN(Z) - (v - k)||^2 on this warp's columns
      float gr[8];
      {
        float rstd[2], nmr[2], n1[2], n2[2];
        stats6(s.red_z[buf], s.lsq, lane, rstd, nmr, n1, n2);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const int r = row_of(e);
          const float xh = fmaf(z[e], rstd[r], nmr[r]);
          const float gh = fmaf(lw2[col_of(e)], xh, u[e]);
          gr[e] = fmaf(gh, rstd[r], fmaf(xh, n2[r], n1[r]));
        }
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
        uint32_t kr2[4];
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

      // ---- 3: W -= (c K)^T G; b -= c . G (full mini-batches; c_j = tau_b lr_j): first, it is the chain
      if (full) {
        const float c0 = ntaul * s.lr[slot][g8], c1 = ntaul * s.lr[slot][g8 + 8];
        float cg[8];
#pragma unroll
        for (int e = 0; e < 8; e++) cg[e] = (row_of(e) ? c1 : c0) * gr[e];
        uint32_t cp[4];
#pragma unroll
        for (int k = 0; k < 4; k++) cp[k] = pack2<TT>(cg[2 * k], cg[2 * k + 1]);
        const uint32_t ca[4] = {movm(cp[0]), movm(cp[2]), movm(cp[1]), movm(cp[3])};
        const uint32_t kbase = static_cast<uint32_t>(__cvta_generic_to_shared(s.k[slot]));
#pragma unroll
        for (int j = 0; j < 4; j++) {
          uint32_t b0, b1, b2, b3;
          ldsm4t(b0, b1, b2, b3, kbase + 2u * ((lane % 16) * PB + 16 * j + 8 * (lane / 16)));
          float2 *wd = Wt.tiles[0][j].data;
          mma16816<TT>(wd[0], wd[1], ca, b0, b1);
          mma16816<TT>(wd[2], wd[3], ca, b2, b3);
        }
        {  // b (as v4: transposed reduction over the row groups, then gathered back)
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

      // ---- 4: Zbar = Zq - (eta (tril(A) + 1)) G; its partials (read after the next barrier)
      {
        uint32_t gp[4];
#pragma unroll
        for (int k = 0; k < 4; k++) gp[k] = pack2<TT>(gr[2 * k], gr[2 * k + 1]);
        const uint4 mf = s.mfrag[buf][lane];
        const uint32_t m[4] = {mf.x, mf.y, mf.z, mf.w};
        mma16816<TT>(zq[0], zq[1], m, movm(gp[0]), movm(gp[1]));
        mma16816<TT>(zq[2], zq[3], m, movm(gp[2]), movm(gp[3]));
#pragma unroll
        for (int k = 0; k < 4; k++) {
          z[2 * k] = zq[k].x;
          z[2 * k + 1] = zq[k].y;
        }
      }
      ln_partials(z, s.red_b[buf], w, lane);
    }

    // ---- 5: the output of step seg - 1: q + LN(Zbar) on this warp's columns (rows of the prompt only)
    if (seg > 0) {
      const int pslot = (seg - 1) % L5_STAGES, pt0 = t0 - MB;
      float rstd[2], nmr[2];
      ln_stats(s.red_b[buf ^ 1], lane, rstd, nmr);
      const float4 h0 = s.zbar[0][tid], h1 = s.zbar[1][tid];
      const float zb[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
      uint32_t qr[4];
      ld_block(qr, s.q[pslot], 16 * w, lane);
      float2 ql[4] = {make_float2(lb[0], lb[1]), make_float2(lb[0], lb[1]), make_float2(lb[2], lb[3]),
                      make_float2(lb[2], lb[3])};
      mma16816<TT>(ql[0], ql[1], qr, id1, 0u);
      mma16816<TT>(ql[2], ql[3], qr, 0u, id1);
      float o[8];
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const int r = row_of(e), c = col_of(e);
        const float qe = (e & 1) ? ql[e >> 1].y : ql[e >> 1].x;
        o[e] = fmaf(-nlw[c], fmaf(zb[e], rstd[r], nmr[r]), qe);
      }
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int t = pt0 + 8 * (k & 1);
        if (t >= 0 && t < T)
          *reinterpret_cast<uint32_t *>(&gout[(size_t)t * F + cq + 8 * (k >> 1)]) = pack2<TT>(o[2 * k], o[2 * k + 1]);
      }
    }
    if (live) {  // this step's Zbar, for its output in the next step (after this thread's read above)
      s.zbar[0][tid] = make_float4(z[0], z[1], z[2], z[3]);
      s.zbar[1][tid] = make_float4(z[4], z[5], z[6], z[7]);
    }
  }

  // final state: W (columns of this warp) and b
  for_each(Wt, [&](int r, int c, float &x) { gW[c * F + 16 * w + r] = x; });
  if (lane < 4) {
    *reinterpret_cast<float2 *>(a.b1 + (size_t)bh * F + cq) = b1v[0];
    *reinterpret_cast<float2 *>(a.b1 + (size_t)bh * F + cq + 8) = b1v[1];
  }
}

cudaError_t launch_linear_prefill_v5(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  if (dt == InDtype::bf16) {
    ttt_linear_prefill_v5_kernel<bf16><<<a.BH, 128, 0, stream>>>(a);
  } else {
    ttt_linear_prefill_v5_kernel<half><<<a.BH, 128, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace ttt
