// pybind11 module of the TK prefill kernels. Shapes and dtypes are validated in Python
// (ttt_infer/kernels/prefill.py) before these are called; the checks here are a last guard.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>
#include <utility>

#include "ttt_decode.h"
#include "ttt_prefill.h"

namespace {

void check(const torch::Tensor &t, const char *name, c10::ScalarType dt) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dt, name, " has dtype ", t.scalar_type(), ", expected ", dt);
}

ttt::InDtype in_dtype(const torch::Tensor &x) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf, "inputs must be bf16 or fp16");
  return x.scalar_type() == at::kBFloat16 ? ttt::InDtype::bf16 : ttt::InDtype::fp16;
}

void linear_prefill_impl(torch::Tensor xq, torch::Tensor xk, torch::Tensor xv, torch::Tensor lr, torch::Tensor tau,
                         torch::Tensor ln_w, torch::Tensor ln_b, torch::Tensor W1, torch::Tensor b1, torch::Tensor k,
                         torch::Tensor g1, torch::Tensor lr_rows, torch::Tensor out, int64_t start, int impl) {
  const bool wgmma = impl == 1;  // 0: default (v6), 1: wgmma, 2: v4
  const auto dt = xq.scalar_type();
  for (auto *p : {&xq, &xk, &xv, &out}) check(*p, "xq/xk/xv/out", dt);
  for (auto *p : {&lr, &tau, &ln_w, &ln_b, &W1, &b1, &k, &g1, &lr_rows}) check(*p, "fp32 argument", at::kFloat);
  TORCH_CHECK(xq.dim() == 4 && xq.size(3) == 64, "xq must be [B, nh, T, 64]");
  c10::cuda::CUDAGuard guard(xq.device());
  ttt::LinearPrefillArgs a{xq.data_ptr(), xk.data_ptr(), xv.data_ptr(), lr.data_ptr<float>(), tau.data_ptr<float>(),
                           ln_w.data_ptr<float>(), ln_b.data_ptr<float>(), W1.data_ptr<float>(), b1.data_ptr<float>(),
                           k.data_ptr<float>(), g1.data_ptr<float>(), lr_rows.data_ptr<float>(), out.data_ptr(),
                           (int)(xq.size(0) * xq.size(1)), (int)xq.size(1), (int)xq.size(2), (int)start};
  if (wgmma) {
    const cudaError_t st = ttt::linear_prefill_wgmma_status();
    TORCH_CHECK(st == cudaSuccess,
                "the wgmma TTT-Linear prefill (impl=\"wgmma\") needs a compute-capability 9.0 GPU (H100/H200) and an "
                "extension built with 9.0a in TORCH_CUDA_ARCH_LIST (the default \"8.0;9.0a\"); this device or build "
                "has no sm_90a kernel image (",
                cudaGetErrorString(st), "); use the default impl");
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  const cudaError_t e = wgmma       ? ttt::launch_linear_prefill_wgmma(a, in_dtype(xq), stream)
                        : impl == 2 ? ttt::launch_linear_prefill_v4(a, in_dtype(xq), stream)
                                    : ttt::launch_linear_prefill(a, in_dtype(xq), stream);
  TORCH_CHECK(e == cudaSuccess, "ttt linear prefill launch failed: ", cudaGetErrorString(e));
}

void linear_prefill(torch::Tensor xq, torch::Tensor xk, torch::Tensor xv, torch::Tensor lr, torch::Tensor tau,
                    torch::Tensor ln_w, torch::Tensor ln_b, torch::Tensor W1, torch::Tensor b1, torch::Tensor k,
                    torch::Tensor g1, torch::Tensor lr_rows, torch::Tensor out, int64_t start) {
  linear_prefill_impl(xq, xk, xv, lr, tau, ln_w, ln_b, W1, b1, k, g1, lr_rows, out, start, 0);
}

void linear_prefill_wgmma(torch::Tensor xq, torch::Tensor xk, torch::Tensor xv, torch::Tensor lr, torch::Tensor tau,
                          torch::Tensor ln_w, torch::Tensor ln_b, torch::Tensor W1, torch::Tensor b1, torch::Tensor k,
                          torch::Tensor g1, torch::Tensor lr_rows, torch::Tensor out, int64_t start) {
  linear_prefill_impl(xq, xk, xv, lr, tau, ln_w, ln_b, W1, b1, k, g1, lr_rows, out, start, 1);
}

void linear_prefill_v4(torch::Tensor xq, torch::Tensor xk, torch::Tensor xv, torch::Tensor lr, torch::Tensor tau,
                       torch::Tensor ln_w, torch::Tensor ln_b, torch::Tensor W1, torch::Tensor b1, torch::Tensor k,
                       torch::Tensor g1, torch::Tensor lr_rows, torch::Tensor out, int64_t start) {
  linear_prefill_impl(xq, xk, xv, lr, tau, ln_w, ln_b, W1, b1, k, g1, lr_rows, out, start, 2);
}

// Whether the wgmma variant can run on the current device with this build (no exception).
bool linear_prefill_wgmma_available() { return ttt::linear_prefill_wgmma_status() == cudaSuccess; }

void mlp_prefill(torch::Tensor xq, torch::Tensor xk, torch::Tensor xv, torch::Tensor lr, torch::Tensor tau,
                 torch::Tensor ln_w, torch::Tensor ln_b, torch::Tensor W1, torch::Tensor b1, torch::Tensor W2,
                 torch::Tensor b2, torch::Tensor k, torch::Tensor g1, torch::Tensor lr_rows, torch::Tensor x2,
                 torch::Tensor g2, torch::Tensor out, int64_t start, int64_t warps) {
  const auto dt = xq.scalar_type();
  for (auto *p : {&xq, &xk, &xv, &out}) check(*p, "xq/xk/xv/out", dt);
  for (auto *p : {&lr, &tau, &ln_w, &ln_b, &W1, &b1, &W2, &b2, &k, &g1, &lr_rows, &x2, &g2})
    check(*p, "fp32 argument", at::kFloat);
  TORCH_CHECK(xq.dim() == 4 && xq.size(3) == 64, "xq must be [B, nh, T, 64]");
  c10::cuda::CUDAGuard guard(xq.device());
  ttt::MlpPrefillArgs a{xq.data_ptr(), xk.data_ptr(), xv.data_ptr(), lr.data_ptr<float>(), tau.data_ptr<float>(),
                        ln_w.data_ptr<float>(), ln_b.data_ptr<float>(), W1.data_ptr<float>(), b1.data_ptr<float>(),
                        W2.data_ptr<float>(), b2.data_ptr<float>(), k.data_ptr<float>(), g1.data_ptr<float>(),
                        lr_rows.data_ptr<float>(), x2.data_ptr<float>(), g2.data_ptr<float>(), out.data_ptr(),
                        (int)(xq.size(0) * xq.size(1)), (int)xq.size(1), (int)xq.size(2), (int)start, (int)warps};
  const cudaError_t e = ttt::launch_mlp_prefill(a, in_dtype(xq), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(e == cudaSuccess, "ttt mlp prefill launch failed: ", cudaGetErrorString(e));
}

ttt::DecodeDtype decode_dtype(const torch::Tensor &x, const char *name) {
  switch (x.scalar_type()) {
    case at::kBFloat16: return ttt::DecodeDtype::bf16;
    case at::kHalf: return ttt::DecodeDtype::fp16;
    case at::kFloat: return ttt::DecodeDtype::fp32;
    default: break;
  }
  TORCH_CHECK(false, name, " must be fp16, bf16 or fp32, got ", x.scalar_type());
  return ttt::DecodeDtype::fp32;
}

// The checks both CUDA decode steps make on the token's inputs; returns the activations' and the LayerNorm
// parameters' dtypes.
std::pair<ttt::DecodeDtype, ttt::DecodeDtype> check_decode_token(const torch::Tensor &q, const torch::Tensor &k,
                                                                 const torch::Tensor &v, const torch::Tensor &ln_w,
                                                                 const torch::Tensor &ln_b, const torch::Tensor &pos) {
  const auto act = decode_dtype(q, "q");
  for (auto *p : {&q, &k}) check(*p, "q/k", q.scalar_type());
  TORCH_CHECK(v.is_cuda() && v.scalar_type() == q.scalar_type() && v.stride(-1) == 1, "v: CUDA, q's dtype, unit stride");
  TORCH_CHECK(ln_w.scalar_type() == ln_b.scalar_type(), "ln_w and ln_b must share a dtype");
  const auto ln = decode_dtype(ln_w, "ln_w");
  TORCH_CHECK(ln == ttt::DecodeDtype::fp32 || ln == act, "ln_w must be fp32 or the activations' dtype");
  check(ln_w, "ln_w", ln_w.scalar_type());
  check(ln_b, "ln_b", ln_w.scalar_type());
  check(pos, "pos", at::kLong);
  return {act, ln};
}

// One TTT-MLP decode step (csrc/ttt_mlp_decode.cu); the Python side (kernels/decode/cuda.py) checks shapes.
void mlp_decode(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor lr, torch::Tensor ln_w,
                torch::Tensor ln_b, torch::Tensor tau, torch::Tensor pos, torch::Tensor W1, torch::Tensor b1,
                torch::Tensor W2, torch::Tensor b2, torch::Tensor K, torch::Tensor G1, torch::Tensor X2,
                torch::Tensor G2, torch::Tensor LR, torch::Tensor out, int64_t nh, int64_t sv, double eps,
                int64_t ctas_per_sm, bool pdl, std::optional<torch::Tensor> trace) {
  const auto [act, ln] = check_decode_token(q, k, v, ln_w, ln_b, pos);
  for (auto *p : {&lr, &tau, &W1, &b1, &W2, &b2, &K, &G1, &X2, &G2, &LR, &out}) check(*p, "fp32 argument", at::kFloat);
  c10::cuda::CUDAGuard guard(q.device());
  ttt::MlpDecodeArgs a{q.data_ptr(), k.data_ptr(), v.data_ptr(), lr.data_ptr<float>(), ln_w.data_ptr(),
                       ln_b.data_ptr(), tau.data_ptr<float>(), reinterpret_cast<const long long *>(pos.data_ptr<int64_t>()),
                       W1.data_ptr<float>(), b1.data_ptr<float>(), W2.data_ptr<float>(), b2.data_ptr<float>(),
                       K.data_ptr<float>(), G1.data_ptr<float>(), X2.data_ptr<float>(), G2.data_ptr<float>(),
                       LR.data_ptr<float>(), out.data_ptr<float>(), (long long)sv, (int)W1.size(0) * (int)W1.size(1),
                       (int)nh, (float)eps};
  if (trace.has_value()) {  // the optional timeline (scripts/trace_decode_step.py): int64 [pairs, kMlpTraceSlots]
    check(*trace, "trace", at::kLong);
    TORCH_CHECK(trace->numel() >= (int64_t)a.BH * ttt::kMlpTraceSlots, "trace needs ", a.BH, " x ",
                ttt::kMlpTraceSlots, " int64 entries, got ", trace->numel());
    a.trace = reinterpret_cast<long long *>(trace->data_ptr<int64_t>());
  }
  const cudaError_t e = ttt::launch_mlp_decode(a, act, ln, (int)ctas_per_sm, pdl, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(e == cudaSuccess, "ttt mlp decode launch failed: ", cudaGetErrorString(e));
}

// One TTT-Linear decode step (csrc/ttt_linear_decode.cu); the Python side (kernels/decode/cuda.py) checks shapes.
void linear_decode(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor lr, torch::Tensor ln_w,
                   torch::Tensor ln_b, torch::Tensor tau, torch::Tensor pos, torch::Tensor W, torch::Tensor b,
                   torch::Tensor K, torch::Tensor G, torch::Tensor LR, torch::Tensor out, int64_t nh, int64_t sv,
                   double eps, bool pdl) {
  const auto [act, ln] = check_decode_token(q, k, v, ln_w, ln_b, pos);
  for (auto *p : {&lr, &tau, &W, &b, &K, &G, &LR, &out}) check(*p, "fp32 argument", at::kFloat);
  c10::cuda::CUDAGuard guard(q.device());
  ttt::LinearDecodeArgs a{q.data_ptr(), k.data_ptr(), v.data_ptr(), lr.data_ptr<float>(), ln_w.data_ptr(),
                          ln_b.data_ptr(), tau.data_ptr<float>(), reinterpret_cast<const long long *>(pos.data_ptr<int64_t>()),
                          W.data_ptr<float>(), b.data_ptr<float>(), K.data_ptr<float>(), G.data_ptr<float>(),
                          LR.data_ptr<float>(), out.data_ptr<float>(), (long long)sv, (int)W.size(0) * (int)W.size(1),
                          (int)nh, (float)eps};
  const cudaError_t e = ttt::launch_linear_decode(a, act, ln, pdl, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(e == cudaSuccess, "ttt linear decode launch failed: ", cudaGetErrorString(e));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ThunderKittens prefill kernels for TTT-Linear and TTT-MLP (head dim 64, mini-batch 16), CUDA decode steps";
  m.def("linear_prefill", &linear_prefill, "TTT-Linear prefill, v6 (state updated in place; writes out)");
  m.def("linear_prefill_wgmma", &linear_prefill_wgmma,
        "TTT-Linear prefill, Hopper warpgroup-MMA variant (sm_90a builds on compute capability 9.0 only)");
  m.def("linear_prefill_v4", &linear_prefill_v4,
        "TTT-Linear prefill, the previous default kernel (v4), for same-run comparisons with the default (v6)");
  m.def("linear_prefill_wgmma_available", &linear_prefill_wgmma_available,
        "True when this build has the sm_90a wgmma kernel and the current device can run it");
  m.def("mlp_decode", &mlp_decode, "TTT-MLP decode step, CUDA (state and rows updated in place; writes out)");
  m.def("linear_decode", &linear_decode, "TTT-Linear decode step, CUDA (state and rows updated in place; writes out)");
  m.def("mlp_prefill", &mlp_prefill, "TTT-MLP prefill (state updated in place; writes out); warps: 8 or 16 (0: default)");
}
