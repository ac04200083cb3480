// TTT-Linear prefill, Hopper variant (sm_90a only): the 64-wide products as warpgroup MMAs (wgmma).
//
// Same interface, semantics and CTA shape as ttt_linear_prefill.cu (one CTA = one warpgroup of 4 warps
// per (batch, head), W in registers for the whole prompt, 3 block barriers a mini-batch); what changes
// is how the products are issued. wgmma's M is 64 rows a warpgroup and its B operand lives in shared
// memory, while a mini-batch has 16 token rows; the dual form is therefore computed transposed, with
// W^T (64 feature rows; warp w holds rows 16w..16w+15 = v3's per-warp Wt tile) as the 64-row operand:
//   [Z^T | Zq^T] = W^T [K; Q]^T + b        A = bf16(Wt) registers, B = K, Q ring tiles   (m64n16k16 x 8)
//   A = Q K^T (every warp its own copy)      A = Q registers, B = K tile                    (m64n16k16 x 4)
//   Zbar^T = Zq^T + G^T M^T                  A = G smem (transposed), B = M smem            (m64n16k16)
//   W^T += (cG)^T K                          A = cG smem (transposed), B = K tile           (m64n64k16)
// with M = -eta * (tril(A) + 1) (the +1 carries b_bar) and c_j = tau_b lr_j. The W update is issued
// after B3 and waited for at the top of the next step, so it runs beside the output row phase.
// The row phases (LayerNorm backward, output) are v3's: 8 lanes a row, 4 rows a warp.
//
// Built for every architecture of the extension, but the kernel body exists only in the sm_90a pass
// (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the kernel is an empty stub that is never launched:
// ttt_linear_prefill_wgmma_status() reports whether the image loaded for the current device has it.
#include "ttt_common.cuh"
#include "ttt_prefill.h"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TTT_WGMMA_BODY 1
#else
#define TTT_WGMMA_BODY 0
#endif

namespace ttt {

// 1 in the sm_90a image (the kernel below has its body), 0 in every other image.
__device__ int ttt_wgmma_compiled = TTT_WGMMA_BODY;

#if TTT_WGMMA_BODY
namespace {

constexpr int WG_STAGES = 4;
constexpr int PZ = 68;  // pitch (floats) of the transposed Z / Zbar buffers: conflict-free column stores

template <typename TT>
struct __align__(1024) WgSmem {
  // wgmma operands: TK swizzled tiles (128-byte swizzle for 64 columns: 1024-byte aligned, 2 KB each)
  st<TT, 16, 64> q[WG_STAGES], k[WG_STAGES], v[WG_STAGES];  // input ring
  st<TT, 16, 64> g;                                          // G rounded to the input type
  st<TT, 16, 64> cg;                                         // -(tau_b lr_j) G_j rounded
  st<TT, 16, 16> m;                                          // M = -eta * (tril(Q K^T) + 1), rounded
  float z[MB * PZ];   // Z [t][f] (fp32), phase 1 -> 2
  float zb[MB * PZ];  // Zbar [t][f] (fp32), phase 3 -> 4
  float gf[MB * PF];  // G fp32
  float lr[WG_STAGES][MB];
  float tau[MB];
};

__device__ inline int swz(int r, int c) { return r * 64 + (((c >> 3) ^ (r & 7)) << 3) + (c & 7); }
static_assert(sizeof(st<bf16, 16, 64>) == 2048 && st<bf16, 16, 64>::swizzle_bytes == 128);

// st<16,16> (16-bit, 32-byte swizzle, 256-byte aligned): element (r, c) -> offset; 16-byte half-rows swap
// every 4 rows
__device__ inline int swz16(int r, int c) { return r * 16 + (c ^ (((r >> 2) & 1) << 3)); }
static_assert(st<bf16, 16, 16>::swizzle_bytes == 32);

// wgmma.fence with the accumulators pinned (TK's mma_fence without its proxy fence: the kernel fences
// the generic -> async proxy once, by the writers, before the barrier that publishes the data)
template <typename RT>
__device__ inline void pin(RT &d) {
#pragma unroll
  for (int i = 0; i < RT::height; i++)
#pragma unroll
    for (int j = 0; j < RT::width; j++)
#pragma unroll
      for (int k = 0; k < RT::packed_per_tile; k++) {
        asm volatile("" : "+f"(d.tiles[i][j].data[k].x)::"memory");
        asm volatile("" : "+f"(d.tiles[i][j].data[k].y)::"memory");
      }
}
template <typename... RT>
__device__ inline void wg_fence(RT &...d) {
  (pin(d), ...);
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ inline void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

}  // namespace
#endif

template <typename TT>
__global__ void __launch_bounds__(128, 4) ttt_linear_prefill_wgmma_kernel(const LinearPrefillArgs a) {
#if TTT_WGMMA_BODY
  using IO = io<TT>;
  using ST64 = st<TT, 16, 64>;
  __shared__ WgSmem<TT> s;

  const int bh = blockIdx.x, head = bh % a.nh;
  const int tid = threadIdx.x, w = warpid(), lane = laneid();
  const int T = a.T, start = a.start;
  const TT *gq = static_cast<const TT *>(a.xq) + (size_t)bh * T * F;
  const TT *gk = static_cast<const TT *>(a.xk) + (size_t)bh * T * F;
  const TT *gv = static_cast<const TT *>(a.xv) + (size_t)bh * T * F;
  TT *gout = static_cast<TT *>(a.out) + (size_t)bh * T * F;
  const float *glr = a.lr + (size_t)bh * T;
  float *gW = a.W1 + (size_t)bh * F * F;
  float *gb = a.b1 + (size_t)bh * F;
  float *gk_rows = a.k + (size_t)bh * MB * F;
  float *gg_rows = a.g1 + (size_t)bh * MB * F;
  float *glr_rows = a.lr_rows + (size_t)bh * MB;

  const int nseg = (start + T + MB - 1) / MB;
  const int n_last = start + T - (nseg - 1) * MB;  // rows of the last segment, 1..16

  // element (r, c) of a 16x64 tile: TK's 128-byte swizzle (16-byte chunk c/8 of row r at chunk (c/8) ^ (r%8))
  // for a 1024-byte aligned tile, in 32-bit shared offsets (TK's operator[] computes it on 64-bit generic
  // addresses, and the stores through it become generic stores); c a multiple of 8 for 16-byte accesses
  auto at = [](ST64 &t, int r, int c) { return &t.data[swz(r, c)]; };

  // staging: thread tid owns 16-byte chunk tid of q, k and v (row tid / 8); rows outside [0, T) zero
  auto stage = [&](int seg) {
    const int slot = seg % WG_STAGES;
    const int r = tid / 8, c = 8 * (tid % 8);
    const int t = seg * MB + r - start;
    TT *dq = at(s.q[slot], r, c), *dk = at(s.k[slot], r, c), *dv = at(s.v[slot], r, c);
    if (t >= 0 && t < T) {
      const size_t go = (size_t)t * F + c;
      cp_async16(dq, gq + go);
      cp_async16(dk, gk + go);
      cp_async16(dv, gv + go);
    } else {
      *reinterpret_cast<uint4 *>(dq) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4 *>(dk) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4 *>(dv) = make_uint4(0, 0, 0, 0);
    }
    stage_lr(s.lr[slot], glr, seg, start, T, tid);
  };
#pragma unroll
  for (int p = 0; p < WG_STAGES - 2; p++) {  // cp.async group p = segment p
    if (p < nseg) stage(p);
    cp_async_commit();
  }

  // state: Wt[r][i] = W[i][16w + r] (rows 16w.. of W^T: this warp's part of the wgmma A operand and
  // accumulator); b of this thread's accumulator rows (features 16w + lane/4 and + 8)
  rt_fl<16, 64> Wt;
  for_each(Wt, [&](int r, int c, float &x) { x = gW[c * F + 16 * w + r]; });
  const int fA = 16 * w + lane / 4;
  float bv[2] = {gb[fA], gb[fA + 8]};
  constexpr int NPL = 8, G = F / NPL;
  const int ri = 4 * w + lane / G, fb = NPL * (lane % G);
  float lw[NPL], lb[NPL];
#pragma unroll
  for (int e = 0; e < NPL; e++) {
    lw[e] = a.ln_w[head * F + fb + e];
    lb[e] = a.ln_b[head * F + fb + e];
  }
  if (tid < MB) s.tau[tid] = a.tau[tid];
  cp_async_wait<WG_STAGES - 3>();  // segment 0 has landed
  __syncthreads();
  if (start > 0) {  // rows 0..start-1 of the first mini-batch come from the state
    for (int e = tid; e < start * F; e += 128) *at(s.k[0], e / F, e % F) = IO::from_f(gk_rows[e]);
    if (tid < start) s.lr[0][tid] = glr_rows[tid];
  }
  fence_async_smem();  // generic-proxy writes (cp.async, zero fill, state rows) -> wgmma reads
  __syncthreads();

  for (int seg = 0; seg < nseg; seg++) {
    const int slot = seg % WG_STAGES;
    const bool full = (seg < nseg - 1) || (n_last == MB);
    if (seg + WG_STAGES - 2 < nseg) stage(seg + WG_STAGES - 2);  // slot (seg - 2) % STAGES: free
    cp_async_commit();

    // ---- 1: [Z^T | Zq^T] = W^T [K; Q]^T + b; A = Q K^T; warp 0: M = -eta * (tril(A) + 1) -> smem
    rt_fl<16, 16> Zq;
    {
      warpgroup::mma_async_wait<0>();  // the W update of the previous step
      rt<TT, 16, 64> Wb, Qr;
      copy(Wb, Wt);
      load(Qr, s.q[slot]);
      rt_fl<16, 16> Z, A;
#pragma unroll
      for (int k = 0; k < 4; k++) Z.tiles[0][0].data[k] = Zq.tiles[0][0].data[k] = make_float2(bv[k & 1], bv[k & 1]);
      using D16 = rt_fl<16, 16>;
      using A64 = rt<TT, 16, 64>;
      wg_fence(Z, Zq, A);
      warpgroup::mma_ABt<D16, A64, ST64, 0, 1>(Z, Wb, s.k[slot]);
      warpgroup::mma_ABt<D16, A64, ST64, 0, 1>(Zq, Wb, s.q[slot]);
      warpgroup::mma_ABt<D16, A64, ST64, 0, 0>(A, Qr, s.k[slot]);
      warpgroup::mma_async_wait<0>();
      // Z^T element (feature 16w + lane/4 + 8 (k & 1), token 2 (lane % 4) + 8 (k >> 1) + {0, 1}) -> z[t][f]
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int f = fA + 8 * (k & 1), t = 2 * (lane % 4) + 8 * (k >> 1);
        s.z[t * PZ + f] = Z.tiles[0][0].data[k].x;
        s.z[(t + 1) * PZ + f] = Z.tiles[0][0].data[k].y;
      }
      // every warp holds all of A: each masks it (v3's eta_tril) and stores its quarter, data[w] (rows
      // lane/4 + 8 (w & 1), columns 2 (lane % 4) + 8 (w >> 1) + {0, 1}), of M
      eta_tril(A.tiles[0][0], s.tau, s.lr[slot], 1.f);
      const float2 *ad = A.tiles[0][0].data;  // (w is warp-uniform: selects, no indexed registers)
      const float2 mv = w == 0 ? ad[0] : w == 1 ? ad[1] : w == 2 ? ad[2] : ad[3];
      *reinterpret_cast<uint32_t *>(&s.m.data[swz16(lane / 4 + 8 * (w & 1), 2 * (lane % 4) + 8 * (w >> 1))]) =
          pack2<TT>(mv.x, mv.y);
      fence_async_smem();  // M -> wgmma read in phase 3
    }
    __syncthreads();  // B1

    // ---- 2: rows: G = d/dZ 1/2 ||LN(Z) - (v - k)||^2, 8 lanes a row (v3)
    const float taul = s.tau[MB - 1];
    {
      const int i = ri, t = seg * MB + i - start;
      float z[NPL], kk[NPL], vv[NPL], g[NPL];
#pragma unroll
      for (int e = 0; e < NPL; e++) z[e] = s.z[i * PZ + fb + e];
      ld_f<TT, NPL>(kk, at(s.k[slot], i, fb));
      ld_f<TT, NPL>(vv, at(s.v[slot], i, fb));
      const float rstd = ln_center<G, NPL>(z);
      ln_l2_bwd<G, NPL>(z, rstd, kk, vv, lw, lb, g);
      // rows outside [0, T) exist only at the ends
      if (seg == 0 || seg == nseg - 1) {
        if (t < 0) {
#pragma unroll
          for (int e = 0; e < NPL; e++) g[e] = gg_rows[i * F + fb + e];
        }
        if (t >= T) {
#pragma unroll
          for (int e = 0; e < NPL; e++) g[e] = 0.f;
        }
      }
#pragma unroll
      for (int e = 0; e < NPL; e++) s.gf[i * PF + fb + e] = g[e];
      st_f<TT, NPL>(at(s.g, i, fb), g);
      const float c = -taul * s.lr[slot][i];
      float cg[NPL];
#pragma unroll
      for (int e = 0; e < NPL; e++) cg[e] = c * g[e];
      st_f<TT, NPL>(at(s.cg, i, fb), cg);
      if (!full && t >= 0 && t < T) {  // the partial last mini-batch's rows go to the state
#pragma unroll
        for (int e = 0; e < NPL; e++) {
          gk_rows[i * F + fb + e] = kk[e];
          gg_rows[i * F + fb + e] = g[e];
        }
        if (lane % G == 0) glr_rows[i] = s.lr[slot][i];
      }
    }
    fence_async_smem();  // g, cg -> wgmma reads (phase 3, phase 5)
    __syncthreads();  // B2

    // ---- 3: Zbar^T = Zq^T + G^T M^T
    {
      wg_fence(Zq);
      warpgroup::mma_AtBt<rt_fl<16, 16>, ST64, st<TT, 16, 16>, 0, 1>(Zq, s.g, s.m);
      warpgroup::mma_async_wait<0>();
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int f = fA + 8 * (k & 1), t = 2 * (lane % 4) + 8 * (k >> 1);
        s.zb[t * PZ + f] = Zq.tiles[0][0].data[k].x;
        s.zb[(t + 1) * PZ + f] = Zq.tiles[0][0].data[k].y;
      }
    }
    cp_async_wait<WG_STAGES - 3>();  // groups up to seg + 1 complete (this thread's copies)
    fence_async_smem();              // segment seg + 1 -> wgmma reads
    __syncthreads();                 // B3: Zbar stored; segment seg + 1 visible to all

    // ---- 5 (issued first, asynchronous): W^T += (cG)^T K. It reads cg (rewritten in phase 2 of the
    // next step) and the k slot (refilled at the top of step seg + 2); Wt is next read after the wait at
    // the top of the next step.
    if (full) {
      wg_fence(Wt);
      warpgroup::mma_AtB<rt_fl<16, 64>, ST64, ST64, 0, 1>(Wt, s.cg, s.k[slot]);
    }

    // ---- 4: rows: out = q + LN(Zbar) (all lanes compute: the group sums are warp-wide shuffles)
    {
      const int i = ri, t = seg * MB + i - start;
      float z[NPL], qq[NPL];
#pragma unroll
      for (int e = 0; e < NPL; e++) z[e] = s.zb[i * PZ + fb + e];
      ld_f<TT, NPL>(qq, at(s.q[slot], i, fb));
      const float rstd = ln_center<G, NPL>(z);
      ln_out<NPL>(z, rstd, qq, lw, lb);
      const uint4 o = make_uint4(pack2<TT>(z[0], z[1]), pack2<TT>(z[2], z[3]), pack2<TT>(z[4], z[5]), pack2<TT>(z[6], z[7]));
      if (t >= 0 && t < T) *reinterpret_cast<uint4 *>(&gout[(size_t)t * F + fb]) = o;
    }

    // ---- 5b: b -= sum_j c_j G_j (fp32): features fA, fA + 8; lane % 4 sums tokens 4 (lane % 4) .. + 3
    if (full) {
      const int t0 = 4 * (lane % 4);
      float vA = 0.f, vB = 0.f;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const float c = -taul * s.lr[slot][t0 + j];
        vA = fmaf(c, s.gf[(t0 + j) * PF + fA], vA);
        vB = fmaf(c, s.gf[(t0 + j) * PF + fA + 8], vB);
      }
      vA += __shfl_xor_sync(0xffffffffu, vA, 1);
      vB += __shfl_xor_sync(0xffffffffu, vB, 1);
      vA += __shfl_xor_sync(0xffffffffu, vA, 2);
      vB += __shfl_xor_sync(0xffffffffu, vB, 2);
      bv[0] += vA;
      bv[1] += vB;
    }
  }
  warpgroup::mma_async_wait<0>();

  // final state: W (this warp's columns) and b
  for_each(Wt, [&](int r, int c, float &x) { gW[c * F + 16 * w + r] = x; });
  if (lane % 4 == 0) {
    gb[fA] = bv[0];
    gb[fA + 8] = bv[1];
  }
#endif
}

cudaError_t linear_prefill_wgmma_status() {
  static int cached[64];  // per device: 0 unknown, 1 available, 2+ the cudaError_t + 2 of the failure
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev < 64 && cached[dev]) return cached[dev] == 1 ? cudaSuccess : static_cast<cudaError_t>(cached[dev] - 2);
  int major = 0, minor = 0, flag = 0;
  e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (e == cudaSuccess && !(major == 9 && minor == 0)) e = cudaErrorNotSupported;
  if (e == cudaSuccess) {  // the image loaded for this device: was its kernel compiled for sm_90a?
    e = cudaMemcpyFromSymbol(&flag, ttt_wgmma_compiled, sizeof(int));
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // no image for this device (e.g. no sm_90a SASS and no usable PTX)
      e = cudaErrorNotSupported;
    } else if (flag != 1) {
      e = cudaErrorNotSupported;
    }
  }
  if (dev < 64) cached[dev] = e == cudaSuccess ? 1 : static_cast<int>(e) + 2;
  return e;
}

cudaError_t launch_linear_prefill_wgmma(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream) {
  const cudaError_t st = linear_prefill_wgmma_status();
  if (st != cudaSuccess) return st;
  if (a.BH <= 0 || a.T <= 0) return cudaSuccess;
  if (dt == InDtype::bf16) {
    ttt_linear_prefill_wgmma_kernel<bf16><<<a.BH, 128, 0, stream>>>(a);
  } else {
    ttt_linear_prefill_wgmma_kernel<half><<<a.BH, 128, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace ttt
