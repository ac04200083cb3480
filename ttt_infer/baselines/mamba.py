"""Mamba baseline.

Two paths, chosen at construction (`implementation` says which ran):
- `mamba_ssm` importable (the container): its `MambaLMHeadModel` with the seed benchmark's Mamba 1.4B
  config (d_model 2048, 48 layers, vocab 32000, RMSNorm, residual in fp32, fused add+norm), its own
  inference cache and CUDA-graph decode (`mamba_ssm.utils.generation.update_graph_cache`).
- otherwise, fla-core importable: a Mamba-2 1.3B-class model written here (d_model 2048, 48 layers,
  d_state 128, head dim 64, expand 2, one group, conv 4; 1.31e9 parameters). Prefill: its SSD scan is
  fla's `chunk_simple_gla` (a scalar decay per head and step is exactly Mamba-2's SSD: q = C, k = B,
  v = x * dt, log-decay g = dt * A, scale 1; B and C are broadcast to the heads, since simple_gla has no
  groups), the depthwise conv is fla's `causal_conv1d`, skip + gate + RMSNorm one Triton kernel of ours.
  Decode: one CUDA graph of the whole step, each layer in_proj, our conv-step kernel, our SSD-step kernel
  (the [B, heads, 128, 64] state read once and written once, in place, in the model dtype as mamba_ssm
  keeps it), our gated-norm kernel, out_proj (see .kernels).

`ssm_impl="torch"` runs the same Mamba-2 model with plain PyTorch (sequential scan, eager decode): the
reference the tests compare with; it runs on the CPU too, but is not a benchmark path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bench.models import ModelUnavailable


@dataclass(frozen=True)
class Mamba2Config:
    d_model: int = 2048
    n_layers: int = 48
    vocab_size: int = 32000
    d_state: int = 128
    headdim: int = 64
    expand: int = 2
    ngroups: int = 1
    d_conv: int = 4
    norm_eps: float = 1e-5

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def in_proj_dim(self) -> int:  # z, xBC, dt
        return self.d_inner + self.conv_dim + self.nheads


def mamba2_param_count(cfg: Mamba2Config) -> int:
    """Parameters of `Mamba2LM(cfg)` from the formula (tied embeddings)."""
    per_layer = (
        cfg.d_model * cfg.in_proj_dim
        + cfg.conv_dim * (cfg.d_conv + 1)
        + 3 * cfg.nheads
        + cfg.d_inner
        + cfg.d_inner * cfg.d_model
        + cfg.d_model
    )
    return cfg.n_layers * per_layer + cfg.vocab_size * cfg.d_model + cfg.d_model


# ---------------------------------------------------------------------------------------------
# SSD scan and step: PyTorch reference and fla-core kernels. Shapes: q, k [B, T, H, N]; v [B, T, H, P];
# g [B, T, H] (fp32 log decay); state [B, H, N, P]:  h_t = exp(g_t) h_{t-1} + k_t v_t^T,  o_t = q_t h_t.


def ssd_scan_torch(q, k, v, g, state: torch.Tensor | None = None):
    B, T, H, N = q.shape
    h = q.new_zeros(B, H, N, v.shape[-1], dtype=torch.float32) if state is None else state.float()
    out = []
    for t in range(T):
        h = h * g[:, t].float().exp()[..., None, None] + k[:, t].float()[..., :, None] * v[:, t].float()[..., None, :]
        out.append(torch.einsum("bhn,bhnp->bhp", q[:, t].float(), h))
    return torch.stack(out, 1), h


def ssd_scan_fla(q, k, v, g, want_state: bool):
    from fla.ops.simple_gla import chunk_simple_gla

    return chunk_simple_gla(q, k, v, g=g, scale=1.0, output_final_state=want_state)


# ---------------------------------------------------------------------------------------------


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.d_model, cfg.in_proj_dim, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(cfg.conv_dim, cfg.d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(cfg.conv_dim))
        self.dt_bias = nn.Parameter(torch.empty(cfg.nheads))
        self.A_log = nn.Parameter(torch.empty(cfg.nheads))
        self.D = nn.Parameter(torch.ones(cfg.nheads))
        self.norm_weight = nn.Parameter(torch.ones(cfg.d_inner))
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=False)

    def init_weights(self, g: torch.Generator, std: float) -> None:
        c = self.cfg
        self.in_proj.weight.normal_(0.0, std, generator=g)
        self.out_proj.weight.normal_(0.0, std, generator=g)
        bound = 1.0 / math.sqrt(c.d_conv)
        self.conv_weight.uniform_(-bound, bound, generator=g)
        self.conv_bias.uniform_(-bound, bound, generator=g)
        # Mamba-2's initialisation: dt log-uniform in [1e-3, 0.1] (bias = softplus^-1(dt)), A in [1, 16]
        dt = torch.exp(
            torch.rand(c.nheads, generator=g, device=g.device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
        ).clamp(min=1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log.copy_(torch.log(1 + 15 * torch.rand(c.nheads, generator=g, device=g.device)))

    def _split(self, zxbcdt: torch.Tensor):
        c = self.cfg
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.nheads], dim=-1)

    def _ssm_inputs(self, xbc: torch.Tensor, dt: torch.Tensor):
        """From the activated conv output: q (C), k (B) per head, v = x*dt, g = dt*A, and x (torch/fla prefill)."""
        c = self.cfg
        lead = xbc.shape[:-1]
        x, Bm, Cm = torch.split(xbc, [c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
        x = x.reshape(*lead, c.nheads, c.headdim)
        rep = c.nheads // c.ngroups

        def per_head(m):  # [..., G*N] -> [..., H, N] (heads of one group share B and C)
            m = m.reshape(*lead, c.ngroups, 1, c.d_state).expand(*lead, c.ngroups, rep, c.d_state)
            return m.reshape(*lead, c.nheads, c.d_state)

        dt = F.softplus(dt.float() + self.dt_bias.float())
        g = dt * -torch.exp(self.A_log.float())
        v = x * dt.to(x.dtype)[..., None]
        return per_head(Cm), per_head(Bm), v, g, x

    def _out_torch(self, o: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = (o.float() + x.float() * self.D.float()[:, None]).flatten(-2)
        y = y * F.silu(z.float())  # gated RMSNorm, gate before the norm (Mamba-2's norm_before_gate=False)
        y = F.rms_norm(y, (y.shape[-1],), None, self.cfg.norm_eps).to(z.dtype) * self.norm_weight
        return self.out_proj(y)

    def _out_fused(self, o: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        from .kernels import gated_rmsnorm

        return self.out_proj(gated_rmsnorm(o, x, z, self.D, self.norm_weight, self.cfg.norm_eps))

    def forward(self, u: torch.Tensor, impl: str, states: tuple[torch.Tensor, torch.Tensor] | None = None):
        """u [B, T, d_model] from position 0; writes the final conv/SSM states into `states` when given.
        impl "torch": plain PyTorch; "fla": fla-core's causal_conv1d and chunk_simple_gla, our gated norm."""
        c = self.cfg
        B, T, _ = u.shape
        zxbcdt = self.in_proj(u)
        z, xbc, dt = self._split(zxbcdt)
        if impl == "fla":
            from fla.modules.causal_conv1d import causal_conv1d

            xbc_act, _ = causal_conv1d(x=xbc, weight=self.conv_weight, bias=self.conv_bias, activation="silu")
        else:
            xbc_act = F.silu(
                F.conv1d(
                    xbc.transpose(1, 2),
                    self.conv_weight[:, None, :],
                    self.conv_bias,
                    padding=c.d_conv - 1,
                    groups=c.conv_dim,
                )[..., :T].transpose(1, 2)
            )
        q, k, v, g, x = self._ssm_inputs(xbc_act, dt)
        want = states is not None
        if impl == "fla":
            o, h = ssd_scan_fla(q, k, v, g, want)
        else:
            o, h = ssd_scan_torch(q, k, v, g)
        if want:
            conv_state, ssm_state = states
            W1 = c.d_conv - 1  # the conv state: the last d_conv-1 inputs (pre-activation), zeros before 0
            tail = xbc[:, -W1:].transpose(1, 2)
            conv_state.zero_()
            conv_state[..., W1 - tail.shape[-1] :].copy_(tail)
            ssm_state.copy_(h)
        if impl == "fla":
            return self._out_fused(o.flatten(-2), xbc_act[..., : c.d_inner], z)
        return self._out_torch(o, x, z)

    def step(self, u: torch.Tensor, impl: str, conv_state: torch.Tensor, ssm_state: torch.Tensor) -> torch.Tensor:
        """u [B, d_model], one token per sequence; updates both states in place.
        impl "torch": plain PyTorch; "triton": the fused step kernels of .kernels (conv, SSD, gated norm)."""
        c = self.cfg
        zxbcdt = self.in_proj(u)
        z, xbc, dt = self._split(zxbcdt)
        if impl == "triton":
            from .kernels import mamba2_conv_step, mamba2_ssd_step

            xbc_act = mamba2_conv_step(zxbcdt, c.d_inner, conv_state, self.conv_weight, self.conv_bias)
            o = mamba2_ssd_step(xbc_act, zxbcdt, c.d_inner + c.conv_dim, ssm_state, self.dt_bias, self.A_log, c.ngroups)
            return self._out_fused(o, xbc_act[:, : c.d_inner], z)
        window = torch.cat((conv_state, xbc[..., None]), dim=-1)  # [B, conv_dim, d_conv]
        conv_state.copy_(window[..., 1:])
        xbc_act = F.silu((window.float() * self.conv_weight.float()).sum(-1) + self.conv_bias.float()).to(u.dtype)
        q, k, v, g, x = self._ssm_inputs(xbc_act, dt)
        o, h = ssd_scan_torch(q[:, None], k[:, None], v[:, None], g[:, None], ssm_state)
        ssm_state.copy_(h)
        return self._out_torch(o[:, 0], x, z)


class Mamba2Block(nn.Module):
    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.ones(cfg.d_model))
        self.mixer = Mamba2Mixer(cfg)
        self.eps = cfg.norm_eps

    def _n(self, h):
        return F.rms_norm(h, (h.shape[-1],), self.norm, self.eps)

    def forward(self, h, impl, states=None):
        return h + self.mixer(self._n(h), impl, states)

    def step(self, h, impl, conv_state, ssm_state):
        return h + self.mixer.step(self._n(h), impl, conv_state, ssm_state)


class Mamba2LM(nn.Module):
    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Mamba2Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.Parameter(torch.ones(cfg.d_model))

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, seed: int = 0) -> None:
        if self.embed.weight.is_meta:
            return
        g = torch.Generator(device=self.embed.weight.device).manual_seed(seed)
        self.embed.weight.normal_(0.0, std, generator=g)
        for layer in self.layers:
            layer.mixer.init_weights(g, std)

    def new_states(self, batch: int, dtype: torch.dtype, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer: conv state [B, conv_dim, d_conv-1] and SSM state [B, heads, d_state, headdim]."""
        c = self.cfg
        return [
            (
                torch.zeros(batch, c.conv_dim, c.d_conv - 1, dtype=dtype, device=device),
                torch.zeros(batch, c.nheads, c.d_state, c.headdim, dtype=dtype, device=device),
            )
            for _ in range(c.n_layers)
        ]

    def _logits(self, h):
        return F.linear(F.rms_norm(h, (h.shape[-1],), self.norm_f, self.cfg.norm_eps), self.embed.weight)

    def forward(self, input_ids, impl: str = "torch", states=None, last_only: bool = False) -> torch.Tensor:
        h = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            h = layer(h, impl, None if states is None else states[i])
        if last_only:
            h = h[:, -1:]
        return self._logits(h)

    def step(self, tokens, impl: str, states) -> torch.Tensor:
        h = self.embed(tokens)
        for layer, (cs, ss) in zip(self.layers, states, strict=True):
            h = layer.step(h, impl, cs, ss)
        return self._logits(h)


# ---------------------------------------------------------------------------------------------


def _require_cuda(device: str) -> None:
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise ModelUnavailable(
            f"the Mamba baseline needs a CUDA GPU (device {device!r}, cuda available: {torch.cuda.is_available()})"
        )


def _probe(module: str) -> tuple[object | None, str]:
    try:
        mod = __import__(module)
        return mod, ""
    except Exception as e:  # ImportError, or a package that fails at import (no driver, bad build)
        return None, f"{module}: {type(e).__name__}: {e}"


class MambaBench:
    """The Mamba baseline behind the benchmark's `BenchModel` interface.

    ssm_impl: None picks mamba_ssm, else fla (ModelUnavailable if neither imports or there is no GPU);
    "mamba_ssm" / "fla" force one; "torch" runs the Mamba-2 model in plain PyTorch (test reference).
    Mamba-2 sizes are keyword arguments with the 1.3B values as defaults.
    """

    name = "mamba"

    def __init__(
        self,
        dtype: torch.dtype,
        device: str,
        num_layers: int | None = None,
        *,
        ssm_impl: str | None = None,
        cuda_graph: bool | None = None,
        seed: int = 0,
        **arch,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        if ssm_impl not in (None, "mamba_ssm", "fla", "torch"):
            raise ValueError(f"ssm_impl must be mamba_ssm, fla or torch, not {ssm_impl!r}")
        if ssm_impl != "torch":
            _require_cuda(device)
        reasons = []
        if ssm_impl in (None, "mamba_ssm"):
            mod, why = _probe("mamba_ssm")
            if mod is not None:
                self._init_mamba_ssm(mod, num_layers)
                return
            reasons.append(why)
        if ssm_impl in (None, "fla"):
            mod, why = _probe("fla")
            if mod is not None:
                self.impl = "fla"
                self.implementation = (
                    f"Mamba-2 architecture on fla-core {getattr(mod, '__version__', '?')} "
                    "simple_gla kernels (chunk_simple_gla + causal_conv1d prefill); decode: "
                    "our Triton conv/SSD-state/gated-norm step kernels in one CUDA graph; greedy"
                )
                self._init_mamba2(num_layers, arch, seed, cuda_graph)
                return
            reasons.append(why)
        if ssm_impl == "torch":
            self.impl = "torch"
            self.implementation = (
                "Mamba-2 architecture in plain PyTorch (sequential scan; reference, not a benchmark path)"
            )
            self._init_mamba2(num_layers, arch, seed, cuda_graph)
            return
        raise ModelUnavailable("no Mamba implementation importable: " + "; ".join(reasons))

    # -- Mamba-2 on fla-core (or the torch reference) --------------------------------------------

    def _init_mamba2(self, num_layers, arch, seed, cuda_graph) -> None:
        self.step_impl = "triton" if self.impl == "fla" else "torch"
        if num_layers is not None:
            arch = {**arch, "n_layers": num_layers}
        self.cfg = Mamba2Config(**arch)
        with torch.device(self.device):
            model = Mamba2LM(self.cfg)
        model.init_weights(seed=seed)
        self.model = model.to(self.dtype).eval().requires_grad_(False)
        self.params = sum(p.numel() for p in self.model.parameters())
        # for the fraction of the limit (ttt_infer.bench.limits): matmul FLOPs only (the SSD scan's are
        # small), and a decode step reads and writes each sequence's SSM and conv states once
        c, nbytes = self.cfg, torch.finfo(self.dtype).bits // 8
        self.weight_bytes = nbytes * self.params
        self.prefill_flops_per_token = 2 * self.params
        state = c.n_layers * (c.nheads * c.d_state * c.headdim + c.conv_dim * (c.d_conv - 1)) * nbytes
        self.decode_state_bytes = lambda context: 2 * state
        self.cuda_graph = (self.device.type == "cuda") if cuda_graph is None else cuda_graph
        self.states = None
        self._graph = None
        self._token: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, max_new_tokens: int = 0) -> None:
        if self.impl == "mamba_ssm":
            return self._prefill_mamba_ssm(input_ids, max_new_tokens)
        B = input_ids.shape[0]
        if max_new_tokens > 0:
            if self.states is None or self.states[0][0].shape[0] != B:
                self.states, self._graph = None, None
                self.states = self.model.new_states(B, self.dtype, self.device)
        else:
            self.states, self._graph = None, None
        logits = self.model(input_ids, self.impl, self.states, last_only=True)[:, -1]
        token = logits.argmax(-1)
        if self._graph is not None:
            self._token.copy_(token)
        else:
            self._token = token
        self.last_logits = logits

    def _step(self) -> torch.Tensor:
        logits = self.model.step(self._token, self.step_impl, self.states)
        self._token.copy_(logits.argmax(-1))
        return logits

    @torch.inference_mode()
    def decode(self) -> None:
        if self.impl == "mamba_ssm":
            return self._decode_mamba_ssm()
        if self.states is None:
            raise RuntimeError("decode() needs a prefill(input_ids, max_new_tokens > 0) first")
        if not self.cuda_graph:
            self.last_logits = self._step()
            return
        if self._graph is not None:
            self._graph.replay()
            self.last_logits = self._graph_logits
            return
        # first decode after new states: an eager step (the real one: it warms up the kernels), then capture
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            self.last_logits = self._step()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_logits = self._step()
        self._graph = graph

    # -- mamba_ssm -------------------------------------------------------------------------------

    def _init_mamba_ssm(self, mod, num_layers) -> None:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        self.impl = "mamba_ssm"
        cfg = MambaConfig(
            d_model=2048,
            n_layer=48 if num_layers is None else num_layers,
            vocab_size=32000,
            ssm_cfg={},
            rms_norm=True,
            residual_in_fp32=True,
            fused_add_norm=True,
            pad_vocab_size_multiple=8,
        )
        self.model = MambaLMHeadModel(cfg, device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.implementation = (
            f"mamba_ssm {getattr(mod, '__version__', '?')} MambaLMHeadModel (Mamba 1.4B config), "
            "its inference cache and CUDA-graph decode, greedy"
        )
        self._cg = None
        self._ip = None
        self._token = None
        self.last_logits = None

    def _prefill_mamba_ssm(self, input_ids, max_new_tokens):
        from mamba_ssm.utils.generation import update_graph_cache

        B, T = input_ids.shape
        if max_new_tokens <= 0:
            self._ip = None
            logits = self.model(input_ids, num_last_tokens=1).logits[:, -1]
        else:
            self._cg = update_graph_cache(self.model, self._cg, B, T, T + max_new_tokens)
            self._ip = self._cg.inference_params
            self._ip.reset(T + max_new_tokens, B)
            logits = self.model(input_ids, inference_params=self._ip, num_last_tokens=1).logits[:, -1]
            self._ip.seqlen_offset += T
        self._token = logits.argmax(-1)
        self.last_logits = logits

    def _decode_mamba_ssm(self):
        if self._ip is None:
            raise RuntimeError("decode() needs a prefill(input_ids, max_new_tokens > 0) first")
        B = self._token.shape[0]
        pos = torch.full((B, 1), self._ip.seqlen_offset, dtype=torch.long, device=self.device)
        logits = self._cg.run(self._token[:, None], pos, self._ip.seqlen_offset)[:, -1]
        self._ip.seqlen_offset += 1
        self._token = logits.argmax(-1)
        self.last_logits = logits

    def close(self) -> None:
        self.states = None
        self._graph = None
        self._cg = self._ip = None
        self.model = None
        self.last_logits = None
