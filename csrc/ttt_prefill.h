// Launcher interface of the TTT prefill kernels. Plain C++: no torch and no ThunderKittens headers,
// so bindings.cpp (torch) and the .cu files (TK) meet only here.
#pragma once

#include <cuda_runtime.h>

namespace ttt {

enum class InDtype : int { bf16 = 0, fp16 = 1 };

// All pointers are device pointers to contiguous tensors; BH = batch * heads, head dim 64,
// mini-batch 16. State tensors are fp32 and updated in place.
struct LinearPrefillArgs {
  const void *xq, *xk, *xv;  // [BH, T, 64] bf16/fp16
  const float *lr;           // [BH, T]
  const float *tau;          // [16]
  const float *ln_w, *ln_b;  // [nh, 64]
  float *W1;                 // [BH, 64, 64]
  float *b1;                 // [BH, 64]
  float *k, *g1, *lr_rows;   // [BH, 16, 64], [BH, 16, 64], [BH, 16]: rows of the current mini-batch
  void *out;                 // [BH, T, 64] bf16/fp16
  int BH, nh, T, start;
};

struct MlpPrefillArgs {
  const void *xq, *xk, *xv;  // [BH, T, 64]
  const float *lr;           // [BH, T]
  const float *tau;          // [16]
  const float *ln_w, *ln_b;  // [nh, 64]
  float *W1, *b1;            // [BH, 64, 256], [BH, 256]
  float *W2, *b2;            // [BH, 256, 64], [BH, 64]
  float *k, *g1, *lr_rows;   // [BH, 16, 64], [BH, 16, 256], [BH, 16]
  float *x2, *g2;            // [BH, 16, 256], [BH, 16, 64]
  void *out;                 // [BH, T, 64]
  int BH, nh, T, start;
  int warps;                 // CTA size of the kernel: 8 or 16 warps (0: default, 8)
};

cudaError_t launch_linear_prefill(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream);
// The previous default TTT-Linear kernel (v4: the same kernel with v4's shared-memory layouts), opt-in, for
// same-run comparisons.
cudaError_t launch_linear_prefill_v4(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream);
cudaError_t launch_mlp_prefill(const MlpPrefillArgs &a, InDtype dt, cudaStream_t stream);

// Hopper variant of the TTT-Linear prefill (warpgroup MMA; ttt_linear_prefill_wgmma.cu). Its kernel exists
// only in the sm_90a image: the status is cudaSuccess on a compute-capability 9.0 device running that
// image, cudaErrorNotSupported otherwise (the launcher returns it without launching).
cudaError_t linear_prefill_wgmma_status();
cudaError_t launch_linear_prefill_wgmma(const LinearPrefillArgs &a, InDtype dt, cudaStream_t stream);

}  // namespace ttt
