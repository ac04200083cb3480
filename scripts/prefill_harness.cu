// Standalone launch of the default TTT-Linear prefill kernel (no torch), for Nsight Compute:
//   nvcc -std=c++20 -O3 --expt-relaxed-constexpr --expt-extended-lambda -arch=sm_90a -lineinfo \
//        -I third_party/ThunderKittens/include -I csrc scripts/prefill_harness.cu -o /tmp/prefill_harness
//   ncu --section WarpStateStats --section SchedulerStats -k regex:ttt_linear /tmp/prefill_harness 16 2048
// Arguments: B T [launches [extra KB]] (environment HARNESS_V4 set: the v4 layouts): `extra` KB of dynamic shared memory a CTA (unused by the kernel) caps
// the CTAs an SM holds (the kernel's 30 KB + extra against the SM's 228 KB): how the step time scales with
// the CTAs sharing an SM (each SM sub-partition runs one warp of each resident CTA).
// Inputs are random (a fixed LCG), the state small; the harness checks only that the output is finite.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../csrc/ttt_linear_prefill.cu"

using namespace ttt;

__global__ void fill(float *x, size_t n, float scale, unsigned seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    x[i] = scale * ((h & 0xffffff) / 16777216.f - 0.5f);
  }
}
__global__ void to_bf16(const float *x, bf16 *y, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    y[i] = __float2bfloat16(x[i]);
}

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

int main(int argc, char **argv) {
  const int B = argc > 1 ? std::atoi(argv[1]) : 16, T = argc > 2 ? std::atoi(argv[2]) : 2048, nh = 32;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 1;
  const int extra = argc > 4 ? std::atoi(argv[4]) * 1024 : 0;
  const int BH = B * nh;
  const size_t nx = (size_t)BH * T * F;
  float *tmp, *lr, *tau, *lnw, *lnb, *W, *b, *k, *g, *lrr;
  bf16 *q, *kk, *v, *out;
  CK(cudaMalloc(&tmp, nx * 4));
  CK(cudaMalloc(&q, nx * 2));
  CK(cudaMalloc(&kk, nx * 2));
  CK(cudaMalloc(&v, nx * 2));
  CK(cudaMalloc(&out, nx * 2));
  CK(cudaMalloc(&lr, (size_t)BH * T * 4));
  CK(cudaMalloc(&tau, MB * 4));
  CK(cudaMalloc(&lnw, nh * F * 4));
  CK(cudaMalloc(&lnb, nh * F * 4));
  CK(cudaMalloc(&W, (size_t)BH * F * F * 4));
  CK(cudaMalloc(&b, (size_t)BH * F * 4));
  CK(cudaMalloc(&k, (size_t)BH * MB * F * 4));
  CK(cudaMalloc(&g, (size_t)BH * MB * F * 4));
  CK(cudaMalloc(&lrr, (size_t)BH * MB * 4));
  bf16 *dst[3] = {q, kk, v};
  for (int i = 0; i < 3; i++) {
    fill<<<1024, 256>>>(tmp, nx, 2.f, 17u + i);
    to_bf16<<<1024, 256>>>(tmp, dst[i], nx);
  }
  fill<<<1024, 256>>>(lr, (size_t)BH * T, 0.02f, 5u);
  std::vector<float> h_tau(MB);
  for (int i = 0; i < MB; i++) h_tau[i] = 1.f / (i + 1);
  CK(cudaMemcpy(tau, h_tau.data(), MB * 4, cudaMemcpyHostToDevice));
  fill<<<64, 256>>>(lnw, nh * F, 0.2f, 7u);
  fill<<<64, 256>>>(lnb, nh * F, 0.2f, 8u);
  fill<<<1024, 256>>>(W, (size_t)BH * F * F, 0.2f, 9u);
  CK(cudaMemset(b, 0, (size_t)BH * F * 4));
  CK(cudaMemset(k, 0, (size_t)BH * MB * F * 4));
  CK(cudaMemset(g, 0, (size_t)BH * MB * F * 4));
  CK(cudaMemset(lrr, 0, (size_t)BH * MB * 4));
  LinearPrefillArgs a{q, kk, v, lr, tau, lnw, lnb, W, b, k, g, lrr, out, BH, nh, T, 0};
  auto kern = (std::getenv("HARNESS_V4") && *std::getenv("HARNESS_V4")) ? ttt_linear_prefill_kernel<bf16, true> : ttt_linear_prefill_kernel<bf16, false>;
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, extra));
  int per_sm = 0, sms = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 128, extra));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventRecord(e0));
  for (int r = 0; r < reps; r++) {
    kern<<<BH, 128, extra>>>(a);
    CK(cudaGetLastError());
  }
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms = 0.f;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  std::vector<bf16> h(1024);
  CK(cudaMemcpy(h.data(), out + nx - 1024, 1024 * 2, cudaMemcpyDeviceToHost));
  int bad = 0;
  for (auto x : h) bad += !std::isfinite(__bfloat162float(x));
  const int waves = (BH + per_sm * sms - 1) / (per_sm * sms);
  std::printf("B=%d T=%d: %.3f ms a launch (%d launches; first one cold), %d CTAs/SM (+%d KB smem), %d wave(s) of %d "
              "SMs; %.3f us a mini-batch step a wave; %d non-finite of the last 1024 outputs\n",
              B, T, ms / reps, reps, per_sm, extra / 1024, waves, sms, 1000.f * ms / reps / waves / ((T + 15) / 16), bad);
  return bad != 0;
}
