"""Triton decode kernels: one token of TTT-Linear / TTT-MLP for all heads of all sequences, one launch.

The scheme is MATH.md's "Decode traffic": inside a mini-batch the weights W (TTTState.W1, b1 and, for
TTT-MLP, W2, b2) stay at the mini-batch's starting value and the state keeps the rows of the
mini-batch (k_j, g_j, lr_j; for TTT-MLP also x2_j, g2_j). One program per (sequence, head):

  p      = position % b                     (read from the device tensor: graph-safe)
  z      = k W + b                          gradient at the mini-batch's starting weights
  g      = d/dz 1/2 ||LN(z) - (v - k)||^2   (inner LayerNorm + L2 backward, fused)
  rows[p] = (k, g, lr)
  zbar   = q W + b - tau_p * sum_{j<=p} lr_j (q . k_j + 1) g_j
  out    = q + LN(zbar)                      (inner LayerNorm + residual, fused)
  p == b-1:  W -= tau_p sum_j lr_j k_j^T g_j,  b -= tau_p sum_j lr_j g_j

TTT-MLP does the same through its two layers (z1 -> gelu -> z2, g1 = (g2 W2^T) * gelu'(z1)).

So W is read once per token and written once per mini-batch. The state and every accumulation are
fp32; activations may be fp16, bf16 or fp32 (upcast on load). Outputs are fp32 [B, nh, 1, f], the
reference's dtype.

Under TRITON_INTERPRET=1 the kernels run on CPU tensors (tests) with a fixed configuration. On a GPU
the first call for each (layer type, B * nh, dtype) times the candidate configurations (CANDIDATES:
structural variant, num_warps and a variant parameter) at a middle position and at the mini-batch's
last one (the W update), on scratch rows, output and weights (the live state is only read), and keeps
the fastest on average over a mini-batch; make that call before a CUDA graph capture. Variants: "v1" (above); "v3", the same
with a smaller register footprint (TTT-Linear) or the hidden axis streamed in pipelined chunks (TTT-MLP);
"ps" (TTT-Linear), a persistent grid pipelining the next heads' W into shared memory; "cu" (TTT-MLP), a CUDA
kernel in the compiled extension (decode/cuda.py; W2 held in shared memory, a candidate only where the extension
loads). Two more exist as
opt-in experiments (several heads per program for TTT-Linear, "mh"; a 2-pass hidden-chunk TTT-MLP,
"chunk"; both measured slower on the H200, docs/perf-notes.md).
TTT_DECODE_CONFIG="linear=ps:4:33,mlp=v3:4:2064" (variant:num_warps[:n] per layer type) forces one.
"""

from .common import HEAD_DIM, LN_EPS, MLP_HIDDEN, _interpreting, check_available
from .step import DecodeKernelBackend, _kernel_args, ttt_decode_step
from .tune import CANDIDATES, DEFAULT, TIMINGS, TUNED, _tune, tuned_configs

__all__ = [
    "CANDIDATES",
    "DEFAULT",
    "HEAD_DIM",
    "LN_EPS",
    "MLP_HIDDEN",
    "TIMINGS",
    "TUNED",
    "DecodeKernelBackend",
    "_interpreting",
    "_kernel_args",
    "_tune",
    "tuned_configs",
    "check_available",
    "ttt_decode_step",
]
