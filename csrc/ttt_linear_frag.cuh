// Fragment-level helpers of the TTT-Linear prefill kernel v4/v6 (csrc/ttt_linear_prefill.cu; also used by the
// one-barrier v5 on branch prefill-v5): m16n8k16 MMAs on raw fragments, movmatrix, ldmatrix of 16x16 blocks, the
// per-warp row partials of a LayerNorm and their combination, phase 1 (Z, Zq, A = Q K^T) and M's fragment.
// Layout (f = 64, mini-batch 16): warp w owns columns 16w..16w+15 in the m16n8 accumulator layout (lane l:
// rows l/4 and l/4 + 8, columns 16w + 2 (l%4) + {0, 1, 8, 9}); see ttt_linear_prefill.cu's header.
#pragma once

#include "ttt_common.cuh"

namespace ttt {

namespace lin4 {

// m16n8k16 MMA, fp32 accumulate: d0 = (row g, cols 2q, 2q+1), d1 = (row g+8, same cols) of the 16x8 tile
// (g = lane/4, q = lane%4); a = the A fragment {(g, 2q), (g+8, 2q), (g, 2q+8), (g+8, 2q+8)} (pairs along k),
// b0 = (k = 2q, 2q+1; n = g), b1 = (k = 2q+8, 2q+9; n = g).
template <typename TT>
__device__ inline void mma16816(float2 &d0, float2 &d1, const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<TT, bf16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d0.x), "+f"(d0.y), "+f"(d1.x), "+f"(d1.y)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d0.x), "+f"(d0.y), "+f"(d1.x), "+f"(d1.y)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Transpose of an 8x8 16-bit matrix held one row per 4 lanes (lane l: row l/4, cols 2(l%4), +1): afterwards
// lane l holds elements (rows 2(l%4), 2(l%4)+1; col l/4) of the original. Not volatile (pure).
__device__ inline uint32_t movm(uint32_t x) {
  uint32_t y;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// The 16x16 block at column col0 of a 16-row padded 16-bit smem tile, in accumulator order: r[k] holds the
// pair (row g + 8 (k & 1), cols col0 + 2q + 8 (k >> 1), +1). (ldmatrix matrices: lanes 0-7 rows 0-7 cols
// 0-7, lanes 8-15 rows 8-15 cols 0-7, lanes 16-23 rows 0-7 cols 8-15, lanes 24-31 rows 8-15 cols 8-15.)
template <typename TT>
__device__ inline void ld_block(uint32_t (&r)[4], const TT *smem, int col0, int lane) {
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  ldsm4(r[0], r[1], r[2], r[3], base + 2u * ((lane % 16) * PB + col0 + 8 * (lane / 16)));
}

// Element e = 2k + h of a lane's 8 values: data[k].x (h = 0) / .y (h = 1); row g + 8 ((e >> 1) & 1), column
// slot (e >> 2) * 2 + (e & 1) (columns cq, cq + 1, cq + 8, cq + 9).
__device__ constexpr int row_of(int e) { return (e >> 1) & 1; }
__device__ constexpr int col_of(int e) { return 2 * (e >> 2) + (e & 1); }

template <typename TT>
__device__ inline void unpack8(float (&x)[8], const uint32_t (&r)[4]) {
  using T2 = typename io<TT>::T2;
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const float2 f = io<TT>::to_f2(*reinterpret_cast<const T2 *>(&r[k]));
    x[2 * k] = f.x;
    x[2 * k + 1] = f.y;
  }
}

// Where the partial of row r from warp w lives in a [4 * MB] float2 exchange buffer. v6: warp-major (w MB + r):
// the 16 rows one warp writes are 128 contiguous bytes (one wavefront; row-major put rows 0, 4, 8, 12 on one
// bank), and a lane reads its row's 4 partials with 4 conflict-free 8-byte loads. V4: row-major (4 r + w), read
// as two 16-byte loads of which ncu (session 5) counted twice the ideal wavefronts.
template <bool V4>
__device__ constexpr int red_index(int r, int w) { return V4 ? 4 * r + w : w * MB + r; }

// The partials of warps w0 and w0 + 1 for row r as (S_w0, M_w0, S_w0+1, M_w0+1).
template <bool V4>
__device__ inline float4 red_pair(const float2 *red, int r, int w0) {
  if constexpr (V4) {
    return *reinterpret_cast<const float4 *>(&red[red_index<V4>(r, w0)]);
  } else {
    const float2 a = red[red_index<V4>(r, w0)], b = red[red_index<V4>(r, w0 + 1)];
    return make_float4(a.x, a.y, b.x, b.y);
  }
}

// This warp's partials of one LayerNorm's row statistics, written to red[red_index(row, w)] for the lane's own row
// ro = g + 8 (q & 1): (sum over the warp's 16 columns, sum of squares about that 16-column mean). Quad
// sums: the row sums for both rows (all 4 lanes need both means to centre), then the squares reduced
// "transposed" (each lane keeps one row after the first exchange: 2 shuffles for the two rows).
template <bool V4>
__device__ inline void ln_partials(const float (&z)[8], float2 *red, int w, int lane) {
  const bool odd = lane & 1;
  float s0 = (z[0] + z[1]) + (z[4] + z[5]);
  float s1 = (z[2] + z[3]) + (z[6] + z[7]);
  s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
  s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
  s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
  s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
  float q0 = 0.f, q1 = 0.f;
#pragma unroll
  for (int e = 0; e < 8; e++) {
    const float d = fmaf(row_of(e) ? s1 : s0, -1.f / 16, z[e]);
    if (row_of(e)) q1 = fmaf(d, d, q1);
    else q0 = fmaf(d, d, q0);
  }
  float keep = odd ? q1 : q0;
  const float send = odd ? q0 : q1;
  keep += __shfl_xor_sync(0xffffffffu, send, 1);
  keep += __shfl_xor_sync(0xffffffffu, keep, 2);
  red[red_index<V4>(lane / 4 + 8 * (lane & 1), w)] = make_float2(odd ? s1 : s0, keep);
}

// After the barrier: the LayerNorm of the lane's two rows from the 4 warps' partials. Each lane combines
// its own row (ro = g + 8 (q & 1)) and gets the other from its quad partner (lane ^ 1). Returns, for row
// r = 0 (g) and 1 (g + 8), rstd[r] and nmr[r] = -mean rstd, so that xh = z rstd + nmr.
template <bool V4>
__device__ inline float ln_stats(const float2 *red, int lane, float (&rstd)[2], float (&nmr)[2]) {
  const bool odd = lane & 1;
  const float4 u = red_pair<V4>(red, lane / 4 + 8 * (lane & 1), 0);  // S0 M0 S1 M1
  const float4 v = red_pair<V4>(red, lane / 4 + 8 * (lane & 1), 2);  // S2 M2 S3 M3
  const float nmean = ((u.x + u.z) + (v.x + v.z)) * (-1.f / F);  // -mean (no separate negation)
  const float d0 = fmaf(u.x, 1.f / 16, nmean), d1 = fmaf(u.z, 1.f / 16, nmean);
  const float d2 = fmaf(v.x, 1.f / 16, nmean), d3 = fmaf(v.z, 1.f / 16, nmean);
  const float m2 = ((u.y + u.w) + (v.y + v.w)) + 16.f * (fmaf(d0, d0, d1 * d1) + fmaf(d2, d2, d3 * d3));
  const float r = rsqrt_ln(m2 * (1.f / F) + LN_EPS);
  const float n = nmean * r;
  const float ro = __shfl_xor_sync(0xffffffffu, r, 1), no = __shfl_xor_sync(0xffffffffu, n, 1);
  rstd[0] = odd ? ro : r;
  rstd[1] = odd ? r : ro;
  nmr[0] = odd ? no : n;
  nmr[1] = odd ? n : no;
  return r;  // rstd of the lane's own row
}

// Phase 1 over the four 16-feature chunks kk (one chunk's K, Q and 16-bit W live at a time):
//   Z += K[:, kk] W[kk, s], Zq += Q[:, kk] W[kk, s]   (s = this warp's 16 columns; accumulators z[k], zq[k]
//   in TK's data[k] order: (row g + 8 (k & 1), columns 2q + 8 (k >> 1)))
// and, for NT = 0 or 1, columns 8 NT..8 NT+7 of A = Q K^T into a0 (row g) and a1 (row g + 8).
// Operands: K and Q chunks by ldmatrix in A-fragment order; W's B fragment (k = feature i, n = column c:
// the pairs W[i..i+1][c] = Wt[c][i..i+1]) is Wt's own row-layout data: n-tile 0 (columns s0..s0+7) =
// rows g of Wt = data[0] (features 2q..) and data[2] (2q + 8..), n-tile 1 = rows g + 8 = data[1], data[3];
// A's B fragment (k = feature, n = row j of K) is K's A fragment at rows 8 NT + g: kr[NT], kr[NT + 2].
template <int NT, typename TT>
__device__ inline void phase1(float2 (&z)[4], float2 (&zq)[4], float2 &a0, float2 &a1, const rt_fl<16, 64> &Wt,
                              uint32_t kbase, uint32_t qbase, int lane) {
  const uint32_t lo = 2u * ((lane % 16) * PB + 8 * (lane / 16));
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    uint32_t kr[4], qr[4], wb[4];
    ldsm4(kr[0], kr[1], kr[2], kr[3], kbase + lo + 32u * kk);
    ldsm4(qr[0], qr[1], qr[2], qr[3], qbase + lo + 32u * kk);
#pragma unroll
    for (int k = 0; k < 4; k++) wb[k] = pack2<TT>(Wt.tiles[0][kk].data[k].x, Wt.tiles[0][kk].data[k].y);
    mma16816<TT>(z[0], z[1], kr, wb[0], wb[2]);
    mma16816<TT>(z[2], z[3], kr, wb[1], wb[3]);
    mma16816<TT>(zq[0], zq[1], qr, wb[0], wb[2]);
    mma16816<TT>(zq[2], zq[3], qr, wb[1], wb[3]);
    if constexpr (NT >= 0) mma16816<TT>(a0, a1, qr, kr[NT], kr[NT + 2]);
  }
}

// Columns 8 NT..8 NT+7 of A (a0: row g, a1: row g + 8; columns 8 NT + 2q, +1) -> M = -eta * (tril(A) + 1)
// (eta[i][j] = tau_i lr_j; the +1 carries the b_bar term), stored as this lane's half of the phase-3 A
// fragment (.x, .y for NT = 0; .z, .w for NT = 1).
template <int NT, typename TT>
__device__ inline void m_store(float2 d0, float2 d1, const float *tau, const float *lr, uint4 *mfrag, int lane) {
  const int g = lane / 4, j0 = 2 * (lane % 4);
  const float2 l = *reinterpret_cast<const float2 *>(&lr[8 * NT + j0]);
  const bool m0 = j0 <= g, m1 = j0 + 1 <= g;  // column 8 NT + j0 (+1) <= row 8 NT + g
  const float ntb = -tau[g + 8];
  float c;
  uint2 out;
  if constexpr (NT == 0) {
    const float nta = -tau[g];
    c = nta * l.x; d0.x = m0 ? fmaf(c, d0.x, c) : 0.f;
    c = nta * l.y; d0.y = m1 ? fmaf(c, d0.y, c) : 0.f;
    c = ntb * l.x; d1.x = fmaf(c, d1.x, c);  // row g + 8 > column j0 + 1
    c = ntb * l.y; d1.y = fmaf(c, d1.y, c);
    out.x = pack2<TT>(d0.x, d0.y);
  } else {
    out.x = 0u;  // rows 0-7, columns 8-15: above the diagonal
    c = ntb * l.x; d1.x = m0 ? fmaf(c, d1.x, c) : 0.f;
    c = ntb * l.y; d1.y = m1 ? fmaf(c, d1.y, c) : 0.f;
  }
  out.y = pack2<TT>(d1.x, d1.y);
  *reinterpret_cast<uint2 *>(reinterpret_cast<uint32_t *>(&mfrag[lane]) + 2 * NT) = out;
}

}  // namespace lin4

}  // namespace ttt
