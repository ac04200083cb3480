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

    def forward(self, x: torch.Tensor, glue: Glue | None = None) -> torch.Tensor:
        return (glue or TORCH_GLUE).rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * (x / rms(x)) with the statistics and the scaling in >= fp32, rounded once to x's dtype."""
    acc = state_dtype(x.dtype)
    # one reduction that reads x once, accumulating in acc (no fp32 copy of x)
    ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc).square() / x.shape[-1]
    return weight * (x * torch.rsqrt(ms + eps)).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, glue: Glue | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        """down(silu(gate(x)) * up(x)), plus `residual` when given."""
        return (glue or TORCH_GLUE).swiglu(x, self.gate_proj, self.up_proj, self.down_proj, residual)


def depthwise_conv1d(kernel: int, channels: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel_size=kernel, groups=channels, bias=True, padding=kernel - 1)


def causal_conv(x: torch.Tensor, conv: nn.Conv1d, history: torch.Tensor) -> torch.Tensor:
    """Causal depthwise conv of x [B, T, C] continuing after `history` [B, k-1, C]. Returns [B, T, C]."""
    xt = torch.cat([history.to(x.dtype), x], dim=1).transpose(1, 2)  # [B, C, k-1+T]
    return F.conv1d(xt, conv.weight, conv.bias, groups=conv.groups).transpose(1, 2)


def push_history(history: torch.Tensor, x: torch.Tensor) -> None:
    """Keep the last k-1 inputs of x [B, T, C] in the history [B, k-1, C] (in place)."""
    k1 = history.shape[1]
    xt = torch.cat([history, x.to(history.dtype)], dim=1)
    history.copy_(xt[:, xt.shape[1] - k1 :])


class ConvBlock(nn.Module):
    """The Mamba backbone's pre-conv: x + conv(RMSNorm(x))."""

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.conv = depthwise_conv1d(config.conv_kernel, config.hidden_size)

    def forward(self, x: torch.Tensor, state: ConvState, glue: Glue | None = None) -> torch.Tensor:
        glue = glue or TORCH_GLUE
        return glue.causal_conv(self.norm(x, glue), self.conv, state.history, residual=x)


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
        """tau_i = max(0, 1/i + beta_i), i = 1..b: [b]. Cached until the parameter changes (a decode step
        would otherwise spend four tiny kernels a layer on it)."""
        beta = self.learnable_token_idx
        if torch.compiler.is_compiling():  # in a compiled graph: computed in the graph (fused), no python cache
            i = torch.arange(1, self.mini_batch_size + 1, dtype=dtype, device=beta.device)
            return (1.0 / i + beta.detach().to(dtype)).clamp_min(0.0)
        try:
            key = (beta._version, beta.data_ptr(), beta.device, dtype)
        except RuntimeError:  # an inference-mode tensor has no version counter: no cache
            key = None
        if key is None or getattr(self, "_tau_key", None) != key:
            i = torch.arange(1, self.mini_batch_size + 1, dtype=dtype, device=beta.device)
            self._tau = (1.0 / i + beta.detach().to(dtype)).clamp_min(0.0)
            self._tau_key = key
        return self._tau

    def lr_gate_params(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(w [nh, C], c [nh], base_lr / f) of lr_j = base_lr / f * sigmoid(x_j . w_h + c_h)."""
        w, c = self.learnable_ttt_lr_weight.reshape(self.num_heads, -1), self.learnable_ttt_lr_bias.reshape(-1)
        return w, c, self.config.ttt_base_lr / self.head_dim

    def learning_rate(self, x: torch.Tensor, glue: Glue | None = None) -> torch.Tensor:
        """lr_j = base_lr / f * sigmoid(x_j . w_h + c_h): [B, nh, T] in the state dtype."""
        return (glue or TORCH_GLUE).lr_gate(x, *self.lr_gate_params())

    def forward(
        self,
        x: torch.Tensor,
        state: TTTState,
        qk_conv: ConvState | None,
        seqlen: int,
        position: torch.Tensor,
        backend: Backend,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T, C] (after seq_norm) -> [B, T, C] (plus `residual` when given).

        `seqlen` (python int) and `position` ([1] int64 tensor) both count the tokens before x; `seqlen` is
        None in a compiled decode step (the backend then reads `position` only).
        """
        B, T, C = x.shape
        nh, f, b = self.num_heads, self.head_dim, self.mini_batch_size
        glue = getattr(backend, "glue", None) or TORCH_GLUE
        share, gated = self.config.share_qk, self.config.use_gate
        projs = (self.q_proj, *(() if share else (self.k_proj,)), self.v_proj, *((self.g_proj,) if gated else ()))
        # the projections and the lr gate; the kernel glue: one GEMM over the stacked weights (at decode the lr
        # gate's weights stacked too, where measured faster)
        ys, lr = glue.projections_lr(x, projs, *self.lr_gate_params())
        ys = list(ys)
        xq, xk, xv, gate = ys.pop(0), None if share else ys.pop(0), ys.pop(0), ys.pop(0) if gated else None
        if share:
            XQ, XK = glue.qk_conv_rope(
                xq, self.conv_q, self.conv_k, qk_conv.history, position, nh, self.config.rope_theta, b
            )
        else:
            XQ, XK = (TORCH_GLUE.rope_heads(p, position, nh, self.config.rope_theta, b) for p in (xq, xk))
        XV = xv.reshape(B, T, nh, f).transpose(1, 2)  # [B, nh, T, f]
        if T > 1:  # prompts: the prefill kernels read contiguous heads; a decode step reads the view in place
            XV = XV.contiguous()
        acc = state_dtype(x.dtype)
        start = None if seqlen is None else seqlen % b
        out = backend.inner(
            state, XQ, XK, XV, lr, self.ttt_norm_weight, self.ttt_norm_bias, self.token_scale(acc), start, position
        )  # [B, nh, T, f]
        return glue.linear(glue.post_gate(out, gate, self.post_norm, LN_EPS, x.dtype), self.o_proj, residual)


class TorchGlue:
    """The PyTorch reference for the work around the TTT op (`kernels.glue.TritonGlue` fuses each method)."""

    name = "torch"

    rms_norm = staticmethod(rms_norm)

    @staticmethod
    def causal_conv(x: torch.Tensor, conv: nn.Conv1d, history: torch.Tensor,
                    residual: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """residual + conv(x) continuing after `history` [B, k-1, C] (advanced past x in place): [B, T, C]."""
        y = causal_conv(x, conv, history)
        push_history(history, x)
        return y if residual is None else residual + y

    def pre_block(self, x: torch.Tensor, conv_norm: RMSNorm, conv: nn.Conv1d, history: torch.Tensor,
                  seq_norm: RMSNorm) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The front of a Mamba-backbone block: x2 = x + conv(conv_norm(x)) (the pre-conv, history advanced) and
        h = seq_norm(x2), the TTT layer's input. Returns (x2, h); TritonGlue fuses the three at decode."""
        x2 = self.causal_conv(self.rms_norm(x, conv_norm.weight, conv_norm.eps), conv, history, residual=x)
        return x2, self.rms_norm(x2, seq_norm.weight, seq_norm.eps)

    @staticmethod
    def rope_heads(
        x: torch.Tensor, position: torch.Tensor, num_heads: int, theta: float, mini_batch: int
    ) -> torch.Tensor:
        """RoPE at (position + t) mod mini_batch of x [B, T, C] in the head layout [B, nh, T, f], contiguous."""
        B, T, C = x.shape
        pos = (position + torch.arange(T, device=x.device)) % mini_batch
        heads = x.reshape(B, T, num_heads, C // num_heads).transpose(1, 2)
        return apply_rope(heads, rope_rotation(pos, C // num_heads, theta, state_dtype(x.dtype)))

    @staticmethod
    def qk_conv_rope(x: torch.Tensor, conv_q: nn.Conv1d, conv_k: nn.Conv1d, history: torch.Tensor,
                     position: torch.Tensor, num_heads: int, theta: float,
                     mini_batch: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """XQ, XK = RoPE(conv_q(x)), RoPE(conv_k(x)) [B, nh, T, f]; one rotation shared by both."""
        B, T, C = x.shape
        f = C // num_heads
        q, k = causal_conv(x, conv_q, history), causal_conv(x, conv_k, history)
        push_history(history, x)
        # positions from the device tensor, so that a captured CUDA graph reads them at replay
        pos = (position + torch.arange(T, device=x.device)) % mini_batch
        rot = rope_rotation(pos, f, theta, state_dtype(x.dtype))
        return tuple(apply_rope(t.reshape(B, T, num_heads, f).transpose(1, 2), rot) for t in (q, k))

    @staticmethod
    def lr_gate(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
        """scale * sigmoid(x . weight[h] + bias[h]) in >= fp32: x [B, T, C], weight [nh, C] -> [B, nh, T]."""
        acc = state_dtype(x.dtype)
        logits = x.to(acc) @ weight.to(acc).T + bias.to(acc)  # [B, T, nh]
        return (scale * torch.sigmoid(logits)).transpose(1, 2).contiguous()

    @staticmethod
    def post_gate(o: torch.Tensor, gate: torch.Tensor | None, ln: nn.LayerNorm, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
        """gelu_tanh(gate) * LayerNorm(o): o [B, nh, T, f] -> [B, T, nh * f] of dtype."""
        B, nh, T, f = o.shape
        out = o.transpose(1, 2).reshape(B, T, nh * f).to(dtype)
        # statistics in fp32 inside the kernel for 16-bit inputs, one rounding at the output
        out = F.layer_norm(out, (nh * f,), ln.weight, ln.bias, eps)
        return out if gate is None else F.gelu(gate, approximate="tanh") * out

    @staticmethod
    def silu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.silu(a) * b

    @staticmethod
    def projections(x: torch.Tensor, projs: tuple[nn.Linear, ...]) -> tuple[torch.Tensor, ...]:
        """proj(x) for each projection of x (kernels.glue.TritonGlue: one GEMM over the stacked weights)."""
        return tuple(p(x) for p in projs)

    def projections_lr(self, x: torch.Tensor, projs: tuple[nn.Linear, ...], lr_weight: torch.Tensor,
                       lr_bias: torch.Tensor, scale: float) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:  # fmt: skip
        """(projections(x, projs), lr_gate(x, lr_weight, lr_bias, scale)): a TTT layer's inputs from x."""
        return self.projections(x, projs), self.lr_gate(x, lr_weight, lr_bias, scale)

    def swiglu(self, x: torch.Tensor, gate: nn.Linear, up: nn.Linear, down: nn.Linear,
               residual: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """down(silu(gate(x)) * up(x)) (+ residual)."""
        return self.linear(self.silu_mul(*self.projections(x, (gate, up))), down, residual)

    @staticmethod
    def linear(x: torch.Tensor, proj: nn.Linear, residual: torch.Tensor | None = None) -> torch.Tensor:
        """proj(x), plus `residual` when given (rounded twice, as `residual + proj(x)` is)."""
        y = proj(x)
        return y if residual is None else residual + y


TORCH_GLUE = TorchGlue()
Glue = TorchGlue  # the interface: kernels.glue.TritonGlue has the same methods
