"""Tiny models and inputs shared by the CPU tests."""

from __future__ import annotations

import torch

from ttt_infer import TTTConfig, TTTForCausalLM
from ttt_infer.ttt.cache import TTTState

VOCAB = 97


def tiny_config(layer_type: str = "linear", backbone: str = "mamba", **kw) -> TTTConfig:
    base = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=96, vocab_size=VOCAB)
    base.update(kw)
    return TTTConfig.standard("125m", layer_type, backbone, **base)


@torch.no_grad()
def perturb(model: TTTForCausalLM, seed: int = 0, scale: float = 0.05) -> TTTForCausalLM:
    """Move every parameter off its init (learnable scalars, norms, biases included)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return model


def tiny_model(layer_type="linear", backbone="mamba", dtype=torch.float64, seed=0, **kw) -> TTTForCausalLM:
    torch.manual_seed(seed)
    return perturb(TTTForCausalLM(tiny_config(layer_type, backbone, **kw)), seed).to(dtype).eval()


def random_inner(kind: str, B=2, nh=3, T=37, f=8, dtype=torch.float64, seed=0):
    """A random, non-init TTT state and inner-loop inputs of realistic scale."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=1.0):
        return (s * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    h = f if kind == "linear" else 4 * f
    W2, b2 = (r(nh, h, f, s=0.3), r(nh, 1, f, s=0.1)) if kind == "mlp" else (None, None)
    st = TTTState.from_params(B, r(nh, f, h, s=0.3), r(nh, 1, h, s=0.1), W2, b2, dtype=torch.float64)
    xq, xk, xv = r(B, nh, T, f), r(B, nh, T, f), r(B, nh, T, f)
    lr = (torch.rand(B, nh, T, generator=g, dtype=torch.float64) * 0.2).to(torch.float64)
    ln_w, ln_b = 1 + r(nh, f, s=0.2), r(nh, f, s=0.2)
    tau = (
        1 / torch.arange(1, 17, dtype=torch.float64) + 0.1 * torch.randn(16, generator=g, dtype=torch.float64)
    ).clamp_min(0)
    return st, (xq, xk, xv, lr, ln_w, ln_b, tau)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
