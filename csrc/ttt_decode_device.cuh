// Device and launch helpers shared by the CUDA decode kernels (ttt_mlp_decode.cu, ttt_linear_decode.cu):
// activation loads to fp32, warp sums and the inner LayerNorm's statistics, 16-byte cp.async copies, the
// programmatic-dependent-launch entry, and the host side's dtype dispatch and launch. Plain CUDA: no torch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ttt_decode.h"

namespace ttt {
namespace decode_dev {

constexpr int F = 64;   // head dim
constexpr int MB = 16;  // mini-batch

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// LayerNorm statistics of 64 features held two a lane (features lane and lane + 32) by one warp
__device__ __forceinline__ void warp_ln_stats(const float (&z)[2], float eps, float &mu, float &rstd) {
  mu = warp_sum(z[0] + z[1]) * (1.0f / F);
  const float var = warp_sum((z[0] - mu) * (z[0] - mu) + (z[1] - mu) * (z[1] - mu)) * (1.0f / F);
  rstd = rsqrtf(var + eps);
}

// The inner LayerNorm's fused L2-loss gradient, d/dz 1/2 ||lnw * LN(z) + lnb - tgt||^2, for 64 features held two
// a lane (lane, lane + 32) by one warp; lnw, lnb, tgt: [64] (shared memory)
__device__ __forceinline__ void warp_ln_l2_bwd(const float (&z)[2], const float *lnw, const float *lnb,
                                               const float *tgt, float eps, int lane, float (&g)[2]) {
  float mu, rstd, xh[2], gh[2];
  warp_ln_stats(z, eps, mu, rstd);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int f = lane + 32 * h;
    xh[h] = (z[h] - mu) * rstd;
    gh[h] = lnw[f] * (lnw[f] * xh[h] + lnb[f] - tgt[f]);
  }
  const float sg = warp_sum(gh[0] + gh[1]);
  const float sgx = warp_sum(gh[0] * xh[0] + gh[1] * xh[1]);
#pragma unroll
  for (int h = 0; h < 2; ++h) g[h] = (F * gh[h] - sg - xh[h] * sgx) * (rstd / F);
}

// 16-byte asynchronous copy global -> shared, both addresses base + OFF (one base register each)
template <int OFF>
__device__ __forceinline__ void cp_async16(unsigned smem, const void *gmem) {
  asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%2], 16;\n" ::"r"(smem), "l"(gmem), "n"(OFF));
}
// copies 16-byte chunks I .. N-1, each STRIDE chunks after the last (the CTA's threads side by side)
template <int STRIDE, int I, int N>
__device__ __forceinline__ void cp_async_rows(unsigned smem, const void *gmem) {
  if constexpr (I < N) {
    cp_async16<I * STRIDE * 16>(smem, gmem);
    cp_async_rows<STRIDE, I + 1, N>(smem, gmem);
  }
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::); }

// programmatic dependent launch (ttt_infer/kernels/pdl.py): wait for the grid ahead (a no-op when not launched
// with it), then let the next kernel's CTAs be scheduled
__device__ __forceinline__ void pdl_wait_then_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace decode_dev

// Calls launch.template operator()<T, L>() for the activation type T of `act` and the LayerNorm parameters'
// type L (fp32, or T itself); any other pair is an invalid value. (A functor with a member template rather
// than a C++20 templated lambda: the image's nvcc 12.5 front end is not available to test here.)
template <typename Launch>
cudaError_t dispatch_decode_dtypes(DecodeDtype act, DecodeDtype ln, const Launch &launch) {
  if (ln != DecodeDtype::fp32 && ln != act) return cudaErrorInvalidValue;
  const bool ln32 = ln == DecodeDtype::fp32;
  switch (act) {
    case DecodeDtype::bf16:
      return ln32 ? launch.template operator()<__nv_bfloat16, float>()
                  : launch.template operator()<__nv_bfloat16, __nv_bfloat16>();
    case DecodeDtype::fp16:
      return ln32 ? launch.template operator()<__half, float>() : launch.template operator()<__half, __half>();
    default: return launch.template operator()<float, float>();
  }
}

// Launches Kern<<<grid, threads, dyn_smem, stream>>>(a), with programmatic dependent launch when pdl is set. The
// first launch of each kernel (and process) asks for the largest shared-memory carveout and, when dyn_smem is
// above the default 48 KB, for that much dynamic shared memory.
template <auto Kern, typename Args>
cudaError_t launch_decode_kernel(const Args &a, int grid, int threads, int dyn_smem, bool pdl, cudaStream_t stream) {
  static const cudaError_t attr = [&] {
    cudaError_t e = cudaSuccess;
    if (dyn_smem > 48 * 1024) e = cudaFuncSetAttribute(Kern, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn_smem);
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(Kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    return e;
  }();
  if (attr != cudaSuccess) return attr;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = dyn_smem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[1];
  attrs[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, Kern, a);
}

}  // namespace ttt
