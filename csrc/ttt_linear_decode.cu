// TTT-Linear decode step in CUDA: one CTA of 128 threads per (sequence, head), eight CTAs an SM.
//
// The math is the Triton kernels' (ttt_infer/kernels/decode/linear.py, MATH.md "Decode traffic"): inside a
// mini-batch W and b stay at the mini-batch's starting value, the rows (k, g, lr) of the tokens so far are kept,
// W is written once per mini-batch:
//
//   zk = k W + b,  zq = q W + b,  g = LN-L2 backward(zk; v - k)
//   zbar = zq - tau sum_{s<=p} a_s G_s  with  a_s = lr_s (K_s . q + 1),  out = q + LN(zbar)
//   at p = 15: W -= tau sum_s lr_s K_s^T G_s,  b -= tau sum_s lr_s G_s.
//
// Why CUDA: the Triton kernels hold W (16 KB fp32) in registers, six to eight programs an SM, and each program
// waits for its loads at its start with little else to hide it behind (Nsight Compute, session 10). Here all a
// pair reads is copied to shared memory with cp.async at once (W and the rows s < p of K and G: up to 23.5 KB),
// which takes no registers, so eight CTAs an SM keep up to ~190 KB in flight; after the data has landed the
// chain is short: thread (h, j) sums k W[f, j] and q W[f, j] over its half of f, the warps take the a_s, and
// warp 0 does both LayerNorms. At p = 15 every thread updates its 32 entries of W from shared memory.

#include "ttt_decode_device.cuh"

namespace ttt {
namespace {

using namespace decode_dev;  // F, MB and the helpers both CUDA decode steps use (ttt_decode_device.cuh)

constexpr int THREADS = 128;
constexpr int CTAS = 8;  // CTAs an SM (shared memory: ~27 KB a CTA)

struct alignas(16) LinearSmem {  // 16-byte cp.async destinations (W, K, G), float4 reads of q, k
  float W[F * F];                // [f][j]
  float K[MB][F], G[MB][F];      // rows s <= p (row p: this token's k, g)
  float q[F], k[F], tgt[F], lnw[F], lnb[F];  // tgt = v - k
  float part[2][2][F];           // [half of f][k, q][j]: the matvecs' partial sums
  float a[MB], lr[MB];           // a_s (s <= p), lr_s (0 for s > p)
};

template <typename T, typename L>
__global__ void __launch_bounds__(THREADS, CTAS) linear_decode_kernel(const LinearDecodeArgs a) {
  __shared__ LinearSmem s;
  const long long pid = blockIdx.x;
  pdl_wait_then_release();
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int head = static_cast<int>(pid % a.nh);
  const int p = static_cast<int>(*a.pos % MB);
  const float tau = a.tau[p];

  // W and the rows s < p of K and G -> shared memory (16-byte chunks; W: 8 a thread, THREADS apart)
  cp_async_rows<THREADS, 0, F * F / 4 / THREADS>(static_cast<unsigned>(__cvta_generic_to_shared(s.W + 4 * t)),
                                                 a.W + pid * F * F + 4 * t);
  {
    const float *Kg = a.K + pid * MB * F, *Gg = a.G + pid * MB * F;
    const unsigned sK = static_cast<unsigned>(__cvta_generic_to_shared(&s.K[0][0]));
    const unsigned sG = static_cast<unsigned>(__cvta_generic_to_shared(&s.G[0][0]));
    for (int c = t; c < p * (F / 4); c += THREADS) {
      cp_async16<0>(sK + 16 * c, Kg + 4 * c);
      cp_async16<0>(sG + 16 * c, Gg + 4 * c);
    }
  }
  // the token: q, k (also row p of K, in shared memory and in the state), v - k, the LayerNorm's weights; lr
  const T *q = static_cast<const T *>(a.q) + pid * F;
  const L *lnw = static_cast<const L *>(a.ln_w) + head * F, *lnb = static_cast<const L *>(a.ln_b) + head * F;
  if (t < F) {
    s.q[t] = to_f(q[t]);
    s.lnw[t] = to_f(lnw[t]);
  } else {
    const int f = t - F;
    const float kf = to_f(static_cast<const T *>(a.k)[pid * F + f]);
    const T *v = static_cast<const T *>(a.v) + (pid / a.nh) * a.sv + static_cast<long long>(head) * F;
    s.k[f] = kf;
    s.K[p][f] = kf;
    s.tgt[f] = to_f(v[f]) - kf;
    s.lnb[f] = to_f(lnb[f]);
    a.K[(pid * MB + p) * F + f] = kf;
  }
  if (t < MB) {
    const float lr_t = t < p ? a.LR[pid * MB + t] : (t == p ? a.lr[pid] : 0.0f);
    s.lr[t] = lr_t;
    if (t == p) a.LR[pid * MB + p] = lr_t;
  }
  float bias[2] = {0.0f, 0.0f};  // warp 0: b of features lane, lane + 32
  if (warp == 0) {
    bias[0] = a.b[pid * F + lane];
    bias[1] = a.b[pid * F + lane + 32];
  }
  cp_async_wait_all();
  __syncthreads();

  // thread (h, j): k W[f, j] and q W[f, j] summed over f in [32 h, 32 h + 32)
  const int j = t & (F - 1), h = t >> 6;
  {
    float zk = 0.0f, zq = 0.0f;
#pragma unroll
    for (int f = 32 * h; f < 32 * h + 32; f += 4) {
      const float4 kk = *reinterpret_cast<const float4 *>(&s.k[f]);
      const float4 qq = *reinterpret_cast<const float4 *>(&s.q[f]);
      const float w0 = s.W[f * F + j], w1 = s.W[(f + 1) * F + j], w2 = s.W[(f + 2) * F + j], w3 = s.W[(f + 3) * F + j];
      zk += kk.x * w0 + kk.y * w1 + kk.z * w2 + kk.w * w3;
      zq += qq.x * w0 + qq.y * w1 + qq.z * w2 + qq.w * w3;
    }
    s.part[h][0][j] = zk;
    s.part[h][1][j] = zq;
  }
  // a_s = lr_s (K_s . q + 1) for s <= p: warp w takes rows w, w + 4, w + 8, w + 12
#pragma unroll
  for (int i = 0; i < MB / 4; ++i) {
    const int sr = warp + 4 * i;
    if (sr <= p) {
      const float d = warp_sum(s.K[sr][lane] * s.q[lane] + s.K[sr][lane + 32] * s.q[lane + 32]);
      if (lane == 0) s.a[sr] = s.lr[sr] * (d + 1.0f);
    }
  }
  __syncthreads();

  // warp 0, two features a lane: g = LN-L2 backward of zk against v - k; zbar; out = q + LN(zbar)
  if (warp == 0) {
    float z[2], g[2], mu, rstd;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int f = lane + 32 * hh;
      z[hh] = s.part[0][0][f] + s.part[1][0][f] + bias[hh];
    }
    warp_ln_l2_bwd(z, s.lnw, s.lnb, s.tgt, a.eps, lane, g);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int f = lane + 32 * hh;
      s.G[p][f] = g[hh];
      a.G[(pid * MB + p) * F + f] = g[hh];
      float c = s.a[p] * g[hh];
      for (int sr = 0; sr < p; ++sr) c += s.a[sr] * s.G[sr][f];
      z[hh] = s.part[0][1][f] + s.part[1][1][f] + bias[hh] - tau * c;  // zbar
    }
    warp_ln_stats(z, a.eps, mu, rstd);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int f = lane + 32 * hh;
      a.out[pid * F + f] = s.q[f] + s.lnw[f] * ((z[hh] - mu) * rstd) + s.lnb[f];
    }
    if (p == MB - 1) {  // b -= tau sum_s lr_s G_s (row p: g)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int f = lane + 32 * hh;
        float u = tau * s.lr[p] * g[hh];
        for (int sr = 0; sr < p; ++sr) u += tau * s.lr[sr] * s.G[sr][f];
        a.b[pid * F + f] = bias[hh] - u;
      }
    }
  }
  if (p != MB - 1) return;

  // the mini-batch's end: W[f, j] -= sum_s (tau lr_s G_s[j]) K_s[f], thread (h, j) for f in its half
  __syncthreads();  // row p of G (warp 0)
  float cg[MB];
#pragma unroll
  for (int r = 0; r < MB; ++r) cg[r] = tau * s.lr[r] * s.G[r][j];
  float *Wo = a.W + pid * F * F + j;
#pragma unroll 4
  for (int f = 32 * h; f < 32 * h + 32; ++f) {
    float u = 0.0f;
#pragma unroll
    for (int r = 0; r < MB; ++r) u += s.K[r][f] * cg[r];
    __stcs(Wo + f * F, s.W[f * F + j] - u);
  }
}

// the launch for one pair of types (dispatch_decode_dtypes)
struct LinearLaunch {
  const LinearDecodeArgs &a;
  bool pdl;
  cudaStream_t stream;
  template <typename T, typename L>
  cudaError_t operator()() const {
    return launch_decode_kernel<linear_decode_kernel<T, L>>(a, a.BH, THREADS, 0, pdl, stream);
  }
};

}  // namespace

cudaError_t launch_linear_decode(const LinearDecodeArgs &a, DecodeDtype act, DecodeDtype ln, bool pdl,
                                 cudaStream_t stream) {
  if (a.BH <= 0) return cudaSuccess;
  return dispatch_decode_dtypes(act, ln, LinearLaunch{a, pdl, stream});
}

}  // namespace ttt
