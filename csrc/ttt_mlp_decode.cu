// TTT-MLP decode step in CUDA: CTAs of 256 threads, one (sequence, head) at a time, W2 held in shared memory.
//
// The math is the Triton kernels' (ttt_infer/kernels/decode/mlp.py, MATH.md "Decode traffic"): inside a
// mini-batch W1, b1, W2, b2 stay at the mini-batch's starting value, the rows (k, g1, x2, g2, lr) of the tokens
// so far are kept, W is written once per mini-batch. Why CUDA: the Triton versions read W2 twice (g2 needs all
// of z2 = gelu(k W1) W2 first, then g1 and z2bar need W2 again) or hold both weights in registers (one program
// an SM); here W2 (64 KB fp32) and the mini-batch's rows are copied to shared memory once (cp.async) and W2 is
// read three times from there, while W1 is read once into registers, one column of W1 per thread:
//
//   thread j (hidden unit j):  z1k_j = k . W1[:, j] + b1_j,  z1q_j = q . W1[:, j] + b1_j     (W1 in registers)
//   threads (f, group):        z2k_f = b2_f + sum_j gelu(z1k_j) W2[j, f]                     (W2 in smem)
//   warp 0:                    g2 = LN-L2 backward(z2k; v - k)      (warps 1-7: a1_s = lr_s (K_s . q + 1))
//   thread j:                  g1_j = gelu'(z1k_j) sum_f W2[j, f] g2_f                       (W2 in smem)
//                              z1bar_j = z1q_j - tau (sum_{s<p} a1_s G1[s, j] + a1_p g1_j),  x2bar = gelu(z1bar)
//   threads (f, group):        z2bar_f = b2_f + sum_j x2bar_j W2[j, f] - tau sum_{s<=p} a2_s G2[s, f]
//   warp 0:                    out = q + LN(z2bar)
//   with a2_s = lr_s (X2_s . x2bar + 1); at p = 15 the rank-16 updates of W1, b1, W2 (in shared memory, then
//   copied out), b2.
//
// Grid: one CTA a pair (ctas_per_sm = 0), or persistent (ctas_per_sm = 1, 2 CTAs on each SM looping over the
// pairs): the next pair's W1 column and vectors load into registers while this pair computes, its W2 and rows are
// copied once this pair's last W2 pass is done. Shared memory: 104 KB (dynamic) + 8 KB a CTA: two CTAs an SM on
// sm_90 (one on sm_80).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ttt_decode.h"

namespace ttt {
namespace {

constexpr int F = 64;
constexpr int H = 256;
constexpr int MB = 16;
constexpr int THREADS = 256;
constexpr float GELU_C = 0.7978845608028654f;  // sqrt(2 / pi)

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.0f + tanhf(GELU_C * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float gelu_bwd(float x) {
  const float t = tanhf(GELU_C * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * 0.044715f * x * x);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// 16-byte asynchronous copy global -> shared, both addresses base + OFF (one base register each)
template <int OFF>
__device__ __forceinline__ void cp_async16(unsigned smem, const void *gmem) {
  asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%2], 16;\n" ::"r"(smem), "l"(gmem), "n"(OFF));
}
template <int I, int N>
__device__ __forceinline__ void cp_async_rows(unsigned smem, const void *gmem) {  // copies I .. N-1, THREADS apart
  if constexpr (I < N) {
    cp_async16<I * THREADS * 16>(smem, gmem);
    cp_async_rows<I + 1, N>(smem, gmem);
  }
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::); }

struct Smem {
  float q[F], k[F], tgt[F], lnw[F], lnb[F];  // tgt = v - k
  float x2[H];                                // gelu(z1k), then x2bar
  float part[4][F];                           // partial sums over the 4 groups of 64 hidden units
  float g2[F];
  float a1[MB], lr[MB];
  float red[THREADS / 32][MB];                // per-warp sums of X2_s . x2bar
  float rows[MB][F];                          // the update at p = 15: tau lr_s K_s, then G2_s
};
// dynamic shared memory: W2 [H][F], then the mini-batch's rows of G1, X2 [MB][H] and K, G2 [MB][F]
constexpr int DYN_FLOATS = H * F + 2 * MB * H + 2 * MB * F;

// What a thread needs of one (sequence, head) before its first barrier, loaded ahead (the next pair's while
// this pair computes): W1's column t, b1[t], b2[fo], its share of the token's vectors and lr.
struct Ahead {
  float w1[F];  // rows 0 .. W1_EARLY-1 load early (with the rest of Ahead), the others late (load_late)
  float b1, b2, vec, vec2, lr;
};
// W1 rows loaded while the previous pair computes; the rest once its last W2 pass is done (few registers then)
constexpr int W1_EARLY = 48;

__device__ __forceinline__ void load_late(Ahead &x, const MlpDecodeArgs &a, int pid, int t) {
  const float *W1g = a.W1 + static_cast<long long>(pid) * F * H + t;
#pragma unroll
  for (int f = W1_EARLY; f < F; ++f) x.w1[f] = __ldcs(W1g + f * H);
}

template <typename T, typename L>
__device__ __forceinline__ void load_ahead(Ahead &x, const MlpDecodeArgs &a, int pid, int p, int t) {
  const int fo = t & (F - 1);
  const int head = pid % a.nh;
  const float *W1g = a.W1 + static_cast<long long>(pid) * F * H + t;
#pragma unroll
  for (int f = 0; f < W1_EARLY; ++f) x.w1[f] = __ldcs(W1g + f * H);
  x.b1 = a.b1[pid * H + t];
  x.b2 = a.b2[pid * F + fo];
  // thread roles: t < 64 q; 64..127 k and v; 128..191 ln_w; 192..255 ln_b
  if (t < F) {
    x.vec = to_f(static_cast<const T *>(a.q)[pid * F + t]);
  } else if (t < 2 * F) {
    x.vec = to_f(static_cast<const T *>(a.k)[pid * F + t - F]);
    x.vec2 = to_f(static_cast<const T *>(a.v)[(pid / a.nh) * a.sv + head * F + t - F]);
  } else {
    x.vec = to_f(static_cast<const L *>(t < 3 * F ? a.ln_w : a.ln_b)[head * F + (t & (F - 1))]);
  }
  if (t < MB) x.lr = t < p ? a.LR[pid * MB + t] : (t == p ? a.lr[pid] : 0.0f);
}

// W2 and the rows s < p of G1, X2, K, G2 -> shared memory by asynchronous copies (one commit group)
__device__ __forceinline__ void copy_ahead(float *W2s, const MlpDecodeArgs &a, int pid, int p, int t) {
  cp_async_rows<0, H * F / 4 / THREADS>(static_cast<unsigned>(__cvta_generic_to_shared(W2s + 4 * t)),
                                        a.W2 + static_cast<long long>(pid) * H * F + 4 * t);
  float *G1s = W2s + H * F, *X2s = G1s + MB * H, *Ks = X2s + MB * H, *G2s = Ks + MB * F;
  const long long r0 = static_cast<long long>(pid) * MB;
  const float *G1g = a.G1 + r0 * H, *X2g = a.X2 + r0 * H, *Kg = a.K + r0 * F, *G2g = a.G2 + r0 * F;
  for (int c = t; c < p * H / 4; c += THREADS) {
    cp_async16<0>(static_cast<unsigned>(__cvta_generic_to_shared(G1s + 4 * c)), G1g + 4 * c);
    cp_async16<0>(static_cast<unsigned>(__cvta_generic_to_shared(X2s + 4 * c)), X2g + 4 * c);
  }
  for (int c = t; c < p * F / 4; c += THREADS) {
    cp_async16<0>(static_cast<unsigned>(__cvta_generic_to_shared(Ks + 4 * c)), Kg + 4 * c);
    cp_async16<0>(static_cast<unsigned>(__cvta_generic_to_shared(G2s + 4 * c)), G2g + 4 * c);
  }
  asm volatile("cp.async.commit_group;\n" ::);
}

// The grid's CTAs loop over the (sequence, head) pairs gridDim.x apart (one turn when the grid is BH).
template <typename T, typename L>
__global__ void __launch_bounds__(THREADS, 2) mlp_decode_kernel(const MlpDecodeArgs a) {
  extern __shared__ float4 dyn[];
  float *W2s = reinterpret_cast<float *>(dyn);  // [H][F]
  float *G1s = W2s + H * F, *X2s = G1s + MB * H, *Ks = X2s + MB * H, *G2s = Ks + MB * F;
  __shared__ Smem s;

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, fo = t & (F - 1), grp = t >> 6;
  const int p = static_cast<int>(*a.pos % MB);
  const float tau = a.tau[p];
  int pid = blockIdx.x;
  Ahead x;
  copy_ahead(W2s, a, pid, p, t);
  load_ahead<T, L>(x, a, pid, p, t);
  load_late(x, a, pid, t);

  for (; pid < a.BH; pid += gridDim.x) {
    const int nxt = pid + gridDim.x;
    const bool more = nxt < a.BH;
    // the token's vectors to shared memory; row p of K and LR
    if (t < F) {
      s.q[t] = x.vec;
    } else if (t < 2 * F) {
      s.k[t - F] = x.vec;
      s.tgt[t - F] = x.vec2 - x.vec;
      a.K[(static_cast<long long>(pid) * MB + p) * F + t - F] = x.vec;
    } else if (t < 3 * F) {
      s.lnw[t - 2 * F] = x.vec;
    } else {
      s.lnb[t - 3 * F] = x.vec;
    }
    if (t < MB) {
      s.lr[t] = x.lr;
      if (t == p) a.LR[pid * MB + p] = x.lr;
    }
    const float b1 = x.b1, b2 = x.b2;
    __syncthreads();

    // z1 of k and q; then W1's registers take the next pair's column
    float z1k = b1, z1q = b1;
#pragma unroll
    for (int f = 0; f < F; f += 4) {
      const float4 kk = *reinterpret_cast<const float4 *>(&s.k[f]);
      const float4 qq = *reinterpret_cast<const float4 *>(&s.q[f]);
      z1k += kk.x * x.w1[f] + kk.y * x.w1[f + 1] + kk.z * x.w1[f + 2] + kk.w * x.w1[f + 3];
      z1q += qq.x * x.w1[f] + qq.y * x.w1[f + 1] + qq.z * x.w1[f + 2] + qq.w * x.w1[f + 3];
    }
    // the next pair's W1 column etc. load while this pair computes, except at the mini-batch's end, whose update
    // needs the registers (loaded after it there)
    if (more && p != MB - 1) load_ahead<T, L>(x, a, nxt, p, t);
    const float x2k = gelu(z1k);
    s.x2[t] = x2k;
    cp_async_wait_all();  // W2 and the rows, copied since the previous pair's last W2 read
    __syncthreads();

    // z2 of k: thread (fo, grp) sums hidden units 64 grp .. 64 grp + 63
    {
      float acc = 0.0f;
      const float *w = W2s + grp * 64 * F + fo;
      const float *xv = s.x2 + grp * 64;
#pragma unroll 8
      for (int i = 0; i < 64; ++i) acc += xv[i] * w[i * F];
      s.part[grp][fo] = acc;
    }
    __syncthreads();

    // g2 = LN-L2 backward of z2k against v - k (warp 0, two features a lane; b2 of feature lane is this thread's)
    if (warp == 0) {
      float z[2], gh[2], xh[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int f = lane + 32 * h;
        z[h] = (h == 0 ? b2 : a.b2[pid * F + f]) + s.part[0][f] + s.part[1][f] + s.part[2][f] + s.part[3][f];
      }
      const float mu = warp_sum(z[0] + z[1]) * (1.0f / F);
      const float var = warp_sum((z[0] - mu) * (z[0] - mu) + (z[1] - mu) * (z[1] - mu)) * (1.0f / F);
      const float rstd = rsqrtf(var + a.eps);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int f = lane + 32 * h;
        xh[h] = (z[h] - mu) * rstd;
        gh[h] = s.lnw[f] * (s.lnw[f] * xh[h] + s.lnb[f] - s.tgt[f]);
      }
      const float sg = warp_sum(gh[0] + gh[1]);
      const float sgx = warp_sum(gh[0] * xh[0] + gh[1] * xh[1]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int f = lane + 32 * h;
        const float g = (F * gh[h] - sg - xh[h] * sgx) * (rstd / F);
        s.g2[f] = g;
        a.G2[(static_cast<long long>(pid) * MB + p) * F + f] = g;
      }
    } else {  // meanwhile warps 1..7: a1_s = lr_s (K_s . q + 1), s <= p (the row p is this token's k)
      for (int sr = warp - 1; sr <= p; sr += THREADS / 32 - 1) {
        const float *kk = sr < p ? Ks + sr * F : s.k;
        const float d = warp_sum(kk[lane] * s.q[lane] + kk[lane + 32] * s.q[lane + 32]);
        if (lane == 0) s.a1[sr] = s.lr[sr] * (d + 1.0f);
      }
    }
    __syncthreads();

    // g1 (row t of W2, 16-byte chunks rotated by the lane: 32 banks), z1bar, x2bar; the X2_s . x2bar sums
    {
      float d = 0.0f;
      const float *w = W2s + t * F;
#pragma unroll
      for (int i = 0; i < F; i += 4) {
        const int f = (i + 4 * t) & (F - 1);
        const float4 ww = *reinterpret_cast<const float4 *>(w + f);
        const float4 gg = *reinterpret_cast<const float4 *>(&s.g2[f]);
        d += ww.x * gg.x + ww.y * gg.y + ww.z * gg.z + ww.w * gg.w;
      }
      const float g1 = d * gelu_bwd(z1k);
      a.G1[(static_cast<long long>(pid) * MB + p) * H + t] = g1;
      a.X2[(static_cast<long long>(pid) * MB + p) * H + t] = x2k;
      float c = s.a1[p] * g1;
      for (int r = 0; r < p; ++r) c += s.a1[r] * G1s[r * H + t];
      const float x2bar = gelu(z1q - tau * c);
      for (int r = 0; r <= p; ++r) {  // one sum at a time: few registers (the next pair's W1 column is in flight)
        const float d2 = warp_sum((r < p ? X2s[r * H + t] : x2k) * x2bar);
        if (lane == 0) s.red[warp][r] = d2;
      }
      s.x2[t] = x2bar;  // x2k's readers (z2k) are past the barrier after them
      if (p == MB - 1) {  // the update reads the whole mini-batch's rows from shared memory
        G1s[p * H + t] = g1;
        X2s[p * H + t] = x2k;
      }
    }
    __syncthreads();

    // z2bar: thread (fo, grp) as for z2k, minus its share of tau sum_s a2_s G2_s (rows grp + 4i)
    {
      float acc = 0.0f;
      const float *w = W2s + grp * 64 * F + fo;
      const float *xv = s.x2 + grp * 64;
#pragma unroll 8
      for (int i = 0; i < 64; ++i) acc += xv[i] * w[i * F];
      float corr = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int sr = grp + 4 * i;
        if (sr <= p) {
          float dot = 0.0f;
#pragma unroll
          for (int w8 = 0; w8 < THREADS / 32; ++w8) dot += s.red[w8][sr];
          corr += s.lr[sr] * (dot + 1.0f) * (sr < p ? G2s[sr * F + fo] : s.g2[fo]);
        }
      }
      s.part[grp][fo] = acc - tau * corr;
    }
    __syncthreads();
    if (p != MB - 1 && more) {  // this pair's W2 and rows are done with
      copy_ahead(W2s, a, nxt, p, t);
      load_late(x, a, nxt, t);
    }

    // out = q + LN(z2bar) (warp 0)
    if (warp == 0) {
      float z[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int f = lane + 32 * h;
        z[h] = (h == 0 ? b2 : a.b2[pid * F + f]) + s.part[0][f] + s.part[1][f] + s.part[2][f] + s.part[3][f];
      }
      const float mu = warp_sum(z[0] + z[1]) * (1.0f / F);
      const float var = warp_sum((z[0] - mu) * (z[0] - mu) + (z[1] - mu) * (z[1] - mu)) * (1.0f / F);
      const float rstd = rsqrtf(var + a.eps);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int f = lane + 32 * h;
        a.out[pid * F + f] = s.q[f] + s.lnw[f] * ((z[h] - mu) * rstd) + s.lnb[f];
      }
    }

    if (p == MB - 1) {  // the mini-batch's end: W -= tau sum_s lr_s (outer products of its rows)
      for (int i = t; i < MB * F; i += THREADS) {
        const int sr = i / F;
        s.rows[sr][i % F] = tau * s.lr[sr] * a.K[(static_cast<long long>(pid) * MB + sr) * F + i % F];
      }
      __syncthreads();
      {
        float g[MB], bsum = 0.0f;
#pragma unroll
        for (int r = 0; r < MB; ++r) {
          g[r] = G1s[r * H + t];
          bsum += tau * s.lr[r] * g[r];
        }
        a.b1[pid * H + t] = b1 - bsum;
        float *W1w = a.W1 + static_cast<long long>(pid) * F * H + t;
#pragma unroll 4
        for (int f = 0; f < F; ++f) {
          float u = 0.0f;
#pragma unroll
          for (int r = 0; r < MB; ++r) u += s.rows[r][f] * g[r];
          W1w[f * H] = W1w[f * H] - u;
        }
      }
      __syncthreads();
      for (int i = t; i < MB * F; i += THREADS) s.rows[i / F][i % F] = a.G2[static_cast<long long>(pid) * MB * F + i];
      __syncthreads();
      {
        float cx[MB];
#pragma unroll
        for (int r = 0; r < MB; ++r) cx[r] = tau * s.lr[r] * X2s[r * H + t];
        float *w = W2s + t * F;
#pragma unroll
        for (int i = 0; i < F; i += 4) {
          const int f = (i + 4 * t) & (F - 1);
          float4 ww = *reinterpret_cast<float4 *>(w + f);
#pragma unroll
          for (int r = 0; r < MB; ++r) {
            const float4 gg = *reinterpret_cast<const float4 *>(&s.rows[r][f]);
            ww.x -= cx[r] * gg.x;
            ww.y -= cx[r] * gg.y;
            ww.z -= cx[r] * gg.z;
            ww.w -= cx[r] * gg.w;
          }
          *reinterpret_cast<float4 *>(w + f) = ww;
        }
        if (t < F) {
          float bsum = 0.0f;
#pragma unroll
          for (int r = 0; r < MB; ++r) bsum += tau * s.lr[r] * s.rows[r][t];
          a.b2[pid * F + t] = b2 - bsum;
        }
      }
      __syncthreads();
      float4 *W2o = reinterpret_cast<float4 *>(a.W2 + static_cast<long long>(pid) * H * F);
#pragma unroll
      for (int i = 0; i < H * F / 4 / THREADS; ++i) W2o[i * THREADS + t] = dyn[i * THREADS + t];
      __syncthreads();
      if (more) {
        copy_ahead(W2s, a, nxt, p, t);
        load_ahead<T, L>(x, a, nxt, p, t);
        load_late(x, a, nxt, t);
      }
    }
    __syncthreads();  // the vectors, parts and sums in shared memory are the next pair's
  }
}

template <typename T, typename L>
cudaError_t launch_typed(const MlpDecodeArgs &a, int ctas_per_sm, cudaStream_t stream) {
  constexpr int dyn = DYN_FLOATS * sizeof(float);
  auto kern = mlp_decode_kernel<T, L>;
  static cudaError_t attr = [&] {  // once per instantiation (and process): 104 KB dynamic, the largest carveout
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn);
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    return e;
  }();
  if (attr != cudaSuccess) return attr;
  int grid = a.BH;
  if (ctas_per_sm > 0) {  // persistent: ctas_per_sm CTAs on each SM, as few turns as that allows, evened out
    int dev = 0, sms = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) return e;
    const long long slots = static_cast<long long>(sms) * ctas_per_sm;
    const long long turns = (a.BH + slots - 1) / slots;
    grid = static_cast<int>((a.BH + turns - 1) / turns);
  }
  kern<<<grid, THREADS, dyn, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_ln(const MlpDecodeArgs &a, DecodeDtype ln, int ctas_per_sm, cudaStream_t stream) {
  if (ln == DecodeDtype::fp32) return launch_typed<T, float>(a, ctas_per_sm, stream);
  return launch_typed<T, T>(a, ctas_per_sm, stream);
}

}  // namespace

cudaError_t launch_mlp_decode(const MlpDecodeArgs &a, DecodeDtype act, DecodeDtype ln, int ctas_per_sm,
                              cudaStream_t stream) {
  if (a.BH <= 0) return cudaSuccess;
  if (a.BH > (1 << 22)) return cudaErrorInvalidValue;  // 32-bit row offsets (pid * H) in the kernel
  if ((ln != DecodeDtype::fp32 && ln != act) || ctas_per_sm < 0 || ctas_per_sm > 2) return cudaErrorInvalidValue;
  switch (act) {
    case DecodeDtype::bf16: return launch_ln<__nv_bfloat16>(a, ln, ctas_per_sm, stream);
    case DecodeDtype::fp16: return launch_ln<__half>(a, ln, ctas_per_sm, stream);
    default: return launch_ln<float>(a, ln, ctas_per_sm, stream);
  }
}

}  // namespace ttt
