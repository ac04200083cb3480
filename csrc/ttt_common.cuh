// Shared helpers for the TTT prefill kernels (ThunderKittens register tiles + warp MMA).
//
// Compiles without torch headers. The same source builds for sm_80 (KITTENS_A100) and sm_90a
// (KITTENS_HOPPER): the kernels use only TK's warp-level register tiles and mma_* ops, which are
// identical on both; the macro is chosen per device pass below.
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifndef KITTENS_HOPPER
#define KITTENS_HOPPER
#endif
#else
#ifndef KITTENS_A100
#define KITTENS_A100
#endif
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kittens.cuh"

namespace ttt {

using namespace kittens;

constexpr int F = 64;          // head dim
constexpr int MB = 16;         // mini-batch size
constexpr int PB = 72;         // smem pitch (elements) of 16-bit tiles: 144 B rows, conflict-free ldmatrix
constexpr int PF = 72;         // smem pitch (elements) of fp32 tiles
constexpr float LN_EPS = 1e-6f;

// ---- element types -------------------------------------------------------------------------
template <typename TT> struct io;
template <> struct io<bf16> {
  using T2 = bf16_2;
  // exact widening by bit placement: 1 instruction an element (__bfloat1622float2 takes a PRMT + shift
  // for the high half)
  __device__ static inline float2 to_f2(T2 v) {
    const uint32_t u = *reinterpret_cast<const uint32_t *>(&v);
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
  }
  __device__ static inline T2 from_f2(float2 v) { return __float22bfloat162_rn(v); }
  __device__ static inline bf16 from_f(float v) { return __float2bfloat16_rn(v); }
  __device__ static inline float to_f(bf16 v) { return __bfloat162float(v); }
};
template <> struct io<half> {
  using T2 = half_2;
  __device__ static inline float2 to_f2(T2 v) { return __half22float2(v); }
  __device__ static inline T2 from_f2(float2 v) { return __float22half2_rn(v); }
  __device__ static inline half from_f(float v) { return __float2half_rn(v); }
  __device__ static inline float to_f(half v) { return __half2float(v); }
};

// ---- shared -> register tiles (padded row-major smem, pitch PB elements) ---------------------
// Same register order as TK's load(rt, st): row layout via ldmatrix, col layout via ldmatrix.trans.
__device__ inline void ldsm4(uint32_t &a, uint32_t &b, uint32_t &c, uint32_t &d, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a), "=r"(b), "=r"(c), "=r"(d) : "r"(addr));
}
__device__ inline void ldsm4t(uint32_t &a, uint32_t &b, uint32_t &c, uint32_t &d, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a), "=r"(b), "=r"(c), "=r"(d) : "r"(addr));
}

// dst (rows x cols of a 16-bit smem matrix starting at (row0, col0)); RT row or col layout.
template <typename RT, typename TT>
__device__ inline void load_tile(RT &dst, const TT *smem, int row0, int col0) {
  const int lane = laneid();
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
#pragma unroll
  for (int i = 0; i < RT::height; i++) {
#pragma unroll
    for (int j = 0; j < RT::width; j++) {
      const int r = row0 + i * 16 + (lane % 16);
      const int c = col0 + j * 16 + (lane / 16) * 8;
      const uint32_t addr = base + 2u * (r * PB + c);
      uint32_t *d = reinterpret_cast<uint32_t *>(&dst.tiles[i][j].data[0]);
      if constexpr (std::is_same_v<typename RT::layout, ducks::rt_layout::row>) {
        ldsm4(d[0], d[1], d[2], d[3], addr);
      } else {
        ldsm4t(d[0], d[2], d[1], d[3], addr);
      }
    }
  }
}

// Col-layout tile whose 16x16 blocks are the A operand of mma_AtB_base (a.data[0..3] in order): the
// ldmatrix.trans matrices are addressed so that they land in that order (matrix m = lane/8: rows
// 8*(m/2)..+7, columns 8*(m%2)..+7), so no register moves are needed before the MMA. (load_tile's col
// order, data = {m0, m2, m1, m3}, is the one the B operand wants: pairs {data[0], data[2]}, {data[1], data[3]}.)
template <typename RT, typename TT>
__device__ inline void load_tile_colA(RT &dst, const TT *smem, int row0, int col0) {
  static_assert(std::is_same_v<typename RT::layout, ducks::rt_layout::col>);
  const int lane = laneid();
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
#pragma unroll
  for (int i = 0; i < RT::height; i++) {
#pragma unroll
    for (int j = 0; j < RT::width; j++) {
      const int r = row0 + i * 16 + (lane % 8) + 8 * (lane / 16);
      const int c = col0 + j * 16 + 8 * ((lane / 8) % 2);
      const uint32_t addr = base + 2u * (r * PB + c);
      uint32_t *d = reinterpret_cast<uint32_t *>(&dst.tiles[i][j].data[0]);
      ldsm4t(d[0], d[1], d[2], d[3], addr);
    }
  }
}

// Accumulator element walk: f(row, col, value&) for the two values of each float2.
// Row layout fp32 tile: data[k] holds (row = lane/4 + 8*(k&1), col = 2*(lane%4) + 8*(k>>1)) + {0,1}.
template <typename RT, typename Fn>
__device__ inline void for_each(RT &t, Fn &&fn) {
  const int lane = laneid();
#pragma unroll
  for (int i = 0; i < RT::height; i++)
#pragma unroll
    for (int j = 0; j < RT::width; j++)
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int r = i * 16 + lane / 4 + 8 * (k & 1);
        const int c = j * 16 + 2 * (lane % 4) + 8 * (k >> 1);
        fn(r, c, t.tiles[i][j].data[k].x);
        fn(r, c + 1, t.tiles[i][j].data[k].y);
      }
}

// A (16x16 fp32 accumulator, A[i][j]) -> eta[i][j] * (A[i][j] + one) for j <= i, else 0, with eta[i][j] =
// tau_i lr_j (one = 1 carries the b_bar term of the dual form). This lane's elements: rows i0 = lane/4
// and i0 + 8, columns j0 = 2 (lane % 4), j0 + 1 (data[0], data[1]) and j0 + 8, j0 + 9 (data[2], data[3]);
// i0 < 8 <= j0 + 8, so data[2] lies above the diagonal and data[1] below it; data[0] and data[3] share
// the masks. Two tau and two float2 lr loads (v3; the for_each form loaded tau and lr per element).
__device__ inline void eta_tril(rt_base<float, ducks::rt_layout::row> &A, const float *tau, const float *lr, float one) {
  const int lane = laneid();
  const int i0 = lane / 4, j0 = 2 * (lane % 4);
  const float nta = -tau[i0], ntb = -tau[i0 + 8];
  const float2 lrl = *reinterpret_cast<const float2 *>(&lr[j0]);
  const float2 lrh = *reinterpret_cast<const float2 *>(&lr[j0 + 8]);
  const bool m0 = j0 <= i0, m1 = j0 + 1 <= i0;
  float2 *d = A.data;
  float c;
  c = nta * lrl.x; d[0].x = m0 ? fmaf(c, d[0].x, c * one) : 0.f;
  c = nta * lrl.y; d[0].y = m1 ? fmaf(c, d[0].y, c * one) : 0.f;
  c = ntb * lrl.x; d[1].x = fmaf(c, d[1].x, c * one);
  c = ntb * lrl.y; d[1].y = fmaf(c, d[1].y, c * one);
  d[2] = make_float2(0.f, 0.f);
  c = ntb * lrh.x; d[3].x = m0 ? fmaf(c, d[3].x, c * one) : 0.f;
  c = ntb * lrh.y; d[3].y = m1 ? fmaf(c, d[3].y, c * one) : 0.f;
}

// fp32 accumulator tile -> fp32 smem (pitch PF) at column offset col0.
template <typename RT>
__device__ inline void store_acc(float *smem, const RT &t, int col0) {
  const int lane = laneid();
#pragma unroll
  for (int i = 0; i < RT::height; i++)
#pragma unroll
    for (int j = 0; j < RT::width; j++)
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int r = i * 16 + lane / 4 + 8 * (k & 1);
        const int c = col0 + j * 16 + 2 * (lane % 4) + 8 * (k >> 1);
        *reinterpret_cast<float2 *>(&smem[r * PF + c]) = t.tiles[i][j].data[k];
      }
}

// 16-bit register tile transpose of layout (row <-> col) via movmatrix, for bf16 and half alike.
__device__ inline uint32_t movmatrix_t(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}
template <typename DST, typename SRC>
__device__ inline void swap_layout16(DST &dst, const SRC &src) {
  static_assert(DST::height == SRC::height && DST::width == SRC::width);
#pragma unroll
  for (int i = 0; i < SRC::height; i++)
#pragma unroll
    for (int j = 0; j < SRC::width; j++) {
      const uint32_t *s = reinterpret_cast<const uint32_t *>(&src.tiles[i][j].data[0]);
      uint32_t *d = reinterpret_cast<uint32_t *>(&dst.tiles[i][j].data[0]);
      const uint32_t s1 = s[1];
      d[0] = movmatrix_t(s[0]);
      d[1] = movmatrix_t(s[2]);
      d[2] = movmatrix_t(s1);
      d[3] = movmatrix_t(s[3]);
    }
}

// Tile MMAs (fp32 accumulate) over TK's 16x16 base ops. TK's rt-level mma_AB/ABt/AtB at the pinned
// commit reject fp16 inputs with fp32 accumulators under KITTENS_HOPPER (a static_assert that omits
// the case; the base ops support it), so the kernels loop over the base ops here, for both types.
template <typename D, typename A, typename B>
__device__ inline void mma_ab(D &d, const A &a, const B &b) {  // d += a b; a row [M,K], b col [K,N]
  static_assert(D::rows == A::rows && D::cols == B::cols && A::cols == B::rows);
#pragma unroll
  for (int n = 0; n < D::height; n++)
#pragma unroll
    for (int m = 0; m < D::width; m++)
#pragma unroll
      for (int k = 0; k < A::width; k++) mma_AB_base(d.tiles[n][m], a.tiles[n][k], b.tiles[k][m], d.tiles[n][m]);
}
template <typename D, typename A, typename B>
__device__ inline void mma_abt(D &d, const A &a, const B &b) {  // d += a b^T; a row [M,K], b row [N,K]
  static_assert(D::rows == A::rows && D::cols == B::rows && A::cols == B::cols);
#pragma unroll
  for (int n = 0; n < D::height; n++)
#pragma unroll
    for (int m = 0; m < D::width; m++)
#pragma unroll
      for (int k = 0; k < A::width; k++) mma_ABt_base(d.tiles[n][m], a.tiles[n][k], b.tiles[m][k], d.tiles[n][m]);
}
template <typename D, typename A, typename B>
__device__ inline void mma_atb(D &d, const A &a, const B &b) {  // d += a^T b; a col [K,M], b col [K,N]
  static_assert(D::rows == A::cols && D::cols == B::cols && A::rows == B::rows);
#pragma unroll
  for (int n = 0; n < D::height; n++)
#pragma unroll
    for (int m = 0; m < D::width; m++)
#pragma unroll
      for (int k = 0; k < A::height; k++) mma_AtB_base(d.tiles[n][m], a.tiles[k][n], b.tiles[k][m], d.tiles[n][m]);
}

// 1/sqrt(x) for the LayerNorm (x = var + 1e-6 >= 1e-6, never denormal): the .ftz form gives the same
// result as rsqrtf without its denormal-input scaling (3 instructions fewer).
__device__ inline float rsqrt_ln(float x) {
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Sum of 8 values as a tree (depth 3 instead of a chain of 8).
__device__ inline float sum8(const float *x) {
  return ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
}

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the aligned group of G lanes (G a power of 2 <= 32) that holds one row.
template <int G>
__device__ inline float group_sum(float v) {
#pragma unroll
  for (int o = 1; o < G; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The inner LayerNorm over one row of F features held by G lanes, NPL features a lane: centres x in place
// and returns rstd = 1/sqrt(var + eps); the lane's part of the mean is a tree sum for 8 features.
template <int G, int NPL>
__device__ inline float ln_center(float *x) {
  float part;
  if constexpr (NPL == 8) {
    part = sum8(x);
  } else {
    part = 0.f;
#pragma unroll
    for (int e = 0; e < NPL; e++) part += x[e];
  }
  const float mean = group_sum<G>(part) * (1.f / F);
  float sq = 0.f;
#pragma unroll
  for (int e = 0; e < NPL; e++) {
    x[e] -= mean;
    sq += x[e] * x[e];
  }
  return rsqrt_ln(group_sum<G>(sq) * (1.f / F) + LN_EPS);
}

// The L2 loss backward through that LayerNorm: x (centred) becomes xh = x rstd in place, and
// g = d/dz 1/2 ||lw xh + lb - (v - k)||^2 (MATH.md's inner-loop gradient).
template <int G, int NPL>
__device__ inline void ln_l2_bwd(float *x, float rstd, const float *kk, const float *vv, const float *lw,
                                 const float *lb, float *g) {
  float s1 = 0.f, s2 = 0.f;
#pragma unroll
  for (int e = 0; e < NPL; e++) {
    x[e] *= rstd;                                              // xh
    g[e] = lw[e] * (lw[e] * x[e] + lb[e] - (vv[e] - kk[e]));  // gh
    s1 += g[e];
    s2 += g[e] * x[e];
  }
  s1 = group_sum<G>(s1);
  s2 = group_sum<G>(s2);
#pragma unroll
  for (int e = 0; e < NPL; e++) g[e] = (F * g[e] - s1 - x[e] * s2) * (rstd * (1.f / F));
}

// Gradient rows outside the prompt: before it (t < 0) the row kept from the previous call, after it none.
template <int NPL>
__device__ inline void outside_rows(float *g, int t, int T, const float *kept) {
  if (t < 0) {
#pragma unroll
    for (int e = 0; e < NPL; e++) g[e] = kept[e];
  }
  if (t >= T) {
#pragma unroll
    for (int e = 0; e < NPL; e++) g[e] = 0.f;
  }
}

// The output row q + LN(z): z (centred by ln_center) becomes q + lw z rstd + lb in place.
template <int NPL>
__device__ inline void ln_out(float *z, float rstd, const float *qq, const float *lw, const float *lb) {
#pragma unroll
  for (int e = 0; e < NPL; e++) z[e] = qq[e] + lw[e] * z[e] * rstd + lb[e];
}

// N consecutive 16-bit values -> float, and back (N even).
template <typename TT, int N>
__device__ inline void ld_f(float *dst, const TT *src) {
  using T2 = typename io<TT>::T2;
#pragma unroll
  for (int e = 0; e < N; e += 2) {
    const float2 v = io<TT>::to_f2(reinterpret_cast<const T2 *>(src)[e / 2]);
    dst[e] = v.x;
    dst[e + 1] = v.y;
  }
}
template <typename TT, int N>
__device__ inline void st_f(TT *dst, const float *src) {
  using T2 = typename io<TT>::T2;
#pragma unroll
  for (int e = 0; e < N; e += 2) reinterpret_cast<T2 *>(dst)[e / 2] = io<TT>::from_f2(make_float2(src[e], src[e + 1]));
}

// Two floats -> one 32-bit word of two 16-bit values (low half first, as in memory).
template <typename TT>
__device__ inline uint32_t pack2(float x, float y) {
  const typename io<TT>::T2 v = io<TT>::from_f2(make_float2(x, y));
  return *reinterpret_cast<const uint32_t *>(&v);
}

// tanh-GELU through the logistic function: with y = k0 (x + k1 x^3), e = e^{2y}, r = 1 / (1 + e) and
// s = e r = (1 + tanh y) / 2 (so 1 - tanh y = 2 r, 1 - tanh^2 y = 4 r s):
//   gelu(x)  = 0.5 x (1 + tanh y)                              = x s
//   gelu'(x) = 0.5 (1 + tanh y) + 0.5 x (1 - tanh^2 y) y'(x)   = s (1 + x r 2 k0 (1 + 3 k1 x^2))
// 2 y log2(e) = x (c1 + c2 x^2); e from ex2.approx, r from rcp.approx: ~9 instructions for gelu and 4
// more for gelu' (tanhf alone took ~18). s is accurate to a few ulp everywhere, including the negative
// tail where 1 + tanh y cancels (the tanh form loses relative accuracy there). The exponent is capped at
// 64 (y > ~22: s = 1 in fp32, r = 2^-64 instead of smaller, x r ~ 1e-18 against 1), so e never
// overflows and s never becomes inf * 0; very negative arguments give e = 0 (ftz), s = 0, gelu = 0.
__device__ inline void gelu_sr(float x, float x2, float &s, float &r) {
  constexpr float k0 = 0.7978845608028654f, k1 = 0.044715f, l2e2 = 2.8853900817779268f;  // 2 log2(e)
  constexpr float c1 = l2e2 * k0, c2 = l2e2 * k0 * k1;
  const float arg = fminf(x * fmaf(c2, x2, c1), 64.f);
  float e;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(e) : "f"(arg));
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(1.f + e));
  s = e * r;
}
__device__ inline float gelu_tanh(float x) {
  float s, r;
  gelu_sr(x, x * x, s, r);
  return x * s;
}
// gelu(x) and gelu'(x) from one exponential.
__device__ inline void gelu_tanh_fwd_bwd(float x, float &g, float &dg) {
  constexpr float k0 = 0.7978845608028654f, k1 = 0.044715f;
  const float x2 = x * x;
  float s, r;
  gelu_sr(x, x2, s, r);
  g = x * s;
  dg = s * fmaf(x * r, fmaf(6.f * k0 * k1, x2, 2.f * k0), 1.f);
}

// ---- async global -> shared copies -----------------------------------------------------------
__device__ inline void cp_async16(void *smem, const void *gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ inline void cp_async4(void *smem, const void *gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// q, k, v rows of one mini-batch segment (3 x 128 chunks of 16 B) with NT threads: thread tid owns chunk
// tid % 128 (row (tid % 128) / 8, 8 features) of tensors tid / 128, tid / 128 + NT / 128, ... The row
// and offsets are computed once for the three tensors; no loop over chunks (v3: v2's generic chunk
// loop cost ~70 instructions a tensor per step, the compiler not knowing NT divides 128). Rows with t
// outside [0, T) are zero-filled here (rows t < 0 are filled from the state by the caller).
template <typename TT, int NT>
__device__ inline void stage_qkv(TT *sq, TT *sk, TT *sv, const TT *gq, const TT *gk, const TT *gv, int seg,
                                 int start, int T, int tid) {
  constexpr int CH = MB * (F / 8);  // 128 chunks a tensor
  static_assert(NT % CH == 0, "NT must be a multiple of 128");
  const int cc = tid % CH;
  const int r = cc / (F / 8), part = cc % (F / 8);
  const int t = seg * MB + r - start;
  const int so = r * PB + part * 8;
  const bool in = (t >= 0) && (t < T);
  const size_t go = in ? (size_t)t * F + part * 8 : 0;
  if constexpr (NT == CH) {
    if (in) {
      cp_async16(sq + so, gq + go);
      cp_async16(sk + so, gk + go);
      cp_async16(sv + so, gv + go);
    } else {
      *reinterpret_cast<uint4 *>(sq + so) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4 *>(sk + so) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4 *>(sv + so) = make_uint4(0, 0, 0, 0);
    }
  } else {
#pragma unroll
    for (int x0 = 0; x0 < 3; x0 += NT / CH) {
      const int x = x0 + tid / CH;
      if (x < 3) {
        TT *d = (x == 0 ? sq : x == 1 ? sk : sv) + so;
        const TT *g = x == 0 ? gq : x == 1 ? gk : gv;
        if (in) cp_async16(d, g + go);
        else *reinterpret_cast<uint4 *>(d) = make_uint4(0, 0, 0, 0);
      }
    }
  }
}

// The 16 learning rates of a segment (0 outside [0, T)).
__device__ inline void stage_lr(float *sdst, const float *g, int seg, int start, int T, int tid) {
  if (tid < MB) {
    const int t = seg * MB + tid - start;
    if (t >= 0 && t < T) cp_async4(sdst + tid, g + t);
    else sdst[tid] = 0.f;
  }
}

}  // namespace ttt
