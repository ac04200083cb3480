"""Building blocks of the backbones: RMSNorm, SwiGLU, causal depthwise conv, rotary embedding, TTT layer.

Module and parameter names follow ttt-lm-pytorch so that state-dict keys are the checkpoint's names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TTTConfig
from .ttt.cache import ConvState, TTTState, state_dtype
from .ttt.ops import Backend
from .ttt.reference import LN_EPS


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """weight * (x / rms(x)) with the statistics and the scaling in >= fp32, rounded once to x's dtype."""
        acc = state_dtype(x.dtype)
        # one reduction that reads x once, accumulating in acc (no fp32 copy of x)
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc).square() / x.shape[-1]
        return self.weight * (x * torch.rsqrt(ms + self.eps)).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def depthwise_conv1d(kernel: int, channels: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel_size=kernel, groups=channels, bias=True, padding=kernel - 1)


def causal_conv(x: torch.Tensor, conv: nn.Conv1d, history: torch.Tensor) -> torch.Tensor:
    """Causal depthwise conv of x [B, T, C] continuing after `history` [B, C, k-1]. Returns [B, T, C]."""
    xt = torch.cat([history.to(x.dtype), x.transpose(1, 2)], dim=2)  # [B, C, k-1+T]
    return F.conv1d(xt, conv.weight, conv.bias, groups=conv.groups).transpose(1, 2)


def push_history(state: ConvState, x: torch.Tensor) -> None:
    """Keep the last k-1 inputs of x [B, T, C] in the history [B, C, k-1]."""
    k1 = state.history.shape[2]
    xt = torch.cat([state.history, x.transpose(1, 2).to(state.history.dtype)], dim=2)
    state.history.copy_(xt[:, :, xt.shape[2] - k1 :])


class ConvBlock(nn.Module):
    """The Mamba backbone's pre-conv: conv(RMSNorm(x)), added to the residual by the block."""

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.conv = depthwise_conv1d(config.conv_kernel, config.hidden_size)

    def forward(self, x: torch.Tensor, state: ConvState) -> torch.Tensor:
        h = self.norm(x)
        y = causal_conv(h, self.conv, state.history)
        push_history(state, h)
        return y


def rope_rotation(positions: torch.Tensor, f: int, theta: float, dtype: torch.dtype) -> torch.Tensor:
    """e^(i pos theta^(-2i/f)) for i < f/2: [T, f/2], complex of `dtype`'s precision (cos/sin in fp64)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, f, 2, dtype=torch.float64, device=positions.device) / f)
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.polar(torch.ones_like(ang), ang).to(torch.complex128 if dtype == torch.float64 else torch.complex64)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs (x_2i, x_2i+1) of x [..., T, f] as complex numbers by rot [T, f/2].

    Computed in >= fp32; returned contiguous in x's dtype (one pass to widen, one to rotate, one to narrow).
    """
    f = x.shape[-1]
    wide = torch.empty(x.shape, dtype=state_dtype(x.dtype), device=x.device).copy_(x)  # widen + make contiguous
    y = torch.view_as_real(torch.view_as_complex(wide.unflatten(-1, (f // 2, 2))) * rot).flatten(-2)
    return y.to(x.dtype, memory_format=torch.contiguous_format)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding on interleaved pairs (x_2i, x_2i+1), angle pos * theta^(-2i/f).

    This is ttt-lm-pytorch's permute_qk -> rotate_half RoPE -> undo_permute_qk, written directly.
    x [B, nh, T, f], positions [T] (already reduced mod the mini-batch size).
    """
    return apply_rope(x, rope_rotation(positions, x.shape[-1], theta, state_dtype(x.dtype)))


class TTTLayer(nn.Module):
    """TTT-Linear or TTT-MLP sequence-modelling layer (MATH.md, "TTT layer")."""

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        C, nh, f, b = config.hidden_size, config.num_attention_heads, config.head_dim, config.mini_batch_size
        self.config = config
        self.num_heads, self.head_dim, self.mini_batch_size = nh, f, b
        self.q_proj = nn.Linear(C, C, bias=False)
        if not config.share_qk:
            self.k_proj = nn.Linear(C, C, bias=False)
        else:
            self.conv_q = depthwise_conv1d(config.conv_kernel, C)
            self.conv_k = depthwise_conv1d(config.conv_kernel, C)
        self.v_proj = nn.Linear(C, C, bias=False)
        self.o_proj = nn.Linear(C, C, bias=False)
        if config.use_gate:
            self.g_proj = nn.Linear(C, C, bias=False)
        self.learnable_token_idx = nn.Parameter(torch.zeros(b))
        self.learnable_ttt_lr_weight = nn.Parameter(torch.randn(nh, 1, C) * 0.02)
        self.learnable_ttt_lr_bias = nn.Parameter(torch.zeros(nh, 1))
        self.ttt_norm_weight = nn.Parameter(torch.ones(nh, f))
        self.ttt_norm_bias = nn.Parameter(torch.zeros(nh, f))
        self.post_norm = nn.LayerNorm(C, eps=LN_EPS)
        h = f if config.ttt_layer_type == "linear" else 4 * f
        self.W1 = nn.Parameter(torch.randn(nh, f, h) * 0.02)
        self.b1 = nn.Parameter(torch.zeros(nh, 1, h))
        if config.ttt_layer_type == "mlp":
            self.W2 = nn.Parameter(torch.randn(nh, h, f) * 0.02)
            self.b2 = nn.Parameter(torch.zeros(nh, 1, f))

    def new_state(self, batch_size: int) -> TTTState:
        return TTTState.from_params(
            batch_size,
            self.W1,
            self.b1,
            getattr(self, "W2", None),
            getattr(self, "b2", None),
            mini_batch_size=self.mini_batch_size,
            dtype=state_dtype(self.W1.dtype),
        )

    def token_scale(self, dtype: torch.dtype) -> torch.Tensor:
        """tau_i = max(0, 1/i + beta_i), i = 1..b: [b]."""
        i = torch.arange(1, self.mini_batch_size + 1, dtype=dtype, device=self.W1.device)
        return (1.0 / i + self.learnable_token_idx.to(dtype)).clamp_min(0.0)

    def learning_rate(self, x: torch.Tensor) -> torch.Tensor:
        """lr_j = base_lr * sigmoid(x_j . w_h + c_h) / f: [B, nh, T] in the state dtype."""
        acc = state_dtype(x.dtype)
        w = self.learnable_ttt_lr_weight.reshape(self.num_heads, -1).to(acc)  # [nh, C]
        logits = x.to(acc) @ w.T + self.learnable_ttt_lr_bias.reshape(-1).to(acc)  # [B, T, nh]
        return (self.config.ttt_base_lr * torch.sigmoid(logits) / self.head_dim).transpose(1, 2).contiguous()

    def forward(
        self,
        x: torch.Tensor,
        state: TTTState,
        qk_conv: ConvState | None,
        seqlen: int,
        position: torch.Tensor,
        backend: Backend,
    ) -> torch.Tensor:
        """x [B, T, C] (after seq_norm) -> [B, T, C].

        `seqlen` (python int) and `position` ([1] int64 tensor) both count the tokens before x.
        """
        B, T, C = x.shape
        nh, f, b = self.num_heads, self.head_dim, self.mini_batch_size
        if self.config.share_qk:
            xq = self.q_proj(x)
            XQ = causal_conv(xq, self.conv_q, qk_conv.history)
            XK = causal_conv(xq, self.conv_k, qk_conv.history)
            push_history(qk_conv, xq)
        else:
            XQ, XK = self.q_proj(x), self.k_proj(x)
        XV = self.v_proj(x)

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, nh, T, f]
            return t.reshape(B, T, nh, f).transpose(1, 2)

        # positions from the device tensor, so that a captured CUDA graph reads them at replay
        pos = (position + torch.arange(T, device=x.device)) % b
        rot = rope_rotation(pos, f, self.config.rope_theta, state_dtype(x.dtype))  # shared by Q and K
        XQ, XK = apply_rope(heads(XQ), rot), apply_rope(heads(XK), rot)
        XV = heads(XV).contiguous()
        acc = state_dtype(x.dtype)
        out = backend.inner(
            state,
            XQ,
            XK,
            XV,
            self.learning_rate(x),
            self.ttt_norm_weight,
            self.ttt_norm_bias,
            self.token_scale(acc),
            seqlen % b,
            position,
        )  # [B, nh, T, f]
        out = out.transpose(1, 2).reshape(B, T, C).to(x.dtype)
        # statistics in fp32 inside the kernel for 16-bit inputs, one rounding at the output
        out = F.layer_norm(out, (C,), self.post_norm.weight, self.post_norm.bias, LN_EPS)
        if self.config.use_gate:
            out = F.gelu(self.g_proj(x), approximate="tanh") * out
        return self.o_proj(out)
