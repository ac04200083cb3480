// TTT-MLP prefill: the whole dual-form scan over a prompt, one CTA (8 warps) per (batch, head).
//
// Where the 64x256 + 256x64 fp32 state lives: split over the hidden axis. Warp w owns hidden units
// h = 32w..32w+31: W1[:, h]^T (a 32x64 fp32 register tile) and W2[h, :] (32x64 fp32), 128 registers
// a thread, on chip for the whole prompt; b1[h] and b2 (double-buffered) sit in shared memory.
// Contractions over the hidden axis (X2 W2 and the X2bar X2^T of the dual form) give one 16x64 fp32
// partial per warp, summed in shared memory by the row owners (warp w: rows 2w, 2w+1), which also do
// the LayerNorm work. Per mini-batch:
//             | 1: Z1 = K W1 + b1, X2 = gelu(Z1), P_w = X2_h W2_h; M1 = eta*(tril(QK^T)+1) -> smem partials
//   B1        | 2: rows: Z2 = sum_w P_w + b2, G2 = LN-L2 backward            -> smem G2
//   B2        | 3: G1 = (G2 W2_h^T) gelu'(Z1); W1 -= (c K)^T G1, b1 -= c . G1 (full mini-batches);
//             |    Z1bar = Q W1 + b1 - M1 G1; X2bar = gelu(Z1bar);
//             |    P_w = X2bar_h W2_h - (eta*tril(X2bar_h X2_h^T)) G2 -> smem partials (2nd buffer);
//             |    b2 -= c . G2 (into the other b2 buffer)
//   B3 (+ in) | 4: rows: out = q + LN(sum_w P_w); 5: W2 -= (c X2)^T G2 (full mini-batches)
// (v3, 8 warps: the inputs of the next mini-batch are waited for before B3, so a step has 3 barriers,
//  not 4; phase 1 of the next step may then run beside phase 4, hence the second partial-sum buffer.
//  The 16-warp variant keeps B0 at the top of the step and one buffer.)
#include "ttt_common.cuh"
#include "ttt_prefill.h"

namespace ttt {

constexpr int HID = 4 * F;  // 256
// Input ring of 4 slots. With 3 barriers a step (mlp_3bar), segment seg + 2 is issued at the top of
// step seg into slot (seg - 2) % 4, which no warp can still be reading (a late warp is at most in phase
// 4 of seg - 1), and the wait for segment seg + 1 sits before B3 of step seg. With 4 barriers (B0 at the
// top of the step, as in v2), segment seg + 3 is issued after B0. The 16-warp variant keeps 4 barriers:
// the second partial-sum buffer (72 KB at 16 warps) would not fit the A100's 163 KB.
constexpr int MLP_STAGES = 4;
template <int NW> constexpr bool mlp_3bar = (NW <= 8);
template <int NW> constexpr int mlp_ahead = mlp_3bar<NW> ? MLP_STAGES - 2 : MLP_STAGES - 1;  // segments in flight

template <typename TT, int NW>
struct MlpSmem {
  TT q[MLP_STAGES][MB * PB], k[MLP_STAGES][MB * PB], v[MLP_STAGES][MB * PB];
  float lr[MLP_STAGES][MB];
  float red1[NW][MB * PF];  // per-warp 16x64 partial sums over the hidden axis: phase 1 -> 2
  float red3[mlp_3bar<NW> ? NW : 1][MB * PF];  // the same, phase 3 -> 4 (3-barrier variant; else red1)
  float2 d1[NW][HID / NW / 16 * 4][32];  // gelu'(Z1) of each warp's slice, accumulator order [w][tile*4 + k][lane]
  float g2f[MB * PF];
  TT g2[MB * PB];
  float b1[HID];
  float b2[2][F];  // double-buffered: read as [seg & 1], the update written to the other
  float tau[MB];
};

// Per-row LayerNorm over a row held by LPR lanes, NPL features each: x -> xh in place; returns rstd.
template <int LPR, int NPL>
__device__ inline float ln_normalize(float *x) {
  const float rstd = ln_center<LPR, NPL>(x);
#pragma unroll
  for (int e = 0; e < NPL; e++) x[e] *= rstd;
  return rstd;
}

template <typename TT, int NW>
__global__ void __launch_bounds__(32 * NW, 1) ttt_mlp_prefill_kernel(const MlpPrefillArgs a) {
  constexpr int HW = HID / NW;    // hidden units a warp
  constexpr int RPW = MB / NW;    // rows a warp in the row phases
  constexpr int LPR = 32 / RPW;   // lanes a row
  constexpr int NPL = F / LPR;    // features a lane
  constexpr int CPW = F / NW;     // b2 columns a warp updates
  constexpr int RPL = MB * CPW / 32;  // rows a lane sums for that
  constexpr int NT = 32 * NW;
  using IO = io<TT>;
  using col_l = ducks::rt_layout::col;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  MlpSmem<TT, NW> &s = *reinterpret_cast<MlpSmem<TT, NW> *>(smem_raw);

  const int bh = blockIdx.x, head = bh % a.nh;
  const int tid = threadIdx.x, w = warpid(), lane = laneid();
  const int h0 = HW * w;
  const int T = a.T, start = a.start;
  const TT *gq = static_cast<const TT *>(a.xq) + (size_t)bh * T * F;
  const TT *gk = static_cast<const TT *>(a.xk) + (size_t)bh * T * F;
  const TT *gv = static_cast<const TT *>(a.xv) + (size_t)bh * T * F;
  TT *gout = static_cast<TT *>(a.out) + (size_t)bh * T * F;
  const float *glr = a.lr + (size_t)bh * T;
  float *gW1 = a.W1 + (size_t)bh * F * HID;
  float *gW2 = a.W2 + (size_t)bh * HID * F;
  float *gk_rows = a.k + (size_t)bh * MB * F;
  float *gg1_rows = a.g1 + (size_t)bh * MB * HID;
  float *gx2_rows = a.x2 + (size_t)bh * MB * HID;
  float *gg2_rows = a.g2 + (size_t)bh * MB * F;
  float *glr_rows = a.lr_rows + (size_t)bh * MB;

  const int nseg = (start + T + MB - 1) / MB;
  const int n_last = start + T - (nseg - 1) * MB;

  auto stage = [&](int seg) {
    const int slot = seg % MLP_STAGES;
    stage_qkv<TT, NT>(s.q[slot], s.k[slot], s.v[slot], gq, gk, gv, seg, start, T, tid);
    stage_lr(s.lr[slot], glr, seg, start, T, tid);
  };
#pragma unroll
  for (int p = 0; p < mlp_ahead<NW>; p++) {  // cp.async group p = segment p
    if (p < nseg) stage(p);
    cp_async_commit();
  }

  rt_fl<HW, 64> W1t, W2s;  // W1t[r][i] = W1[i][h0 + r];  W2s[r][o] = W2[h0 + r][o]
  for_each(W1t, [&](int r, int c, float &x) { x = gW1[c * HID + h0 + r]; });
  for_each(W2s, [&](int r, int c, float &x) { x = gW2[(h0 + r) * F + c]; });
  const int ri = RPW * w + lane / LPR, fb = NPL * (lane % LPR);  // row-phase row and features
  float lw[NPL], lb[NPL];
#pragma unroll
  for (int e = 0; e < NPL; e++) {
    lw[e] = a.ln_w[head * F + fb + e];
    lb[e] = a.ln_b[head * F + fb + e];
  }
  for (int e = tid; e < HID; e += NT) s.b1[e] = a.b1[(size_t)bh * HID + e];
  for (int e = tid; e < F; e += NT) s.b2[0][e] = a.b2[(size_t)bh * F + e];
  if (tid < MB) s.tau[tid] = a.tau[tid];
  cp_async_wait<mlp_ahead<NW> - 1>();  // segment 0 has landed
  __syncthreads();  // also: the zero fill of segment 0 is done, old rows may overwrite it
  if (start > 0) {
    for (int e = tid; e < start * F; e += NT) s.k[0][(e / F) * PB + e % F] = IO::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }
  __syncthreads();  // segment 0, tau, b1, b2 visible to all

  for (int seg = 0; seg < nseg; seg++) {
    const int slot = seg % MLP_STAGES, bsl = seg & 1;
    const bool full = (seg < nseg - 1) || (n_last == MB);
    if constexpr (!mlp_3bar<NW>) {
      cp_async_wait<mlp_ahead<NW> - 1>();
      __syncthreads();  // B0: segment seg visible; slot (seg - 1) % 4 no longer read
    }
    // (3-barrier variant: segment seg is in shared memory since B3 of the previous step, or the barriers
    // before the loop; slot (seg - 2) % 4 is free)
    if (seg + mlp_ahead<NW> < nseg) stage(seg + mlp_ahead<NW>);
    cp_async_commit();  // group seg + ahead (possibly empty)
    float(*const red3)[MB * PF] = mlp_3bar<NW> ? s.red3 : s.red1;  // phase 3 -> 4 partials
    const float taul = s.tau[MB - 1];

    // ---- 1: Z1 = K W1 + b1 (own hidden slice), X2 = gelu(Z1), partial X2 W2 (+ b2 in warp 0's)
    rt_fl<16, HW> Zq1;           // Q W1 + b1
    rt<TT, 16, 16> M1b;          // eta * (tril(Q K^T) + 1), from the K, Q tiles of this phase (v3)
    rt<TT, 16, HW> X2b;          // X2 rounded
    rt<TT, 16, HW, col_l> CX2c;  // -(c_j) X2_j rounded, col layout (for the W2 update)
    {
      rt<TT, 16, 64> Kr, Qr;
      load_tile(Kr, s.k[slot], 0, 0);
      load_tile(Qr, s.q[slot], 0, 0);
      rt_fl<16, HW> Z1;
      for_each(Z1, [&](int r, int c, float &x) { x = s.b1[h0 + c]; });
      for_each(Zq1, [&](int r, int c, float &x) { x = s.b1[h0 + c]; });
#pragma unroll
      for (int hc = 0; hc < HW / 16; hc++) {  // 16 hidden units at a time
        rt<TT, 16, 64> wb;
#pragma unroll
        for (int j = 0; j < 4; j++) copy(wb.tiles[0][j], W1t.tiles[hc][j]);
        rt_fl<16, 16> z, zq;
        z.tiles[0][0] = Z1.tiles[0][hc];
        zq.tiles[0][0] = Zq1.tiles[0][hc];
        mma_abt(z, Kr, wb);
        mma_abt(zq, Qr, wb);
        Z1.tiles[0][hc] = z.tiles[0][0];
        Zq1.tiles[0][hc] = zq.tiles[0][0];
      }
      {  // the +1 carries the b1bar term
        rt_fl<16, 16> A1;
        zero(A1);
        mma_abt(A1, Qr, Kr);
        eta_tril(A1.tiles[0][0], s.tau, s.lr[slot], 1.f);
        copy(M1b, A1);
      }
      rt_fl<16, HW> X2;
#pragma unroll
      for (int j = 0; j < HW / 16; j++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
          const float2 z = Z1.tiles[0][j].data[k];
          float2 x2, d1;
          gelu_tanh_fwd_bwd(z.x, x2.x, d1.x);
          gelu_tanh_fwd_bwd(z.y, x2.y, d1.y);
          X2.tiles[0][j].data[k] = x2;
          s.d1[w][4 * j + k][lane] = d1;  // gelu'(Z1), read back by this lane in phase 3: no sync needed
        }
      if (seg == 0 && start > 0) {  // rows of the state's partial mini-batch keep their x2
        for_each(X2, [&](int r, int c, float &x) {
          if (r < start) x = gx2_rows[r * HID + h0 + c];
        });
      }
      copy(X2b, X2);
      if (!full) {  // state rows x2 of the partial last mini-batch (t >= 0 rows only)
        for_each(X2, [&](int r, int c, float &x) {
          const int t = seg * MB + r - start;
          if (t >= 0 && t < T) gx2_rows[r * HID + h0 + c] = x;
        });
      }
      for_each(X2, [&](int r, int c, float &x) { x *= -taul * s.lr[slot][r]; });
      rt<TT, 16, HW> CX2b;
      copy(CX2b, X2);
      swap_layout16(CX2c, CX2b);
      rt_fl<16, 64> P;
      if (w == 0) for_each(P, [&](int r, int c, float &x) { x = s.b2[bsl][c]; });
      else zero(P);
#pragma unroll
      for (int hc = 0; hc < HW / 16; hc++) {  // P += X2_h W2_h, 16 hidden rows at a time
        rt<TT, 16, 64> wr;
        rt<TT, 16, 64, col_l> wc;
#pragma unroll
        for (int j = 0; j < 4; j++) copy(wr.tiles[0][j], W2s.tiles[hc][j]);
        swap_layout16(wc, wr);
        rt<TT, 16, 16> xa;
        xa.tiles[0][0] = X2b.tiles[0][hc];
        mma_ab(P, xa, wc);
      }
      store_acc(s.red1[w], P, 0);
    }
    __syncthreads();  // B1

    // ---- 2: rows: Z2 = sum of the partials; G2 = LN-L2 backward (LPR lanes a row)
    {
      const int i = ri, t = seg * MB + i - start;
      float z[NPL], kk[NPL], vv[NPL], g[NPL];
#pragma unroll
      for (int e = 0; e < NPL; e++) z[e] = 0.f;
#pragma unroll
      for (int p = 0; p < NW; p++)
#pragma unroll
        for (int e = 0; e < NPL; e += 2) {
          const float2 pz = *reinterpret_cast<const float2 *>(&s.red1[p][i * PF + fb + e]);
          z[e] += pz.x;
          z[e + 1] += pz.y;
        }
      ld_f<TT, NPL>(kk, &s.k[slot][i * PB + fb]);
      ld_f<TT, NPL>(vv, &s.v[slot][i * PB + fb]);
      const float rstd = ln_normalize<LPR, NPL>(z);
      float s1 = 0.f, s2 = 0.f;
#pragma unroll
      for (int e = 0; e < NPL; e++) {
        g[e] = lw[e] * (lw[e] * z[e] + lb[e] - (vv[e] - kk[e]));
        s1 += g[e];
        s2 += g[e] * z[e];
      }
      s1 = group_sum<LPR>(s1);
      s2 = group_sum<LPR>(s2);
#pragma unroll
      for (int e = 0; e < NPL; e++) g[e] = (F * g[e] - s1 - z[e] * s2) * (rstd * (1.f / F));
      if (t < 0) {
#pragma unroll
        for (int e = 0; e < NPL; e++) g[e] = gg2_rows[i * F + fb + e];
      }
      if (t >= T) {
#pragma unroll
        for (int e = 0; e < NPL; e++) g[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < NPL; e++) s.g2f[i * PF + fb + e] = g[e];
      st_f<TT, NPL>(&s.g2[i * PB + fb], g);
      if (!full && t >= 0 && t < T) {
#pragma unroll
        for (int e = 0; e < NPL; e++) {
          gk_rows[i * F + fb + e] = kk[e];
          gg2_rows[i * F + fb + e] = g[e];
        }
        if (lane % LPR == 0) glr_rows[i] = s.lr[slot][i];
      }
    }
    __syncthreads();  // B2

    // ---- 3: G1, the dual form of layer 1, the partial of layer 2, the updates. (v3 order: W1 and b1 are
    // updated as soon as G1 is known, W1t having no later use in the step, so the fp32 G1 dies early;
    // G2 is loaded in each layout just before its use.)
    {
      rt_fl<16, HW> G1;  // G1 = (G2 W2_h^T) * gelu'(Z1)
      {
        rt<TT, 16, 64> G2r;
        load_tile(G2r, s.g2, 0, 0);
#pragma unroll
        for (int hc = 0; hc < HW / 16; hc++) {
          rt<TT, 16, 64> wr;
#pragma unroll
          for (int j = 0; j < 4; j++) copy(wr.tiles[0][j], W2s.tiles[hc][j]);
          rt_fl<16, 16> gw;
          zero(gw);
          mma_abt(gw, G2r, wr);
          G1.tiles[0][hc] = gw.tiles[0][0];
        }
      }
#pragma unroll
      for (int j = 0; j < HW / 16; j++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
          const float2 d1 = s.d1[w][4 * j + k][lane];
          G1.tiles[0][j].data[k].x *= d1.x;
          G1.tiles[0][j].data[k].y *= d1.y;
        }
      if (seg == 0 || !full || seg == nseg - 1) {  // rows outside [0, T): state rows or padding
        for_each(G1, [&](int r, int c, float &x) {
          const int t = seg * MB + r - start;
          if (t < 0) x = gg1_rows[r * HID + h0 + c];
          if (t >= T) x = 0.f;
        });
      }
      if (!full) {
        for_each(G1, [&](int r, int c, float &x) {
          const int t = seg * MB + r - start;
          if (t >= 0 && t < T) gg1_rows[r * HID + h0 + c] = x;
        });
      }
      rt<TT, 16, HW, col_l> G1c;
      {
        rt<TT, 16, HW> G1b;
        copy(G1b, G1);
        swap_layout16(G1c, G1b);
      }
      if (full) {  // block-uniform: the shuffles below run in whole warps
        // G1 -> c_r G1 (c_r = -tau_last lr_r; this lane's rows lane/4 (k even) and lane/4 + 8 (k odd))
        const float c0 = -taul * s.lr[slot][lane / 4], c1 = -taul * s.lr[slot][lane / 4 + 8];
#pragma unroll
        for (int j = 0; j < HW / 16; j++)
#pragma unroll
          for (int k = 0; k < 4; k++) {
            const float c = (k & 1) ? c1 : c0;
            G1.tiles[0][j].data[k].x *= c;
            G1.tiles[0][j].data[k].y *= c;
          }
        {
          rt<TT, 16, HW, col_l> CG1c;
          {
            rt<TT, 16, HW> CG1b;
            copy(CG1b, G1);
            swap_layout16(CG1c, CG1b);
          }
          rt<TT, 16, 64, col_l> Kc;
          load_tile(Kc, s.k[slot], 0, 0);
          mma_atb(W1t, CG1c, Kc);  // W1^T_h -= (c G1_h)^T K
        }
        // b1_h -= sum_j c_j G1[j, h]: column sums of the scaled G1 over the 16 rows (read in phase 1 of
        // the next step, by this warp only)
#pragma unroll
        for (int j = 0; j < HW / 16; j++)
#pragma unroll
          for (int kh = 0; kh < 2; kh++) {
            float2 v = G1.tiles[0][j].data[2 * kh];
            const float2 v8 = G1.tiles[0][j].data[2 * kh + 1];
            v.x += v8.x;
            v.y += v8.y;
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) {
              v.x += __shfl_xor_sync(0xffffffffu, v.x, o);
              v.y += __shfl_xor_sync(0xffffffffu, v.y, o);
            }
            if (lane < 4) {
              const int c = h0 + 16 * j + 8 * kh + 2 * lane;
              s.b1[c] += v.x;
              s.b1[c + 1] += v.y;
            }
          }
      }
      // Z1bar = Zq1 - (eta * (tril(Q K^T) + 1)) G1   (M1b from phase 1)
      mma_ab(Zq1, M1b, G1c);
      rt<TT, 16, HW> X2bb;
      {
        rt_fl<16, HW> X2bar;
#pragma unroll
        for (int j = 0; j < HW / 16; j++)
#pragma unroll
          for (int k = 0; k < 4; k++) {
            const float2 z = Zq1.tiles[0][j].data[k];
            X2bar.tiles[0][j].data[k] = make_float2(gelu_tanh(z.x), gelu_tanh(z.y));
          }
        copy(X2bb, X2bar);
      }
      rt<TT, 16, 64, col_l> G2c;
      load_tile(G2c, s.g2, 0, 0);
      // P = [b2] + X2bar_h W2_h - (eta * (tril(X2bar_h X2_h^T) [+ 1])) G2; the bracketed terms in warp 0 only
      rt_fl<16, 64> P;
      if (w == 0) for_each(P, [&](int r, int c, float &x) { x = s.b2[bsl][c]; });
      else zero(P);
      {
        rt_fl<16, 16> A2;
        zero(A2);
        mma_abt(A2, X2bb, X2b);
        eta_tril(A2.tiles[0][0], s.tau, s.lr[slot], (w == 0) ? 1.f : 0.f);
        rt<TT, 16, 16> M2b;
        copy(M2b, A2);
        mma_ab(P, M2b, G2c);
      }
#pragma unroll
      for (int hc = 0; hc < HW / 16; hc++) {
        rt<TT, 16, 64> wr;
        rt<TT, 16, 64, col_l> wc;
#pragma unroll
        for (int j = 0; j < 4; j++) copy(wr.tiles[0][j], W2s.tiles[hc][j]);
        swap_layout16(wc, wr);
        rt<TT, 16, 16> xa;
        xa.tiles[0][0] = X2bb.tiles[0][hc];
        mma_ab(P, xa, wc);
      }
      store_acc(red3[w], P, 0);
      // b2 (next buffer) = b2 - sum_j c_j G2_j: CPW columns a warp, RPL rows a lane, fp32
      {
        const int col = CPW * w + lane % CPW, j0 = (lane / CPW) * RPL;
        float acc = 0.f;
        if (full) {
#pragma unroll
          for (int j = 0; j < RPL; j++) acc += s.lr[slot][j0 + j] * s.g2f[(j0 + j) * PF + col];
        }
#pragma unroll
        for (int o = CPW; o < 32; o <<= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane < CPW) s.b2[bsl ^ 1][col] = s.b2[bsl][col] - taul * acc;
      }
    }
    if constexpr (mlp_3bar<NW>) cp_async_wait<mlp_ahead<NW> - 1>();  // groups up to seg + 1 complete (this thread's copies)
    __syncthreads();  // B3: partials and b2 stored (3-barrier variant: segment seg + 1 visible to all)

    // ---- 4: rows: out = q + LN(sum of the partials). Every lane computes (the group reductions
    // are warp-wide shuffles, and with 8 warps a warp's two rows can straddle T); only rows of the
    // prompt are stored.
    {
      const int i = ri, t = seg * MB + i - start;
      {
        float z[NPL], qq[NPL];
#pragma unroll
        for (int e = 0; e < NPL; e++) z[e] = 0.f;
#pragma unroll
        for (int p = 0; p < NW; p++)
#pragma unroll
          for (int e = 0; e < NPL; e += 2) {
            const float2 pz = *reinterpret_cast<const float2 *>(&red3[p][i * PF + fb + e]);
            z[e] += pz.x;
            z[e + 1] += pz.y;
          }
        ld_f<TT, NPL>(qq, &s.q[slot][i * PB + fb]);
        ln_normalize<LPR, NPL>(z);
#pragma unroll
        for (int e = 0; e < NPL; e++) z[e] = qq[e] + lw[e] * z[e] + lb[e];
        if (t >= 0 && t < T) st_f<TT, NPL>(&gout[(size_t)t * F + fb], z);
      }
    }

    // ---- 5: W2_h -= (c X2_h)^T G2 (full mini-batches), after B3 (v3): W2 is next used in phase 1 of the
    // next step, and s.g2 is rewritten only in its phase 2 (after B1), so the update overlaps phase 4.
    if (full) {
      rt<TT, 16, 64, col_l> G2c;
      load_tile(G2c, s.g2, 0, 0);
      mma_atb(W2s, CX2c, G2c);
    }
  }

  for_each(W1t, [&](int r, int c, float &x) { gW1[c * HID + h0 + r] = x; });
  for_each(W2s, [&](int r, int c, float &x) { gW2[(h0 + r) * F + c] = x; });
  __syncthreads();
  for (int e = tid; e < HID; e += NT) a.b1[(size_t)bh * HID + e] = s.b1[e];
  for (int e = tid; e < F; e += NT) a.b2[(size_t)bh * F + e] = s.b2[nseg & 1][e];
}

template <typename TT, int NW>
static cudaError_t launch_mlp_t(const MlpPrefillArgs &a, cudaStream_t stream) {
  const size_t smem = sizeof(MlpSmem<TT, NW>);
  cudaError_t e = cudaFuncSetAttribute(ttt_mlp_prefill_kernel<TT, NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  ttt_mlp_prefill_kernel<TT, NW><<<a.BH, 32 * NW, smem, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_mlp_prefill(const MlpPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  if (a.warps == 16) return dt == InDtype::bf16 ? launch_mlp_t<bf16, 16>(a, stream) : launch_mlp_t<half, 16>(a, stream);
  if (a.warps == 8 || a.warps == 0) return dt == InDtype::bf16 ? launch_mlp_t<bf16, 8>(a, stream) : launch_mlp_t<half, 8>(a, stream);
  return cudaErrorInvalidValue;
}

}  // namespace ttt
