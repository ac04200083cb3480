// TTT-MLP prefill: the whole dual-form scan over a prompt, one CTA (8 warps) per (batch, head).
//
// Where the 64x256 + 256x64 fp32 state lives: split over the hidden axis. Warp w owns hidden units
// h = 32w..32w+31: W1[:, h]^T (a 32x64 fp32 register tile) and W2[h, :] (32x64 fp32), 128 registers
// a thread, on chip for the whole prompt; b1[h] sits in shared memory, b2 in registers (replicated).
// Contractions over the hidden axis (X2 W2 and the X2bar X2^T of the dual form) give one 16x64 fp32
// partial per warp, summed in shared memory by the row owners (warp w: rows 2w, 2w+1), which also do
// the LayerNorm work. Per mini-batch:
//   B0 inputs | 1: Z1 = K W1 + b1, X2 = gelu(Z1), P_w = X2_h W2_h           -> smem partials
//   B1        | 2: rows: Z2 = sum_w P_w + b2, G2 = LN-L2 backward            -> smem G2
//   B2        | 3: G1 = (G2 W2_h^T) gelu'(Z1); Z1bar = Q W1 + b1 - (eta*(tril(QK^T)+1)) G1;
//             |    X2bar = gelu(Z1bar); P_w = X2bar_h W2_h - (eta*tril(X2bar_h X2_h^T)) G2;
//             |    W1 -= (c K)^T G1, W2 -= (c X2)^T G2, b1 -= c . G1 (full mini-batches)
//   B3        | 4: rows: out = q + LN(sum_w P_w + b2 - eta G2); b2 -= c . G2
#include "ttt_common.cuh"
#include "ttt_prefill.h"

namespace ttt {

constexpr int HID = 4 * F;     // 256
constexpr int MLP_WARPS = 8;   // 32 hidden units each
constexpr int HW = HID / MLP_WARPS;

template <typename TT>
struct MlpSmem {
  TT q[3][MB * PB], k[3][MB * PB], v[3][MB * PB];
  float lr[3][MB];
  float red[MLP_WARPS][MB * PF];  // per-warp 16x64 partial sums over the hidden axis
  float g2f[MB * PF];
  TT g2[MB * PB];
  float b1[HID];
  float tau[MB];
};

template <typename TT>
__global__ void __launch_bounds__(256, 1) ttt_mlp_prefill_kernel(const MlpPrefillArgs a) {
  using IO = io<TT>;
  using T2 = typename IO::T2;
  using col_l = ducks::rt_layout::col;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  MlpSmem<TT> &s = *reinterpret_cast<MlpSmem<TT> *>(smem_raw);

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
  constexpr int NT = 32 * MLP_WARPS;

  auto stage = [&](int seg) {
    const int slot = seg % 3;
    stage_rows(s.q[slot], gq, seg, start, T, tid, NT);
    stage_rows(s.k[slot], gk, seg, start, T, tid, NT);
    stage_rows(s.v[slot], gv, seg, start, T, tid, NT);
    stage_lr(s.lr[slot], glr, seg, start, T, tid);
  };
  stage(0);
  cp_async_commit();
  if (nseg > 1) stage(1);
  cp_async_commit();

  rt_fl<HW, 64> W1t, W2s;  // W1t[r][i] = W1[i][h0 + r];  W2s[r][o] = W2[h0 + r][o]
  for_each(W1t, [&](int r, int c, float &x) { x = gW1[c * HID + h0 + r]; });
  for_each(W2s, [&](int r, int c, float &x) { x = gW2[(h0 + r) * F + c]; });
  float2 b2r = *reinterpret_cast<const float2 *>(a.b2 + (size_t)bh * F + 2 * lane);
  const float2 lnw = *reinterpret_cast<const float2 *>(a.ln_w + head * F + 2 * lane);
  const float2 lnb = *reinterpret_cast<const float2 *>(a.ln_b + head * F + 2 * lane);
  for (int e = tid; e < HID; e += NT) s.b1[e] = a.b1[(size_t)bh * HID + e];
  if (tid < MB) s.tau[tid] = a.tau[tid];
  __syncthreads();
  if (start > 0) {
    for (int e = tid; e < start * F; e += NT) s.k[0][(e / F) * PB + e % F] = IO::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }

  for (int seg = 0; seg < nseg; seg++) {
    const int slot = seg % 3;
    const bool full = (seg < nseg - 1) || (n_last == MB);
    cp_async_wait<1>();
    __syncthreads();  // B0
    if (seg + 2 < nseg) stage(seg + 2);
    cp_async_commit();
    const float taul = s.tau[MB - 1];

    // ---- 1: Z1 = K W1 + b1 (own hidden slice), X2 = gelu(Z1), partial X2 W2
    rt_fl<16, HW> Zq1, D1;  // Q W1 + b1; gelu'(Z1)
    rt<TT, 16, HW> X2b;     // X2 rounded
    rt<TT, 16, HW, col_l> CX2c;  // -(c_j) X2_j rounded, col layout (for the W2 update)
    {
      rt<TT, 16, 64> Kr, Qr;
      load_tile(Kr, s.k[slot], 0, 0);
      load_tile(Qr, s.q[slot], 0, 0);
      rt<TT, HW, 64> W1b;
      copy(W1b, W1t);
      rt_fl<16, HW> Z1;
      zero(Z1);
      zero(Zq1);
      mma_abt(Z1, Kr, W1b);
      mma_abt(Zq1, Qr, W1b);
      for_each(Z1, [&](int r, int c, float &x) { x += s.b1[h0 + c]; });
      for_each(Zq1, [&](int r, int c, float &x) { x += s.b1[h0 + c]; });
      rt_fl<16, HW> X2;
#pragma unroll
      for (int j = 0; j < X2.width; j++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
          float2 z = Z1.tiles[0][j].data[k];
          X2.tiles[0][j].data[k] = make_float2(gelu_tanh(z.x), gelu_tanh(z.y));
          D1.tiles[0][j].data[k] = make_float2(gelu_tanh_bwd(z.x), gelu_tanh_bwd(z.y));
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
      // P = X2_h W2_h: W2_h rows as a col-layout B operand, 16 hidden rows at a time
      rt_fl<16, 64> P;
      zero(P);
#pragma unroll
      for (int hc = 0; hc < HW / 16; hc++) {
        rt<TT, 16, 64> wr;
        rt<TT, 16, 64, col_l> wc;
#pragma unroll
        for (int j = 0; j < 4; j++) copy(wr.tiles[0][j], W2s.tiles[hc][j]);
        swap_layout16(wc, wr);
        rt<TT, 16, 16> xa;
        xa.tiles[0][0] = X2b.tiles[0][hc];
        mma_ab(P, xa, wc);
      }
      store_acc(s.red[w], P, 0);
    }
    __syncthreads();  // B1

    // ---- 2: rows 2w, 2w+1: Z2 = sum of partials + b2; G2 = LN-L2 backward
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      const int i = 2 * w + rr, t = seg * MB + i - start;
      float z0 = b2r.x, z1 = b2r.y;
#pragma unroll
      for (int p = 0; p < MLP_WARPS; p++) {
        const float2 pz = *reinterpret_cast<const float2 *>(&s.red[p][i * PF + 2 * lane]);
        z0 += pz.x;
        z1 += pz.y;
      }
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
      if (t < 0) g = *reinterpret_cast<const float2 *>(&gg2_rows[i * F + 2 * lane]);
      if (t >= T) g = make_float2(0.f, 0.f);
      *reinterpret_cast<float2 *>(&s.g2f[i * PF + 2 * lane]) = g;
      *reinterpret_cast<T2 *>(&s.g2[i * PB + 2 * lane]) = IO::from_f2(g);
      if (!full && t >= 0 && t < T) {
        *reinterpret_cast<float2 *>(&gk_rows[i * F + 2 * lane]) = kk;
        *reinterpret_cast<float2 *>(&gg2_rows[i * F + 2 * lane]) = g;
        if (lane == 0) glr_rows[i] = s.lr[slot][i];
      }
    }
    __syncthreads();  // B2

    // ---- 3: G1, the dual form of layer 1, the partial of layer 2, the updates
    {
      rt<TT, 16, 64> G2r;
      rt<TT, 16, 64, col_l> G2c;
      load_tile(G2r, s.g2, 0, 0);
      load_tile(G2c, s.g2, 0, 0);
      // G1 = (G2 W2_h^T) * gelu'(Z1)
      rt_fl<16, HW> G1;
      zero(G1);
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
#pragma unroll
      for (int j = 0; j < G1.width; j++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
          G1.tiles[0][j].data[k].x *= D1.tiles[0][j].data[k].x;
          G1.tiles[0][j].data[k].y *= D1.tiles[0][j].data[k].y;
        }
      for_each(G1, [&](int r, int c, float &x) {
        const int t = seg * MB + r - start;
        if (t < 0) x = gg1_rows[r * HID + h0 + c];
        if (t >= T) x = 0.f;
      });
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
      // Z1bar = Zq1 - (eta * (tril(Q K^T) + 1)) G1   (the +1 carries the b1bar term)
      rt<TT, 16, 16> M1b;
      {
        rt<TT, 16, 64> Kr, Qr;
        load_tile(Kr, s.k[slot], 0, 0);
        load_tile(Qr, s.q[slot], 0, 0);
        rt_fl<16, 16> A1;
        zero(A1);
        mma_abt(A1, Qr, Kr);
        for_each(A1, [&](int i, int j, float &x) { x = (j <= i) ? -s.tau[i] * s.lr[slot][j] * (x + 1.f) : 0.f; });
        copy(M1b, A1);
      }
      mma_ab(Zq1, M1b, G1c);
      rt<TT, 16, HW> X2bb;
      {
        rt_fl<16, HW> X2bar;
#pragma unroll
        for (int j = 0; j < X2bar.width; j++)
#pragma unroll
          for (int k = 0; k < 4; k++) {
            float2 z = Zq1.tiles[0][j].data[k];
            X2bar.tiles[0][j].data[k] = make_float2(gelu_tanh(z.x), gelu_tanh(z.y));
          }
        copy(X2bb, X2bar);
      }
      // P = X2bar_h W2_h - (eta * tril(X2bar_h X2_h^T)) G2
      rt_fl<16, 64> P;
      zero(P);
      {
        rt_fl<16, 16> A2;
        zero(A2);
        mma_abt(A2, X2bb, X2b);
        for_each(A2, [&](int i, int j, float &x) { x = (j <= i) ? -s.tau[i] * s.lr[slot][j] * x : 0.f; });
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
      store_acc(s.red[w], P, 0);
      if (full) {
        rt<TT, 16, 64, col_l> Kc;
        load_tile(Kc, s.k[slot], 0, 0);
        // scale G1 rows by -(tau_b lr_j), fp32, then round
        for_each(G1, [&](int r, int c, float &x) { x *= -taul * s.lr[slot][r]; });
        rt<TT, 16, HW, col_l> CG1c;
        {
          rt<TT, 16, HW> CG1b;
          copy(CG1b, G1);
          swap_layout16(CG1c, CG1b);
        }
        mma_atb(W1t, CG1c, Kc);    // W1^T_h -= (c G1_h)^T K
        mma_atb(W2s, CX2c, G2c);   // W2_h  -= (c X2_h)^T G2
        // b1_h -= sum_j c_j G1[j, h]: column sums of the scaled G1 over the 16 rows
#pragma unroll
        for (int j = 0; j < G1.width; j++)
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
    }
    __syncthreads();  // B3

    // ---- 4: rows: out = q + LN(sum of partials + b2 - sum_j eta_ij G2_j);  b2 -= c . G2
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      const int i = 2 * w + rr, t = seg * MB + i - start;
      if (t < 0 || t >= T) continue;
      float z0 = b2r.x, z1 = b2r.y;
#pragma unroll
      for (int p = 0; p < MLP_WARPS; p++) {
        const float2 pz = *reinterpret_cast<const float2 *>(&s.red[p][i * PF + 2 * lane]);
        z0 += pz.x;
        z1 += pz.y;
      }
      const float ti = s.tau[i];
      for (int j = 0; j <= i; j++) {
        const float e = ti * s.lr[slot][j];
        const float2 gj = *reinterpret_cast<const float2 *>(&s.g2f[j * PF + 2 * lane]);
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
        const float2 gj = *reinterpret_cast<const float2 *>(&s.g2f[j * PF + 2 * lane]);
        a0 += l * gj.x;
        a1 += l * gj.y;
      }
      b2r.x -= taul * a0;
      b2r.y -= taul * a1;
    }
  }

  for_each(W1t, [&](int r, int c, float &x) { gW1[c * HID + h0 + r] = x; });
  for_each(W2s, [&](int r, int c, float &x) { gW2[(h0 + r) * F + c] = x; });
  __syncthreads();
  for (int e = tid; e < HID; e += NT) a.b1[(size_t)bh * HID + e] = s.b1[e];
  if (w == 0) *reinterpret_cast<float2 *>(a.b2 + (size_t)bh * F + 2 * lane) = b2r;
}

template <typename TT>
static cudaError_t launch_mlp_t(const MlpPrefillArgs &a, cudaStream_t stream) {
  const size_t smem = sizeof(MlpSmem<TT>);
  cudaError_t e = cudaFuncSetAttribute(ttt_mlp_prefill_kernel<TT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  ttt_mlp_prefill_kernel<TT><<<a.BH, 32 * MLP_WARPS, smem, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_mlp_prefill(const MlpPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  return dt == InDtype::bf16 ? launch_mlp_t<bf16>(a, stream) : launch_mlp_t<half>(a, stream);
}

}  // namespace ttt
