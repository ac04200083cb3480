// TTT-Linear prefill v3 (the default before v4, commit 7021ea8's csrc/ttt_linear_prefill.cu), kept as the opt-in
// impl="v3" so that v3 and v4 (ttt_linear_prefill.cu, the default) can be timed in one run. Only its names
// changed (LinearSmemV3V3, LIN3_STAGES, ttt_linear_prefill_v3_kernel, launch_linear_prefill_v3).
//
// The whole dual-form scan over a prompt, one CTA (4 warps) per (batch, head).
//
// Layout (f = 64, mini-batch b = 16):
//   warp w owns columns s = 16w..16w+15 of W (state kept on chip as Wt_w = W[:, s]^T, a 16x64 fp32
//   register tile, for the whole prompt) and rows 4w..4w+3 of every mini-batch for the row-wise work
//   (LayerNorm forward/backward, output). Inputs stream through a 4-stage cp.async ring in shared
//   memory; per mini-batch the warps meet at 3 block barriers:
//                   | 1: Z = K W, Zq = Q W, A = Q K^T (tensor cores)            -> smem Z
//   B1              | 2: rows (8 lanes a row): G = LN-L2 backward of Z             -> smem G (fp32, 16-bit)
//   B2              | 3: Zbar = Zq - (eta*(tril(A)+1)) G                         -> smem Zbar
//   B3 (+ next in)  | 4: rows: out = q + LN(Zbar); 5: W -= (c K)^T G; b -= c . G (full mini-batches)
// (v3: the inputs of the next mini-batch are waited for before B3, so a step has 3 barriers, not 4.)
// (v2: the row phases run 4 rows a warp at once, 8 lanes a row; b lives with the column warps and the
//  b_bar term rides in the (eta*(A+1)) G product, so phase 4 has no loop over the mini-batch.)
// A prompt may start inside a mini-batch (rows 0..start-1 come from the state: k, g1, lr) and may end
// inside one (its rows are written back to the state).
#include "ttt_common.cuh"
#include "ttt_prefill.h"

namespace ttt {

// Input ring depth. v3: 3 block barriers a step instead of 4: the wait for segment seg+1 sits before
// B3 of step seg, so nothing separates phase 4 of seg from phase 1 of seg+1, and the slot that the top
// of step seg refills must not be the one a late warp still reads in phase 4 of seg-1: segment
// seg+STAGES-2 (slot (seg-2) % STAGES) is issued there, STAGES-2 segments ahead. 4 on Hopper (4 CTAs
// x 46.4 KB of 228 KB), 3 on Ampere (4 CTAs x 39.4 KB of the A100's 164 KB; 1 segment ahead).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr int LIN3_STAGES = 3;
#else
constexpr int LIN3_STAGES = 4;
#endif

template <typename TT>
struct LinearSmemV3 {
  TT q[LIN3_STAGES][MB * PB], k[LIN3_STAGES][MB * PB], v[LIN3_STAGES][MB * PB];  // input ring
  float lr[LIN3_STAGES][MB];
  float z[MB * PF];   // Z (fp32), phase 1 -> 2
  float zb[MB * PF];  // Zbar (fp32), phase 3 -> 4 (its own buffer: phase 1 of the next step may run beside phase 4)
  float gf[MB * PF];  // G fp32
  TT g[MB * PB];      // G rounded to the input type
  TT cg[MB * PB];     // -(tau_b lr_j) G_j rounded
  float tau[MB];
};

template <typename TT>
__global__ void __launch_bounds__(128, 4) ttt_linear_prefill_v3_kernel(const LinearPrefillArgs a) {
  using IO = io<TT>;
  using T2 = typename IO::T2;
  __shared__ __align__(16) LinearSmemV3<TT> s;

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

  auto stage = [&](int seg) {
    const int slot = seg % LIN3_STAGES;
    stage_qkv<TT, 128>(s.q[slot], s.k[slot], s.v[slot], gq, gk, gv, seg, start, T, tid);
    stage_lr(s.lr[slot], glr, seg, start, T, tid);
  };
#pragma unroll
  for (int p = 0; p < LIN3_STAGES - 2; p++) {  // cp.async group p = segment p
    if (p < nseg) stage(p);
    cp_async_commit();
  }

  // state: Wt[r][i] = W[i][16w + r]; b1 of this warp's columns in accumulator-column order
  rt_fl<16, 64> Wt;
  for_each(Wt, [&](int r, int c, float &x) { x = gW[c * F + 16 * w + r]; });
  const int cq = 16 * w + 2 * (lane % 4);  // accumulator columns cq, cq+1 (kh=0) and cq+8, cq+9 (kh=1)
  float2 b1v[2];
  b1v[0] = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + cq);
  b1v[1] = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + cq + 8);
  // row phases: 8 lanes a row (row 4w + lane/8), 8 features a lane (fb..fb+7)
  constexpr int NPL = 8, G = F / NPL;
  const int ri = 4 * w + lane / G, fb = NPL * (lane % G);
  float lw[NPL], lb[NPL];
#pragma unroll
  for (int e = 0; e < NPL; e++) {
    lw[e] = a.ln_w[head * F + fb + e];
    lb[e] = a.ln_b[head * F + fb + e];
  }
  if (tid < MB) s.tau[tid] = a.tau[tid];
  cp_async_wait<LIN3_STAGES - 3>();  // segment 0 has landed
  __syncthreads();  // the zero fill of segment 0 is done: old rows may overwrite it
  if (start > 0) {  // rows 0..start-1 of the first mini-batch come from the state
    for (int e = tid; e < start * F; e += 128) s.k[0][(e / F) * PB + e % F] = IO::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }
  __syncthreads();  // segment 0 (and tau) visible to all

  for (int seg = 0; seg < nseg; seg++) {
    const int slot = seg % LIN3_STAGES;
    const bool full = (seg < nseg - 1) || (n_last == MB);
    // segment seg is in shared memory (B3 of the previous step, or the barrier before the loop)
    if (seg + LIN3_STAGES - 2 < nseg) stage(seg + LIN3_STAGES - 2);  // slot (seg - 2) % STAGES: free
    cp_async_commit();  // group seg + STAGES - 2 (possibly empty)

    // ---- 1: Z = K W + b, Zq = Q W + b, A = Q K^T  (columns of this warp)
    rt_fl<16, 16> Zq, A;
    {
      rt<TT, 16, 64> Kr, Qr, Wb;
      load_tile(Kr, s.k[slot], 0, 0);
      load_tile(Qr, s.q[slot], 0, 0);
      copy(Wb, Wt);
      rt_fl<16, 16> Z;
#pragma unroll
      for (int k = 0; k < 4; k++) Z.tiles[0][0].data[k] = Zq.tiles[0][0].data[k] = b1v[k >> 1];
      zero(A);
      mma_abt(Z, Kr, Wb);
      mma_abt(Zq, Qr, Wb);
      mma_abt(A, Qr, Kr);
      store_acc(s.z, Z, 16 * w);
    }
    __syncthreads();  // B1

    // ---- 2: rows: G = d/dZ 1/2 ||LN(Z) - (v - k)||^2, 8 lanes a row
    const float taul = s.tau[MB - 1];
    {
      const int i = ri, t = seg * MB + i - start;
      float z[NPL], kk[NPL], vv[NPL], g[NPL];
#pragma unroll
      for (int e = 0; e < NPL; e++) z[e] = s.z[i * PF + fb + e];
      ld_f<TT, NPL>(kk, &s.k[slot][i * PB + fb]);
      ld_f<TT, NPL>(vv, &s.v[slot][i * PB + fb]);
      static_assert(NPL == 8);
      const float rstd = ln_center<G, NPL>(z);
      ln_l2_bwd<G, NPL>(z, rstd, kk, vv, lw, lb, g);
      // rows outside [0, T) exist only at the ends (no shuffles here)
      if (seg == 0 || seg == nseg - 1) outside_rows<NPL>(g, t, T, &gg_rows[i * F + fb]);
#pragma unroll
      for (int e = 0; e < NPL; e++) s.gf[i * PF + fb + e] = g[e];
      st_f<TT, NPL>(&s.g[i * PB + fb], g);
      const float c = -taul * s.lr[slot][i];
      float cg[NPL];
#pragma unroll
      for (int e = 0; e < NPL; e++) cg[e] = c * g[e];
      st_f<TT, NPL>(&s.cg[i * PB + fb], cg);
      if (!full && t >= 0 && t < T) {  // the partial last mini-batch's rows go to the state
#pragma unroll
        for (int e = 0; e < NPL; e++) {
          gk_rows[i * F + fb + e] = kk[e];
          gg_rows[i * F + fb + e] = g[e];
        }
        if (lane % G == 0) glr_rows[i] = s.lr[slot][i];
      }
    }
    __syncthreads();  // B2

    // ---- 3: Zbar = Zq - (eta * (tril(A) + 1)) G  (the +1 is the b_bar term)
    {
      rt<TT, 16, 16, ducks::rt_layout::col> Gc;
      load_tile(Gc, s.g, 0, 16 * w);
      eta_tril(A.tiles[0][0], s.tau, s.lr[slot], 1.f);  // A -> eta * (tril(A) + 1)
      rt<TT, 16, 16> Mb;
      copy(Mb, A);
      mma_ab(Zq, Mb, Gc);
      store_acc(s.zb, Zq, 16 * w);
    }
    cp_async_wait<LIN3_STAGES - 3>();  // groups up to seg + 1 complete (this thread's copies)
    __syncthreads();  // B3: Zbar stored; segment seg + 1 visible to all

    // ---- 4: rows: out = q + LN(Zbar). Every lane computes (the group reductions are warp-wide
    // shuffles: a branch around them would split the warp when its 4 rows straddle T); only rows of
    // the prompt are stored.
    {
      const int i = ri, t = seg * MB + i - start;
      {
        float z[NPL], qq[NPL];
#pragma unroll
        for (int e = 0; e < NPL; e++) z[e] = s.zb[i * PF + fb + e];
        ld_f<TT, NPL>(qq, &s.q[slot][i * PB + fb]);
        const float rstd = ln_center<G, NPL>(z);
        ln_out<NPL>(z, rstd, qq, lw, lb);
        const uint4 o = make_uint4(pack2<TT>(z[0], z[1]), pack2<TT>(z[2], z[3]), pack2<TT>(z[4], z[5]), pack2<TT>(z[6], z[7]));
        if (t >= 0 && t < T) *reinterpret_cast<uint4 *>(&gout[(size_t)t * F + fb]) = o;
      }
    }

    // ---- 5: W -= (c K)^T G;  b -= c . G  (full mini-batches). After B3 (v3): W and b are next used in
    // phase 1 of the next step, and what this reads (cg, gf: rewritten in phase 2 of the next step; the
    // k, lr slot: refilled at the top of step seg + 2) stays put until then, so the update overlaps the
    // row phase instead of delaying B3.
    if (full) {
      rt<TT, 16, 16, ducks::rt_layout::col> CGc;
      rt<TT, 16, 64, ducks::rt_layout::col> Kc;
      load_tile_colA(CGc, s.cg, 0, 16 * w);
      load_tile(Kc, s.k[slot], 0, 0);
      mma_atb(Wt, CGc, Kc);
      // b -= sum_j c_j G_j (fp32): rows lane/4 and lane/4 + 8 here, the rest through shuffles
      const int r0 = lane / 4;
      const float c0 = -taul * s.lr[slot][r0], c1 = -taul * s.lr[slot][r0 + 8];
#pragma unroll
      for (int kh = 0; kh < 2; kh++) {
        const float2 g0 = *reinterpret_cast<const float2 *>(&s.gf[r0 * PF + cq + 8 * kh]);
        const float2 g1 = *reinterpret_cast<const float2 *>(&s.gf[(r0 + 8) * PF + cq + 8 * kh]);
        float vx = c0 * g0.x + c1 * g1.x, vy = c0 * g0.y + c1 * g1.y;
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
          vx += __shfl_xor_sync(0xffffffffu, vx, o);
          vy += __shfl_xor_sync(0xffffffffu, vy, o);
        }
        b1v[kh].x += vx;
        b1v[kh].y += vy;
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

cudaError_t launch_linear_prefill_v3(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  if (dt == InDtype::bf16) {
    ttt_linear_prefill_v3_kernel<bf16><<<a.BH, 128, 0, stream>>>(a);
  } else {
    ttt_linear_prefill_v3_kernel<half><<<a.BH, 128, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace ttt
