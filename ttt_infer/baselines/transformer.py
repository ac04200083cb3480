"""Transformer baseline: the Llama architecture of the TTT paper's 1.3B Transformer.

hidden 2048, 24 layers, 32 heads of 64, SwiGLU ffn 5504, vocab 32000, RMSNorm eps 1e-6, RoPE theta
10000, tied embeddings; random weights N(0, 0.02) (the benchmark measures speed, not quality).

What makes it a strong baseline (the recipe of gpt-fast, written here from scratch):
- prefill: one fused QKV matmul and one fused gate/up matmul per layer, causal
  `scaled_dot_product_attention` (flash / cuDNN backends on the GPU), logits of the last position only;
- on the GPU, two small Triton kernels (.kernels) stand in for what gpt-fast gets from torch.compile:
  RoPE of q and k fused with the K/V write into the cache, and SwiGLU's silu(gate) * up;
- a static KV cache allocated for exactly prompt + max_new_tokens positions, written during prefill
  (plain prefill without max_new_tokens allocates none);
- decode: the whole step (embedding, 24 layers, head, greedy argmax, position increment) captured
  once as one CUDA graph; the position and the attention mask over the static cache are read from
  device tensors, so every replay continues where the last one stopped, with no host work. The graph
  is captured at the first decode after a prefill that allocated a new cache (time it after warm-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaConfig:
    dim: int = 2048
    n_layers: int = 24
    n_heads: int = 32
    ffn_dim: int = 5504
    vocab_size: int = 32000
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def llama_param_count(cfg: LlamaConfig) -> int:
    """Parameters of `Llama(cfg)` from the formula (tied embeddings: the head adds none)."""
    per_layer = 4 * cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    return cfg.n_layers * per_layer + cfg.vocab_size * cfg.dim + cfg.dim


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the head dimension ([..., T, H, D]; cos/sin [T, D/2])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class KVCache:
    """Static per-layer K and V buffers [B, H, S, D]; S = prompt + max_new_tokens exactly."""

    def __init__(self, cfg: LlamaConfig, batch: int, seqlen: int, dtype: torch.dtype, device) -> None:
        shape = (batch, cfg.n_heads, seqlen, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.batch, self.seqlen = batch, seqlen
        # the positions of the cache, compared with the device-side position to form the mask
        self.slots = torch.arange(seqlen, device=device)


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn_norm = nn.Parameter(torch.ones(cfg.dim))
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.ffn_norm = nn.Parameter(torch.ones(cfg.dim))
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def _q_and_kv(self, x, rope, start, k_dst, v_dst, fused: bool) -> torch.Tensor:
        """q [B, T, H, D] rotated; rotated k and v written into k_dst/v_dst [B, H, *, D] at start + t."""
        B, T, _ = x.shape
        H, D = self.cfg.n_heads, self.cfg.head_dim
        qkv = self.wqkv(_rms_norm(x, self.attn_norm, self.cfg.norm_eps))
        if fused:
            from .kernels import rope_qkv

            q = qkv.new_empty(B, T, H, D)
            rope_qkv(qkv, q, k_dst, v_dst, start, self.cfg.rope_theta)
            return q
        cos, sin, positions = rope
        q, k, v = qkv.view(B, T, 3, H, D).unbind(2)
        k_dst.index_copy_(2, positions, _rope(k, cos, sin).transpose(1, 2))
        v_dst.index_copy_(2, positions, v.transpose(1, 2))
        return _rope(q, cos, sin)

    def forward(self, x, rope, start, k_dst, v_dst, mask=None, fused: bool = False) -> torch.Tensor:
        """Prefill (mask None: causal over positions 0..T-1 of k_dst/v_dst) or one decode step (mask over
        the whole static cache)."""
        T = x.shape[1]
        q = self._q_and_kv(x, rope, start, k_dst, v_dst, fused).transpose(1, 2)  # [B, H, T, D]
        if mask is None:
            o = F.scaled_dot_product_attention(q, k_dst[:, :, :T], v_dst[:, :, :T], is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k_dst, v_dst, attn_mask=mask)
        B = x.shape[0]
        h = x + self.wo(o.transpose(1, 2).reshape(B, T, self.cfg.dim))
        gu = self.w13(_rms_norm(h, self.ffn_norm, self.cfg.norm_eps))
        if fused:
            from .kernels import silu_mul

            a = silu_mul(gu)
        else:
            gate, up = gu.chunk(2, dim=-1)
            a = F.silu(gate) * up
        return h + self.w2(a)


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.Parameter(torch.ones(cfg.dim))
        self.fused = False  # the Triton kernels of .kernels (RoPE + cache write, SwiGLU) instead of torch ops
        self._rope_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def init_weights(self, std: float = 0.02, seed: int = 0) -> None:
        if self.embed.weight.is_meta:
            return
        g = torch.Generator(device=self.embed.weight.device).manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, std, generator=g)

    def rope_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [>= length, D/2] in the model's dtype (computed in fp32, cached; the torch path)."""
        if self._rope_cache is None or self._rope_cache[0] < length:
            dev, dt = self.embed.weight.device, self.embed.weight.dtype
            D = self.cfg.head_dim
            inv = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
            ang = torch.outer(torch.arange(length, device=dev, dtype=torch.float32), inv)
            self._rope_cache = (length, ang.cos().to(dt), ang.sin().to(dt))
        return self._rope_cache[1], self._rope_cache[2]

    def _rope(self, start: torch.Tensor, T: int, table_len: int):
        if self.fused:
            return None
        positions = start + torch.arange(T, device=start.device)
        cos, sin = self.rope_tables(table_len)
        return cos.index_select(0, positions), sin.index_select(0, positions), positions

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(_rms_norm(h, self.norm, self.cfg.norm_eps), self.embed.weight)  # tied head

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits [B, T or 1, V] of a prompt starting at position 0; fills `cache` when given."""
        B, T = input_ids.shape
        if cache is not None and T > cache.seqlen:
            raise ValueError(f"prompt of {T} tokens does not fit the cache of {cache.seqlen}")
        dev = input_ids.device
        start = torch.zeros(1, dtype=torch.long, device=dev)
        rope = self._rope(start, T, T if cache is None else cache.seqlen)
        h = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            if cache is not None:
                kd, vd = cache.k[i], cache.v[i]
            else:  # fresh K/V in the [B, T, H, D] memory layout, seen as [B, H, T, D]
                shape = (B, T, self.cfg.n_heads, self.cfg.head_dim)
                kd = torch.empty(shape, dtype=h.dtype, device=dev).transpose(1, 2)
                vd = torch.empty(shape, dtype=h.dtype, device=dev).transpose(1, 2)
            h = layer(h, rope, start, kd, vd, None, self.fused)
        if last_only:
            h = h[:, -1:]
        return self._logits(h)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits [B, V] of one token per sequence at device position `pos` ([1] int64); no host sync."""
        rope = self._rope(pos, 1, cache.seqlen)
        mask = (cache.slots <= pos).view(1, 1, 1, cache.seqlen)
        h = self.embed(tokens[:, None])
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, pos, cache.k[i], cache.v[i], mask, self.fused)
        return self._logits(h)[:, 0]


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401

        return True
    except Exception:
        return False


class TransformerBench:
    """The Transformer baseline behind the benchmark's `BenchModel` interface (ttt_infer.bench.models).

    Architecture sizes are keyword arguments with the paper's 1.3B values as defaults (tests use a tiny
    one). On CUDA the decode step is one CUDA graph, captured at the first decode after a prefill that
    allocated a new cache; a later prefill with the same batch and cache length reuses cache and graph.
    """

    name = "transformer"

    def __init__(
        self,
        dtype: torch.dtype,
        device: str,
        num_layers: int | None = None,
        *,
        dim: int = 2048,
        n_heads: int = 32,
        ffn_dim: int = 5504,
        vocab_size: int = 32000,
        norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        n_layers: int = 24,
        cuda_graph: bool | None = None,
        fused_kernels: bool | None = None,
        seed: int = 0,
    ) -> None:
        self.cfg = LlamaConfig(
            dim=dim,
            n_layers=n_layers if num_layers is None else num_layers,
            n_heads=n_heads,
            ffn_dim=ffn_dim,
            vocab_size=vocab_size,
            norm_eps=norm_eps,
            rope_theta=rope_theta,
        )
        self.device = torch.device(device)
        self.dtype = dtype
        with torch.device(self.device):
            model = Llama(self.cfg)
        model.init_weights(seed=seed)
        self.model = model.to(dtype).eval().requires_grad_(False)
        if fused_kernels is None:
            fused_kernels = self.device.type == "cuda" and _triton_available()
        self.model.fused = fused_kernels
        self.params = sum(p.numel() for p in self.model.parameters())
        # for the fraction of the limit (ttt_infer.bench.limits): causal attention adds 2*T*dim FLOPs
        # per token and layer (QK^T and PV over T/2 keys on average); a decode step reads the KV cache
        c, nbytes = self.cfg, torch.finfo(dtype).bits // 8
        self.weight_bytes = nbytes * self.params
        self.prefill_flops_per_token = lambda T: 2 * self.params + 2 * c.n_layers * T * c.dim
        self.decode_state_bytes = lambda context: 2 * c.n_layers * c.dim * context * nbytes
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.implementation = (
            f"PyTorch {torch.__version__} Llama ({self.cfg.n_layers} layers, dim {self.cfg.dim}): fused QKV and "
            "gate/up matmuls, SDPA causal prefill (flash/cuDNN), static KV cache of prompt+max_new_tokens, "
            + ("CUDA-graph decode" if self.cuda_graph else "eager decode")
            + " (SDPA with a mask over the cache), "
            + ("Triton RoPE+KV-write and SwiGLU kernels, " if fused_kernels else "")
            + "greedy"
        )
        self.cache: KVCache | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_refs = None
        self._token: torch.Tensor | None = None  # [B] int64, the next input token (device)
        self._pos: torch.Tensor | None = None  # [1] int64, its position (device)
        self.last_logits: torch.Tensor | None = None  # [B, V] of the last prefill/decode
        self._left = 0  # decode steps the cache still has room for

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, max_new_tokens: int = 0) -> None:
        B, T = input_ids.shape
        if max_new_tokens > 0:
            S = T + max_new_tokens
            if self.cache is None or (self.cache.batch, self.cache.seqlen) != (B, S):
                self.cache, self._graph = None, None  # free the old buffers before allocating
                self.cache = KVCache(self.cfg, B, S, self.dtype, self.device)
            cache = self.cache
        else:
            self.cache, self._graph, cache = None, None, None
        logits = self.model(input_ids, cache, last_only=True)[:, -1]
        token = logits.argmax(-1)
        pos = torch.full((1,), T, dtype=torch.long, device=self.device)
        if self._graph is not None:  # same static buffers as the captured graph
            self._token.copy_(token)
            self._pos.copy_(pos)
        else:
            self._token, self._pos = token, pos
        self.last_logits = logits
        self._left = max_new_tokens

    def _step(self) -> torch.Tensor:
        logits = self.model.step(self._token, self._pos, self.cache)
        self._token.copy_(logits.argmax(-1))
        self._pos.add_(1)
        return logits

    @torch.inference_mode()
    def decode(self) -> None:
        if self.cache is None:
            raise RuntimeError("decode() needs a prefill(input_ids, max_new_tokens > 0) first")
        if self._left <= 0:
            raise RuntimeError("the KV cache is full: prefill again with a larger max_new_tokens")
        self._left -= 1
        if not self.cuda_graph:
            self.last_logits = self._step()
            return
        if self._graph is None:
            self._capture()
        self._graph.replay()
        self.last_logits = self._graph_logits

    def _capture(self) -> None:
        token, pos = self._token.clone(), self._pos.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up (lazy init, cuBLAS workspaces) outside the graph
            self._step()
        torch.cuda.current_stream().wait_stream(s)
        # the warm-up wrote the K/V of this very step at `pos`; the replay writes the same values there
        self._token.copy_(token)
        self._pos.copy_(pos)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_logits = self._step()
        self._graph = graph
        # the graph reads these rope tables: keep them alive even if a longer prompt regrows the cache
        self._graph_refs = self.model._rope_cache

    def close(self) -> None:
        self._graph = self._graph_refs = None
        self.cache = None
        self.model = None
        self.last_logits = None
