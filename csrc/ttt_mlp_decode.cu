// TTT-MLP decode step in CUDA: one CTA of 256 threads per (sequence, head), W2 held in shared memory.
//
// The math is the Triton kernels' (ttt_infer/kernels/decode/mlp.py, MATH.md "Decode traffic"): inside a
// mini-batch W1, b1, W2, b2 stay at the mini-batch's starting value, the rows (k, g1, x2, g2, lr) of the tokens
// so far are kept, W is written once per mini-batch. Why CUDA: the Triton versions read W2 twice (g2 needs all
// of z2 = gelu(k W1) W2 first, then g1 and z2bar need W2 again) or hold both weights in registers (one program
// an SM); here W2 (64 KB fp32) is copied to shared memory once (cp.async) and read three times from there, while
// W1 is read once into registers, one column of W1 per thread:
//
//   thread j (hidden unit j):  z1k_j = k . W1[:, j] + b1_j,  z1q_j = q . W1[:, j] + b1_j     (W1 in registers)
//   threads (4 f, 16 j):       z2k_f = b2_f + sum_j gelu(z1k_j) W2[j, f]                     (W2 in smem)
//   warp 0:                    g2 = LN-L2 backward(z2k; v - k)
//   thread j:                  g1_j = gelu'(z1k_j) sum_f W2[j, f] g2_f                       (W2 in smem)
//                              z1bar_j = z1q_j - tau (sum_{s<p} a1_s G1[s, j] + a1_p g1_j),  x2bar = gelu(z1bar)
//   threads (4 f, 16 j):       z2bar_f = b2_f + sum_j x2bar_j W2[j, f] - tau sum_{s<=p} a2_s G2[s, f]
//   warp 0:                    out = q + LN(z2bar)
//   with a1_s = lr_s (K_s . q + 1), a2_s = lr_s (X2_s . x2bar + 1); at p = 15 the rank-16 updates of W1, b1,
//   W2 (in shared memory, then copied out), b2.
//
// Shared memory: 64 KB (W2) + ~9 KB a CTA: three CTAs an SM on sm_90 (two on sm_80). CTAS (template) is the
// register budget: 3 -> at most 80 registers a thread.

#include "ttt_decode_device.cuh"

namespace ttt {
namespace {

using namespace decode_dev;  // F, MB and the helpers both CUDA decode steps use (ttt_decode_device.cuh)

constexpr int H = 256;
constexpr int THREADS = 256;
constexpr float GELU_C = 0.7978845608028654f;  // sqrt(2 / pi)

__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.0f + tanhf(GELU_C * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float gelu_bwd(float x) {
  const float t = tanhf(GELU_C * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * 0.044715f * x * x);
}

// One halving step of warp_sum16: lanes with bit O set keep v[i + N] (i < N), the others v[i]; each adds its
// partner's copy of the index it keeps.
template <int N, int O>
__device__ __forceinline__ void halve(float (&v)[MB], int lane) {
  const bool upper = lane & O;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float send = upper ? v[i] : v[i + N];
    const float keep = upper ? v[i + N] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
  }
}

// Sums v[s] over the warp's 32 lanes for the 16 values s (16 shuffles); lane L ends with the sum for s = L >> 1.
__device__ __forceinline__ float warp_sum16(float (&v)[MB], int lane) {
  halve<8, 16>(v, lane);
  halve<4, 8>(v, lane);
  halve<2, 4>(v, lane);
  halve<1, 2>(v, lane);
  return v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
}


// W1's first read (z1) with an L2 eviction policy: evict-last at the mini-batch's end (p = 15), where the update
// reads W1 again some 20-40 us later, evict-first otherwise (as a streaming load); not cached in L1 either way.
// Measured (run 51, 64 rows): the second read still comes from DRAM (the p = 15 launch's reads hit L2 9.8%).
__device__ __forceinline__ unsigned long long w1_policy(bool keep) {
  unsigned long long last, first;
  asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(last));
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(first));
  return keep ? last : first;
}
__device__ __forceinline__ float ld_w1(const float *g, unsigned long long policy) {
  float v;
  asm("ld.global.L1::no_allocate.L2::cache_hint.f32 %0, [%1], %2;" : "=f"(v) : "l"(g), "l"(policy));
  return v;
}

// The optional timeline (a.trace, scripts/trace_decode_step.py): thread 0 of each CTA writes the SM it runs on
// and %globaltimer (ns) at the kernel's entry and after each phase's barrier. A separate instantiation
// (TRACE), launched only when a.trace is set, so that the kernels that run normally are compiled without it: a
// runtime check in the one kernel kept the pointer live and grew cu:8:3's spills from 4 / 8 to 20 / 24 bytes; as
// a template parameter, the traced kernels compile to the same registers and spills as the others (ptxas -v).
enum MlpTraceSlot : int {
  kTraceSm = 0,      // %smid
  kTraceEntry,       // the kernel's first instruction
  kTraceWaited,      // past griddepcontrol.wait
  kTraceInputs,      // q, k, v, the LayerNorm's weights in shared memory
  kTraceZ1,          // z1 of k and q, a1, W2 arrived
  kTraceZ2k,         // z2 of k (partial sums)
  kTraceG2,          // g2 (warp 0's LayerNorm backward)
  kTraceG1,          // g1, x2bar, the X2 . x2bar sums
  kTraceZ2bar,       // z2bar (partial sums)
  kTraceOut,         // out written (warp 0)
  kTraceW2Out,       // the mini-batch-end update: W2 and b2 written (p = 15 only)
  kTraceUpdate,      // the mini-batch-end update: W1 and b1 written (p = 15 only)
};
template <bool TRACE>
__device__ __forceinline__ void trace_mark(const MlpDecodeArgs &a, long long pid, MlpTraceSlot slot) {
  if constexpr (!TRACE) return;
  if (threadIdx.x == 0) {
    long long v;
    if (slot == kTraceSm) {
      unsigned sm;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      v = sm;
    } else {
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
    }
    a.trace[pid * kMlpTraceSlots + slot] = v;
  }
}

struct alignas(16) Smem {  // float4 reads of q, k, x2, part, g2
  float q[F], k[F], tgt[F], lnw[F], lnb[F];  // tgt = v - k
  float x2[H];                                // gelu(z1k), then x2bar
  float part[THREADS / 32][F];                // z2's partial sums, one row a warp (z2_quad)
  float g2[F];
  float a1[MB], lr[MB];
  float red[THREADS / 32][MB];                // per-warp sums of X2_s . x2bar
  float rows[MB][F];                          // the update at p = 15: tau lr_s K_s, then G2_s
};

// W2 in shared memory: row j's 16-byte chunk c sits at chunk c ^ (j % 8) of the row (a swizzle), so that a
// thread reading its own row chunk by chunk (g1, the update) hits another bank group than the 7 other lanes of
// its quarter warp while the chunk of g2 / of the update's rows it pairs with is the same for all lanes (a
// broadcast); z2_quad's quarter warps still read 8 distinct bank groups of one row. (j % 8, not j % 16: z2_quad's
// addresses then repeat every 8 rows, which keeps cu:8:2 free of spills.)
__device__ __forceinline__ int w2_chunk(int j, int c) { return c ^ (j & 7); }
// the chunk of shared memory (mod THREADS chunks) that thread t copies W2's chunk t (mod THREADS) to or from
__device__ __forceinline__ int w2_copy_chunk(int t) { return (t & ~15) | w2_chunk(t >> 4, t & 15); }

// z2 = x2 W2 (W2 [H, F] in shared memory) in partial sums: thread t sums features 4 fq .. 4 fq + 3 (fq = t % 16)
// over the hidden units 16 hg .. 16 hg + 15 (hg = t / 16): W2 read as float4 (a quarter warp reads 128
// contiguous bytes), x2 as float4 broadcasts, four independent chains of 16; the warp's two groups are added
// (lanes L and L ^ 16) and lanes < 16 store the warp's row of s.part: z2[f] = sum over the 8 rows.
__device__ __forceinline__ void z2_quad(const float *W2s, const float *x2, float4 corr, float (*part)[F], int t) {
  const int fq = t & 15, hg = t >> 4;
  const float4 *w = reinterpret_cast<const float4 *>(W2s + hg * 16 * F);
  const float4 *x = reinterpret_cast<const float4 *>(x2 + hg * 16);
  float4 acc = corr;
#pragma unroll 2  // 8 rows' loads in flight (fully unrolled: cu:8:2 spills)
  for (int c = 0; c < 4; ++c) {
    const float4 xx = x[c];
    const float xs[4] = {xx.x, xx.y, xx.z, xx.w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float4 ww = w[(4 * c + u) * (F / 4) + w2_chunk(4 * c + u, fq)];  // row 16 hg + 4 c + u
      acc.x += xs[u] * ww.x;
      acc.y += xs[u] * ww.y;
      acc.z += xs[u] * ww.z;
      acc.w += xs[u] * ww.w;
    }
  }
  acc.x += __shfl_xor_sync(0xffffffffu, acc.x, 16);
  acc.y += __shfl_xor_sync(0xffffffffu, acc.y, 16);
  acc.z += __shfl_xor_sync(0xffffffffu, acc.z, 16);
  acc.w += __shfl_xor_sync(0xffffffffu, acc.w, 16);
  if ((t & 31) < 16) *reinterpret_cast<float4 *>(&part[t >> 5][4 * fq]) = acc;
}

// b2[f] + the 8 partial sums of z2 for feature f
__device__ __forceinline__ float z2_total(float b2f, const float (*part)[F], int f) {
  float z = b2f;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) z += part[w][f];
  return z;
}

template <typename T, typename L, int CTAS, bool TRACE>
__global__ void __launch_bounds__(THREADS, CTAS) mlp_decode_kernel(const MlpDecodeArgs a) {
  extern __shared__ float4 dyn[];
  float *W2s = reinterpret_cast<float *>(dyn);  // [H][F]
  __shared__ Smem s;
  const long long pid = blockIdx.x;
  trace_mark<TRACE>(a, pid, kTraceEntry);

  pdl_wait_then_release();
  trace_mark<TRACE>(a, pid, kTraceSm);
  trace_mark<TRACE>(a, pid, kTraceWaited);
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int head = static_cast<int>(pid % a.nh);
  const int p = static_cast<int>(*a.pos % MB);
  const float tau = a.tau[p];

  // W2 -> shared memory (16 B copies, coalesced), W1's column t -> registers
  const float *W2g = a.W2 + pid * H * F;
  // thread t copies chunk t % 16 of rows t / 16 + 16 i (i < 16): all at the same place of the swizzle
  cp_async_rows<THREADS, 0, H * F / 4 / THREADS>(static_cast<unsigned>(__cvta_generic_to_shared(W2s + 4 * w2_copy_chunk(t))),
                                        W2g + 4 * t);
  // W1's column t: all of it at once (CTAS = 2), or (CTAS = 3, 80 registers) in chunks of W1C, the next chunk
  // loading while this one is used, so the column does not stay live across the barrier (ptxas spilled it)
  constexpr int W1C = CTAS >= 3 ? 16 : F;
  // CTAS = 3: the mini-batch's rows of G1 / X2 for the update at p = 15 are read again there instead of held
  // from the g1 phase through the chain (ptxas spilled them at 80 registers)
  constexpr bool RELOAD = CTAS >= 3;
  const float *W1g = a.W1 + pid * F * H + t;
  const unsigned long long w1_pol = w1_policy(p == MB - 1);
  float w1[W1C];
#pragma unroll
  for (int f = 0; f < W1C; ++f) w1[f] = ld_w1(W1g + f * H, w1_pol);
  const float b1 = a.b1[pid * H + t];

  // the token's vectors; row p of K and LR
  const T *q = static_cast<const T *>(a.q) + pid * F;
  const T *k = static_cast<const T *>(a.k) + pid * F;
  if (t < F) {
    s.q[t] = to_f(q[t]);
  } else if (t < 2 * F) {
    const int f = t - F;
    const float kf = to_f(k[f]);
    const T *v = static_cast<const T *>(a.v) + (pid / a.nh) * a.sv + static_cast<long long>(head) * F;
    s.k[f] = kf;
    s.tgt[f] = to_f(v[f]) - kf;
    a.K[(pid * MB + p) * F + f] = kf;
  } else if (t < 3 * F) {
    s.lnw[t - 2 * F] = to_f(static_cast<const L *>(a.ln_w)[head * F + t - 2 * F]);
  } else {
    s.lnb[t - 3 * F] = to_f(static_cast<const L *>(a.ln_b)[head * F + t - 3 * F]);
  }
  if (t < MB) {
    const float lr_t = t < p ? a.LR[pid * MB + t] : (t == p ? a.lr[pid] : 0.0f);
    s.lr[t] = lr_t;
    if (t == p) a.LR[pid * MB + p] = lr_t;
  }
  // rows s = warp, warp + 8 of K (for a1) and, for the (f, group) threads, rows group + 4i of G2 (for z2bar)
  const float *Kg = a.K + pid * MB * F;
  float kr[2][2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int sr = warp + 8 * r;
    kr[r][0] = sr < p ? Kg[sr * F + lane] : 0.0f;
    kr[r][1] = sr < p ? Kg[sr * F + lane + 32] : 0.0f;
  }
  // row hg = t / 16 of G2, features 4 fq .. 4 fq + 3 (z2bar's correction, summed in z2_quad's layout)
  const int fo = t & (F - 1), fq = t & 15, hg = t >> 4;
  const float4 g2r = hg < p ? *reinterpret_cast<const float4 *>(a.G2 + (pid * MB + hg) * F + 4 * fq)
                            : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float b2 = a.b2[pid * F + fo];
  __syncthreads();
  trace_mark<TRACE>(a, pid, kTraceInputs);

  // z1 of k and q (W1 dies here); a1 for rows s <= p
  float z1k = b1, z1q = b1;
#pragma unroll
  for (int c = 0; c < F; c += W1C) {
    float next[W1C];
    if (c + W1C < F) {
#pragma unroll
      for (int f = 0; f < W1C; ++f) next[f] = ld_w1(W1g + (c + W1C + f) * H, w1_pol);
    }
#pragma unroll
    for (int f = 0; f < W1C; f += 4) {
      const float4 kk = *reinterpret_cast<const float4 *>(&s.k[c + f]);
      const float4 qq = *reinterpret_cast<const float4 *>(&s.q[c + f]);
      z1k += kk.x * w1[f] + kk.y * w1[f + 1] + kk.z * w1[f + 2] + kk.w * w1[f + 3];
      z1q += qq.x * w1[f] + qq.y * w1[f + 1] + qq.z * w1[f + 2] + qq.w * w1[f + 3];
    }
    if (c + W1C < F) {
#pragma unroll
      for (int f = 0; f < W1C; ++f) w1[f] = next[f];
    }
  }
  const float x2k = gelu(z1k);
  s.x2[t] = x2k;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int sr = warp + 8 * r;
    float d = sr == p ? s.k[lane] * s.q[lane] + s.k[lane + 32] * s.q[lane + 32]
                      : kr[r][0] * s.q[lane] + kr[r][1] * s.q[lane + 32];
    d = warp_sum(d);
    if (lane == 0) s.a1[sr] = s.lr[sr] * (d + 1.0f);  // lr_s = 0 for s > p
  }
  cp_async_wait_all();
  __syncthreads();
  trace_mark<TRACE>(a, pid, kTraceZ1);
  // this thread's hidden unit in the mini-batch's rows s < p (used after g1; loaded after the barrier so that
  // they do not share registers with W1's column)
  const float *G1g = a.G1 + pid * MB * H + t;
  const float *X2g = a.X2 + pid * MB * H + t;
  float g1r[MB], x2r[MB];
#pragma unroll
  for (int r = 0; r < MB; ++r) {
    g1r[r] = r < p ? G1g[r * H] : 0.0f;
    x2r[r] = r < p ? X2g[r * H] : 0.0f;
  }

  // z2 of k
  z2_quad(W2s, s.x2, make_float4(0.0f, 0.0f, 0.0f, 0.0f), s.part, t);
  __syncthreads();
  trace_mark<TRACE>(a, pid, kTraceZ2k);

  // g2 = LN-L2 backward of z2k against v - k (warp 0, two features a lane)
  if (warp == 0) {
    float z[2], g[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int f = lane + 32 * h;  // b2 of feature lane is this thread's b2 (fo = lane in warp 0)
      z[h] = z2_total(h == 0 ? b2 : a.b2[pid * F + f], s.part, f);
    }
    warp_ln_l2_bwd(z, s.lnw, s.lnb, s.tgt, a.eps, lane, g);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int f = lane + 32 * h;
      s.g2[f] = g[h];
      a.G2[(pid * MB + p) * F + f] = g[h];
    }
  }
  __syncthreads();
  trace_mark<TRACE>(a, pid, kTraceG2);

  // g1 (row t of W2, its chunks in the swizzle's order: g2's chunk a broadcast), z1bar, x2bar; the X2_s . x2bar
  // sums
  {
    float d = 0.0f;
    const float *w = W2s + t * F;
#pragma unroll 4  // fully unrolled, its 16 W2 loads in flight made ptxas spill at 128 registers
    for (int i = 0; i < F; i += 4) {
      const float4 ww = *reinterpret_cast<const float4 *>(w + 4 * w2_chunk(t, i >> 2));
      const float4 gg = *reinterpret_cast<const float4 *>(&s.g2[i]);
      d += ww.x * gg.x + ww.y * gg.y + ww.z * gg.z + ww.w * gg.w;
    }
    const float g1 = d * gelu_bwd(z1k);
    a.G1[(pid * MB + p) * H + t] = g1;
    a.X2[(pid * MB + p) * H + t] = x2k;
    float c = s.a1[p] * g1;
#pragma unroll
    for (int r = 0; r < MB; ++r) c += s.a1[r] * g1r[r];  // g1r[r] = 0 for r >= p
    const float x2bar = gelu(z1q - tau * c);
    float prod[MB];
#pragma unroll
    for (int r = 0; r < MB; ++r) prod[r] = (r < p ? x2r[r] : (r == p ? x2k : 0.0f)) * x2bar;
    const float tot = warp_sum16(prod, lane);
    if ((lane & 1) == 0) s.red[warp][lane >> 1] = tot;
    s.x2[t] = x2bar;  // x2k's readers (z2k) are past the barrier after them
    if constexpr (!RELOAD) {
      if (p == MB - 1) {  // the update at the mini-batch's end reads this token's row from the arrays
        g1r[MB - 1] = g1;
        x2r[MB - 1] = x2k;
      }
    }
  }
  __syncthreads();
  trace_mark<TRACE>(a, pid, kTraceG1);

  // z2bar: as z2k, each thread's sums starting from -tau a2_s G2_s of its row s = hg (s <= p)
  {
    float4 corr = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (hg <= p) {
      float dot = 0.0f;
#pragma unroll
      for (int w8 = 0; w8 < THREADS / 32; ++w8) dot += s.red[w8][hg];
      const float c = -tau * s.lr[hg] * (dot + 1.0f);
      const float4 g = hg < p ? g2r : *reinterpret_cast<const float4 *>(&s.g2[4 * fq]);
      corr = make_float4(c * g.x, c * g.y, c * g.z, c * g.w);
    }
    z2_quad(W2s, s.x2, corr, s.part, t);
  }
  __syncthreads();
  trace_mark<TRACE>(a, pid, kTraceZ2bar);

  // out = q + LN(z2bar) (warp 0)
  if (warp == 0) {
    float z[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int f = lane + 32 * h;
      z[h] = z2_total(a.b2[pid * F + f], s.part, f);
    }
    float mu, rstd;
    warp_ln_stats(z, a.eps, mu, rstd);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int f = lane + 32 * h;
      a.out[pid * F + f] = s.q[f] + s.lnw[f] * ((z[h] - mu) * rstd) + s.lnb[f];
    }
  }
  trace_mark<TRACE>(a, pid, kTraceOut);
  if (p != MB - 1) return;

  // the mini-batch's end: W -= tau sum_s lr_s (outer products of its rows); every row is in memory now. W2 first:
  // it is in shared memory and read no more after z2bar's barrier; updated there, then written out. Then W1 is
  // read again into the same shared memory with cp.async (one round trip for all of it, where a read-modify-write
  // loop in registers waited for ~16) and updated from there. Two round trips to memory in all (G2's and X2's
  // rows; W1, K's and G1's rows). The state's writes are streaming stores.
  // RELOAD: this thread's hidden unit in all 16 rows read again (its row p stored by this thread above) rather
  // than kept from the g1 phase (~1% more bytes: 32 KB a pair, 1 token in 16; at most these hit L2, run 51); in
  // flight together with G2's rows
  const float *G1u = a.G1 + pid * MB * H + t, *X2u = a.X2 + pid * MB * H + t;
  {
    float cx[MB];
#pragma unroll
    for (int r = 0; r < MB; ++r) cx[r] = RELOAD ? X2u[r * H] : x2r[r];
    for (int i = t; i < MB * F; i += THREADS) s.rows[i / F][i % F] = a.G2[pid * MB * F + i];
    __syncthreads();
#pragma unroll
    for (int r = 0; r < MB; ++r) cx[r] *= tau * s.lr[r];
    float *w = W2s + t * F;
#pragma unroll
    for (int i = 0; i < F; i += 4) {
      float *wc = w + 4 * w2_chunk(t, i >> 2);
      float4 ww = *reinterpret_cast<float4 *>(wc);
#pragma unroll
      for (int r = 0; r < MB; ++r) {
        const float4 gg = *reinterpret_cast<const float4 *>(&s.rows[r][i]);
        ww.x -= cx[r] * gg.x;
        ww.y -= cx[r] * gg.y;
        ww.z -= cx[r] * gg.z;
        ww.w -= cx[r] * gg.w;
      }
      *reinterpret_cast<float4 *>(wc) = ww;
    }
    if (t < F) {
      float bsum = 0.0f;
#pragma unroll
      for (int r = 0; r < MB; ++r) bsum += tau * s.lr[r] * s.rows[r][t];
      a.b2[pid * F + t] = b2 - bsum;
    }
  }
  __syncthreads();
  float4 *W2o = reinterpret_cast<float4 *>(a.W2 + pid * H * F);
#pragma unroll
  for (int i = 0; i < H * F / 4 / THREADS; ++i) __stcs(W2o + i * THREADS + t, dyn[i * THREADS + w2_copy_chunk(t)]);
  __syncthreads();  // shared memory's W2 read out: W1 ([F][H], unswizzled: thread t reads column t) goes there
  trace_mark<TRACE>(a, pid, kTraceW2Out);
  float *W1w = a.W1 + pid * F * H;
  cp_async_rows<THREADS, 0, F * H / 4 / THREADS>(static_cast<unsigned>(__cvta_generic_to_shared(W2s + 4 * t)), W1w + 4 * t);
  for (int i = t; i < MB * F; i += THREADS) {
    const int sr = i / F;
    s.rows[sr][i % F] = tau * s.lr[sr] * a.K[(pid * MB + sr) * F + i % F];
  }
  if constexpr (RELOAD) {
#pragma unroll
    for (int r = 0; r < MB; ++r) g1r[r] = G1u[r * H];
  }
  {
    float bsum = 0.0f;
#pragma unroll
    for (int r = 0; r < MB; ++r) bsum += tau * s.lr[r] * g1r[r];
    a.b1[pid * H + t] = b1 - bsum;
  }
  cp_async_wait_all();
  __syncthreads();
#pragma unroll 4
  for (int f = 0; f < F; ++f) {
    float u = 0.0f;
#pragma unroll
    for (int r = 0; r < MB; ++r) u += s.rows[r][f] * g1r[r];
    __stcs(W1w + f * H + t, W2s[f * H + t] - u);
  }
  trace_mark<TRACE>(a, pid, kTraceUpdate);  // thread 0's stores issued (not necessarily landed)
}

// the launch for one pair of types (dispatch_decode_dtypes): the CTAs-an-SM budget and the traced flag
struct MlpLaunch {
  const MlpDecodeArgs &a;
  bool three, pdl;
  cudaStream_t stream;
  template <typename T, typename L>
  cudaError_t operator()() const {
    constexpr int dyn = H * F * sizeof(float);  // W2
    const bool traced = a.trace != nullptr;
    if (three) {
      return traced ? launch_decode_kernel<mlp_decode_kernel<T, L, 3, true>>(a, a.BH, THREADS, dyn, pdl, stream)
                    : launch_decode_kernel<mlp_decode_kernel<T, L, 3, false>>(a, a.BH, THREADS, dyn, pdl, stream);
    }
    return traced ? launch_decode_kernel<mlp_decode_kernel<T, L, 2, true>>(a, a.BH, THREADS, dyn, pdl, stream)
                  : launch_decode_kernel<mlp_decode_kernel<T, L, 2, false>>(a, a.BH, THREADS, dyn, pdl, stream);
  }
};

}  // namespace

cudaError_t launch_mlp_decode(const MlpDecodeArgs &a, DecodeDtype act, DecodeDtype ln, int ctas_per_sm, bool pdl,
                              cudaStream_t stream) {
  if (a.BH <= 0) return cudaSuccess;
  return dispatch_decode_dtypes(act, ln, MlpLaunch{a, ctas_per_sm >= 3, pdl, stream});
}

}  // namespace ttt
