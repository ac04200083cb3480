// TTT-Linear prefill: the whole dual-form scan over a prompt, one CTA (4 warps) per (batch, head).
//
// Layout (f = 64, mini-batch b = 16):
//   warp w owns columns s = 16w..16w+15 of W (state kept on chip as Wt_w = W[:, s]^T, a 16x64 fp32
//   register tile, for the whole prompt) and rows 4w..4w+3 of every mini-batch for the row-wise work
//   (LayerNorm forward/backward, output). Inputs stream through a 3-stage cp.async ring in shared
//   memory; per mini-batch the warps meet at 4 block barriers:
//   B0 inputs ready | 1: Z = K W, Zq = Q W, A = Q K^T (tensor cores)            -> smem Z
//   B1              | 2: rows: G = LN-L2 backward of Z + b                       -> smem G (fp32, 16-bit)
//   B2              | 3: Zbar = Zq - (eta*tril(A)) G; W -= (c K)^T G (full mini-batches)
//   B3              | 4: rows: out = q + LN(Zbar + b - eta G); b -= c . G
// A prompt may start inside a mini-batch (rows 0..start-1 come from the state: k, g1, lr) and may end
// inside one (its rows are written back to the state).
#include "ttt_common.cuh"
#include "ttt_prefill.h"

namespace ttt {

template <typename TT>
struct LinearSmem {
  TT q[3][MB * PB], k[3][MB * PB], v[3][MB * PB];  // input ring
  float lr[3][MB];
  float z[MB * PF];   // Z, then Zbar (fp32)
  float gf[MB * PF];  // G fp32
  TT g[MB * PB];      // G rounded to the input type
  TT cg[MB * PB];     // -(tau_b lr_j) G_j rounded
  float tau[MB];
};

template <typename TT>
__global__ void __launch_bounds__(128) ttt_linear_prefill_kernel(const LinearPrefillArgs a) {
  using IO = io<TT>;
  using T2 = typename IO::T2;
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

  auto stage = [&](int seg) {
    const int slot = seg % 3;
    stage_rows(s.q[slot], gq, seg, start, T, tid, 128);
    stage_rows(s.k[slot], gk, seg, start, T, tid, 128);
    stage_rows(s.v[slot], gv, seg, start, T, tid, 128);
    stage_lr(s.lr[slot], glr, seg, start, T, tid);
  };
  stage(0);
  cp_async_commit();
  if (nseg > 1) stage(1);
  cp_async_commit();

  // state: Wt[r][i] = W[i][16w + r]
  rt_fl<16, 64> Wt;
  for_each(Wt, [&](int r, int c, float &x) { x = gW[c * F + 16 * w + r]; });
  float2 b1r = *reinterpret_cast<const float2 *>(a.b1 + (size_t)bh * F + 2 * lane);
  const float2 lnw = *reinterpret_cast<const float2 *>(a.ln_w + head * F + 2 * lane);
  const float2 lnb = *reinterpret_cast<const float2 *>(a.ln_b + head * F + 2 * lane);
  if (tid < MB) s.tau[tid] = a.tau[tid];
  __syncthreads();  // the zero fill of segment 0 is done: old rows may overwrite it
  if (start > 0) {  // rows 0..start-1 of the first mini-batch come from the state
    for (int e = tid; e < start * F; e += 128) s.k[0][(e / F) * PB + e % F] = IO::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }

  for (int seg = 0; seg < nseg; seg++) {
    const int slot = seg % 3;
    const bool full = (seg < nseg - 1) || (n_last == MB);
    cp_async_wait<1>();
    __syncthreads();  // B0
    if (seg + 2 < nseg) stage(seg + 2);
    cp_async_commit();

    // ---- 1: Z = K W, Zq = Q W, A = Q K^T
    rt_fl<16, 16> Zq, A;
    {
      rt<TT, 16, 64> Kr, Qr, Wb;
      load_tile(Kr, s.k[slot], 0, 0);
      load_tile(Qr, s.q[slot], 0, 0);
      copy(Wb, Wt);
      rt_fl<16, 16> Z;
      zero(Z);
      zero(Zq);
      zero(A);
      mma_abt(Z, Kr, Wb);
      mma_abt(Zq, Qr, Wb);
      mma_abt(A, Qr, Kr);
      store_acc(s.z, Z, 16 * w);
    }
    __syncthreads();  // B1

    // ---- 2: rows 4w..4w+3: G = d/dZ 1/2 ||LN(Z + b) - (v - k)||^2
    const float taul = s.tau[MB - 1];
#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
      const int i = 4 * w + rr, t = seg * MB + i - start;
      const float2 zz = *reinterpret_cast<const float2 *>(&s.z[i * PF + 2 * lane]);
      const float z0 = zz.x + b1r.x, z1 = zz.y + b1r.y;
      const float mean = warp_sum(z0 + z1) * (1.f / F);
      const float d0 = z0 - mean, d1 = z1 - mean;
      const float var = warp_sum(d0 * d0 + d1 * d1) * (1.f / F);
      const float rstd = rsqrtf(var + LN_EPS);
      const float2 kk = IO::to_f2(*reinterpret_cast<const T2 *>(&s.k[slot][i * PB + 2 * lane]));
      const float2 vv = IO::to_f2(*reinterpret_cast<const T2 *>(&s.v[slot][i * PB + 2 * lane]));
      const float xh0 = d0 * rstd, xh1 = d1 * rstd;
      const float gh0 = lnw.x * (lnw.x * xh0 + lnb.x - (vv.x - kk.x));
      const float gh1 = lnw.y * (lnw.y * xh1 + lnb.y - (vv.y - kk.y));
      const float s1 = warp_sum(gh0 + gh1), s2 = warp_sum(gh0 * xh0 + gh1 * xh1);
      float2 g = make_float2((F * gh0 - s1 - xh0 * s2) * (rstd * (1.f / F)),
                             (F * gh1 - s1 - xh1 * s2) * (rstd * (1.f / F)));
      if (t < 0) g = *reinterpret_cast<const float2 *>(&gg_rows[i * F + 2 * lane]);
      if (t >= T) g = make_float2(0.f, 0.f);
      *reinterpret_cast<float2 *>(&s.gf[i * PF + 2 * lane]) = g;
      *reinterpret_cast<T2 *>(&s.g[i * PB + 2 * lane]) = IO::from_f2(g);
      const float c = -taul * s.lr[slot][i];
      *reinterpret_cast<T2 *>(&s.cg[i * PB + 2 * lane]) = IO::from_f2(make_float2(c * g.x, c * g.y));
      if (!full && t >= 0 && t < T) {  // the partial last mini-batch's rows go to the state
        *reinterpret_cast<float2 *>(&gk_rows[i * F + 2 * lane]) = kk;
        *reinterpret_cast<float2 *>(&gg_rows[i * F + 2 * lane]) = g;
        if (lane == 0) glr_rows[i] = s.lr[slot][i];
      }
    }
    __syncthreads();  // B2

    // ---- 3: Zbar = Zq - (eta * tril(A)) G  (columns s);  W -= (c K)^T G
    {
      rt<TT, 16, 16, ducks::rt_layout::col> Gc;
      load_tile(Gc, s.g, 0, 16 * w);
      for_each(A, [&](int i, int j, float &x) { x = (j <= i) ? -s.tau[i] * s.lr[slot][j] * x : 0.f; });
      rt<TT, 16, 16> Mb;
      copy(Mb, A);
      mma_ab(Zq, Mb, Gc);
      store_acc(s.z, Zq, 16 * w);
      if (full) {
        rt<TT, 16, 16, ducks::rt_layout::col> CGc;
        rt<TT, 16, 64, ducks::rt_layout::col> Kc;
        load_tile(CGc, s.cg, 0, 16 * w);
        load_tile(Kc, s.k[slot], 0, 0);
        mma_atb(Wt, CGc, Kc);
      }
    }
    __syncthreads();  // B3

    // ---- 4: rows: out = q + LN(Zbar + b - sum_j eta_ij G_j);  b -= sum_j c_j G_j
#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
      const int i = 4 * w + rr, t = seg * MB + i - start;
      if (t < 0 || t >= T) continue;  // uniform per warp
      const float2 zz = *reinterpret_cast<const float2 *>(&s.z[i * PF + 2 * lane]);
      float z0 = zz.x + b1r.x, z1 = zz.y + b1r.y;
      const float ti = s.tau[i];
      for (int j = 0; j <= i; j++) {
        const float e = ti * s.lr[slot][j];
        const float2 gj = *reinterpret_cast<const float2 *>(&s.gf[j * PF + 2 * lane]);
        z0 -= e * gj.x;
        z1 -= e * gj.y;
      }
      const float mean = warp_sum(z0 + z1) * (1.f / F);
      const float d0 = z0 - mean, d1 = z1 - mean;
      const float var = warp_sum(d0 * d0 + d1 * d1) * (1.f / F);
      const float rstd = rsqrtf(var + LN_EPS);
      const float2 qq = IO::to_f2(*reinterpret_cast<const T2 *>(&s.q[slot][i * PB + 2 * lane]));
      const float2 o = make_float2(qq.x + lnw.x * d0 * rstd + lnb.x, qq.y + lnw.y * d1 * rstd + lnb.y);
      *reinterpret_cast<T2 *>(&gout[(size_t)t * F + 2 * lane]) = IO::from_f2(o);
    }
    if (full) {
      float a0 = 0.f, a1 = 0.f;
#pragma unroll
      for (int j = 0; j < MB; j++) {
        const float l = s.lr[slot][j];
        const float2 gj = *reinterpret_cast<const float2 *>(&s.gf[j * PF + 2 * lane]);
        a0 += l * gj.x;
        a1 += l * gj.y;
      }
      b1r.x -= taul * a0;
      b1r.y -= taul * a1;
    }
  }

  // final state: W (columns of this warp) and b
  for_each(Wt, [&](int r, int c, float &x) { gW[c * F + 16 * w + r] = x; });
  if (w == 0) *reinterpret_cast<float2 *>(a.b1 + (size_t)bh * F + 2 * lane) = b1r;
}

cudaError_t launch_linear_prefill(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  if (dt == InDtype::bf16) {
    ttt_linear_prefill_kernel<bf16><<<a.BH, 128, 0, stream>>>(a);
  } else {
    ttt_linear_prefill_kernel<half><<<a.BH, 128, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace ttt
