"""Physical limits (PERF.md): compute-bound prefill, memory-bound decode, and the two measured
ceilings of the GPU at hand (device-to-device copy bandwidth, dense bf16 matmul rate).

Derived from the model's shapes at run time, never hard-coded.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from ..config import TTTConfig

# Passes over the TTT state per decoded token: W read every token, written once per mini-batch
# (1 + 1/16), the scheme of MATH.md "Decode traffic"; the seed's scheme is about 3.
DECODE_STATE_PASSES = 1.0 + 1.0 / 16


@dataclass
class Ceilings:
    copy_bytes_per_s: float  # bytes read + written per second
    matmul_flops_per_s: float  # dense bf16

    def as_dict(self) -> dict:
        return {"copy_tb_s": self.copy_bytes_per_s / 1e12, "matmul_tflop_s": self.matmul_flops_per_s / 1e12}


def param_count(cfg: TTTConfig) -> int:
    """Parameters of the model (tied embedding counted once), from its shapes on the meta device."""
    from ..model import TTTForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in TTTForCausalLM(cfg).parameters())


def ttt_hidden(cfg: TTTConfig) -> int:
    return cfg.head_dim if cfg.ttt_layer_type == "linear" else 4 * cfg.head_dim


def ttt_state_bytes(cfg: TTTConfig, bytes_per_value: int = 4) -> int:
    """TTT weights per sequence (W1, b1[, W2, b2] of every head of every layer), fp32 by default."""
    f, h = cfg.head_dim, ttt_hidden(cfg)
    per_head = f * h + h + (h * f + f if cfg.ttt_layer_type == "mlp" else 0)
    return cfg.num_hidden_layers * cfg.num_attention_heads * per_head * bytes_per_value


def ttt_inner_flops_per_token(cfg: TTTConfig) -> int:
    """Matrix FLOPs of the dual-form inner loop per token (all heads, all layers).

    Per mini-batch of b rows, with f the head dim and h the inner hidden size:
    Linear: Z=KW, QW, W update (2bfh each), QK^T (2bbf), (eta*A)G and eta G (2bbh each).
    MLP: Z1, Z2, G2 W2^T, QW1, X2bar W2, W1 and W2 updates (7 x 2bfh), QK^T and two bbf products (3 x 2bbf),
    (eta*A1)G1, eta G1, X2bar X2^T (3 x 2bbh).
    """
    b, f, h = cfg.mini_batch_size, cfg.head_dim, ttt_hidden(cfg)
    if cfg.ttt_layer_type == "linear":
        per_mb = 3 * 2 * b * f * h + 2 * b * b * f + 2 * 2 * b * b * h
    else:
        per_mb = 7 * 2 * b * f * h + 3 * 2 * b * b * f + 3 * 2 * b * b * h
    return cfg.num_hidden_layers * cfg.num_attention_heads * per_mb // b


def prefill_limit_tokens_per_s(flops_per_token: float, ceilings: Ceilings) -> float:
    """Compute bound: peak / FLOPs per token."""
    return ceilings.matmul_flops_per_s / flops_per_token


def decode_limit_tokens_per_s(weight_bytes: float, batch: int, state_bytes_per_seq: float, ceilings: Ceilings) -> float:
    """Memory bound: one step moves the weights once and each sequence's state; tokens/s = B / t."""
    t = (weight_bytes + batch * state_bytes_per_seq) / ceilings.copy_bytes_per_s
    return batch / t


def ttt_limits(cfg: TTTConfig, weight_bytes_per_param: int = 2) -> dict:
    """Numbers the benchmark needs for a TTT model: params, FLOPs per prefill token, decode bytes."""
    P = param_count(cfg)
    return {
        "params": P,
        "prefill_flops_per_token": 2 * P + ttt_inner_flops_per_token(cfg),
        "weight_bytes": weight_bytes_per_param * P,
        "state_bytes_per_seq": DECODE_STATE_PASSES * ttt_state_bytes(cfg),
    }


def events_ms(fn, iters: int) -> list[float]:
    """Device time of `iters` calls of fn, each between two CUDA events (milliseconds)."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends, strict=True):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]


def measure_copy_bandwidth(device: str = "cuda", gib: float = 2.0, iters: int = 10) -> float:
    """Bytes read + written per second of a large device-to-device copy (median), random data."""
    numel = int(gib * 2**30) // 4
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = statistics.median(events_ms(lambda: dst.copy_(src), iters))
    src = dst = None  # free before what runs next
    torch.cuda.empty_cache()
    return 2 * numel * 4 / (ms / 1e3)


def measure_ceilings(device: str = "cuda", copy_gib: float = 2.0, n: int = 8192, iters: int = 10) -> Ceilings:
    """Measure a large device-to-device copy (bytes read + written) and an n^3 bf16 matmul, random data."""
    copy = measure_copy_bandwidth(device, copy_gib, iters)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    mm_ms = statistics.median(events_ms(lambda: a @ b, iters))
    return Ceilings(copy_bytes_per_s=copy, matmul_flops_per_s=2 * n**3 / (mm_ms / 1e3))
