// Launcher interface of the CUDA decode kernels (TTT-MLP and TTT-Linear, one token). Plain C++: no torch, no
// ThunderKittens.
#pragma once

#include <cuda_runtime.h>

namespace ttt {

enum class DecodeDtype : int { bf16 = 0, fp16 = 1, fp32 = 2 };

// One decode step of TTT-MLP (head dim 64, hidden 256, mini-batch 16) for BH = batch * heads pairs, the
// semantics of ttt_infer/kernels/decode/mlp.py. Pointers are device pointers; the state is fp32, updated in place.
struct MlpDecodeArgs {
  const void *q, *k, *v;       // [BH, 64], [BH, 64], v: sequence b, head h at v + b * sv + h * 64 (activation dtype)
  const float *lr;             // [BH]
  const void *ln_w, *ln_b;     // [nh, 64] (fp32 or the activation dtype: ln_dt)
  const float *tau;            // [16]
  const long long *pos;        // [1]: tokens before this one
  float *W1, *b1, *W2, *b2;    // [BH, 64, 256], [BH, 256], [BH, 256, 64], [BH, 64]
  float *K, *G1, *X2, *G2;     // rows of the mini-batch: [BH, 16, 64], [BH, 16, 256], [BH, 16, 256], [BH, 16, 64]
  float *LR;                   // [BH, 16]
  float *out;                  // [BH, 64]
  long long sv;
  int BH, nh;
  float eps;
  // optional timeline (nullptr: off): [BH, kMlpTraceSlots] int64, written by thread 0 of each CTA; see
  // MlpTraceSlot in ttt_mlp_decode.cu and scripts/trace_decode_step.py
  long long *trace = nullptr;
};

constexpr int kMlpTraceSlots = 16;

// One decode step of TTT-Linear (head dim 64, mini-batch 16) for BH pairs, the semantics of
// ttt_infer/kernels/decode/linear.py; pointers as in MlpDecodeArgs.
struct LinearDecodeArgs {
  const void *q, *k, *v;       // [BH, 64] (activation dtype); v as in MlpDecodeArgs
  const float *lr;             // [BH]
  const void *ln_w, *ln_b;     // [nh, 64] (fp32 or the activation dtype)
  const float *tau;            // [16]
  const long long *pos;        // [1]: tokens before this one
  float *W, *b;                // [BH, 64, 64], [BH, 64]
  float *K, *G, *LR;           // rows of the mini-batch: [BH, 16, 64], [BH, 16, 64], [BH, 16]
  float *out;                  // [BH, 64]
  long long sv;
  int BH, nh;
  float eps;
};

// One CTA of 128 threads a pair, eight an SM (csrc/ttt_linear_decode.cu).
cudaError_t launch_linear_decode(const LinearDecodeArgs &a, DecodeDtype act, DecodeDtype ln, bool pdl,
                                 cudaStream_t stream);

// ctas_per_sm: 2 or 3 (the register budget the kernel is compiled for; shared memory allows 3 on sm_90).
// pdl: launch with programmatic dependent launch (sm_90+; the kernel waits for the grid ahead before any access).
cudaError_t launch_mlp_decode(const MlpDecodeArgs &a, DecodeDtype act, DecodeDtype ln, int ctas_per_sm, bool pdl,
                              cudaStream_t stream);

}  // namespace ttt
