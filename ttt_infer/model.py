"""TTT language model: blocks, backbones, TTTForCausalLM with prefill, decode and generate."""

from __future__ import annotations

import torch
from torch import nn

from .config import TTTConfig
from .layers import TORCH_GLUE, ConvBlock, RMSNorm, SwiGLU, TTTLayer
from .ttt.cache import ConvState, ModelCache, state_dtype
from .ttt.ops import BACKENDS, Backend, get_backend


class Block(nn.Module):
    """[x += conv(norm(x))]  x += TTT(seq_norm(x))  x += SwiGLU(ffn_norm(x))."""

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        if config.pre_conv:
            self.conv = ConvBlock(config)
        self.seq_modeling_block = TTTLayer(config)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.seq_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cache: ModelCache, i: int, backend: Backend, seqlen: int | None) -> torch.Tensor:
        """`seqlen`: the python position (cache.seqlen), or None in a compiled decode step."""
        glue = getattr(backend, "glue", None)  # fused kernels for the work around the TTT op, if the backend has them
        if cache.pre_conv is not None:  # x + conv(norm(x)), then the TTT layer's norm: one kernel at decode
            x, h = (glue or TORCH_GLUE).pre_block(
                x, self.conv.norm, self.conv.conv, cache.pre_conv[i].history, self.seq_norm
            )
        else:
            h = self.seq_norm(x, glue)
        qk_conv = cache.qk_conv[i] if cache.qk_conv is not None else None
        x = self.seq_modeling_block(h, cache.ttt[i], qk_conv, seqlen, cache.position, backend, residual=x)
        return self.mlp(self.ffn_norm(x, glue), glue, residual=x)


class TTTModel(nn.Module):
    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class TTTForCausalLM(nn.Module):
    """The language model. `backend` ("reference", "reference-compiled" or "kernels") picks the TTT
    inner-loop implementation ("reference-compiled": the reference with torch.compile'd decode steps).

    model(input_ids) -> logits [B, T, vocab] (fp32; fp64 for an fp64 model); pass `cache` to continue a sequence.
    """

    def __init__(self, config: TTTConfig, backend: str = "reference") -> None:
        super().__init__()
        self.config = config
        self.model = TTTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._init_weights()
        self.backend = backend

    def _init_weights(self) -> None:
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)

    # --- backend ---------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend.name

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
        self._backend = get_backend(name)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # --- cache -----------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int) -> ModelCache:
        """An empty cache for `batch_size` sequences: TTT states at the learned init, zero conv histories."""
        cfg, dev = self.config, self.device

        def convs() -> list[ConvState]:
            shape = (batch_size, cfg.conv_kernel - 1, cfg.hidden_size)  # the last inputs in time order, as x
            return [ConvState(torch.zeros(shape, device=dev, dtype=self.dtype)) for _ in self.model.layers]

        return ModelCache(
            ttt=[layer.seq_modeling_block.new_state(batch_size) for layer in self.model.layers],
            pre_conv=convs() if cfg.pre_conv else None,
            qk_conv=convs() if cfg.share_qk else None,
            device=dev,
        )

    # --- forward ---------------------------------------------------------------------------------------
    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2-D tensor [batch, seq_len]")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be int64 or int32, got {input_ids.dtype}")
        if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(f"input_ids must hold at least one token per sequence, got shape {tuple(input_ids.shape)}")
        if input_ids.device != self.device:
            raise ValueError(f"input_ids are on {input_ids.device}, the model on {self.device}")

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, cache: ModelCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits [B, T, vocab] in fp32 (fp64 for fp64 models) (or [B, 1, vocab] with last_only). Updates `cache` in place."""
        self._check_ids(input_ids)
        if cache is None:
            cache = self.new_cache(input_ids.shape[0])
        elif cache.batch_size != input_ids.shape[0]:
            raise ValueError(f"cache holds {cache.batch_size} sequences, input_ids {input_ids.shape[0]}")
        if input_ids.shape[1] == 1 and getattr(self._backend, "compiled_decode", False):
            logits = self._backend.compile(self._decode_graph)(input_ids, cache)
        else:
            logits = self._logits(input_ids, cache, cache.seqlen, last_only)
        cache.advance(input_ids.shape[1])
        return logits

    def _logits(self, input_ids: torch.Tensor, cache: ModelCache, seqlen: int | None, last_only: bool) -> torch.Tensor:
        """The model body: updates the cache's states (not its position) and returns the logits."""
        x = self.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cache, i, self._backend, seqlen)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.model.norm(x, getattr(self._backend, "glue", None))).to(state_dtype(self.dtype))

    def _decode_graph(self, input_ids: torch.Tensor, cache: ModelCache) -> torch.Tensor:
        """One decode step with no python position (only cache.position): what "reference-compiled" compiles."""
        return self._logits(input_ids, cache, None, False)

    def decode_step(self, tokens: torch.Tensor, cache: ModelCache) -> torch.Tensor:
        """One token per sequence, tokens [B] -> logits [B, vocab]."""
        return self(tokens[:, None], cache)[:, -1]

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        cuda_graph: bool | None = None,
    ) -> torch.Tensor:
        """Prefill the prompt, then decode `max_new_tokens`: token ids [B, T + max_new_tokens].

        temperature 0 is greedy; otherwise softmax(logits / temperature), restricted to the top_k.
        cuda_graph: decode through one captured CUDA graph of the whole step (kernels.graphs); default:
        on for backend "kernels" on a CUDA device.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        cache = self.new_cache(input_ids.shape[0])
        logits = self(input_ids, cache, last_only=True)[:, -1]
        if cuda_graph is None:
            cuda_graph = self.backend == "kernels" and self.device.type == "cuda"
        if cuda_graph and max_new_tokens > 1:
            from .kernels.graphs import CUDAGraphDecoder

            decode = CUDAGraphDecoder(self, cache).step
        else:
            decode = lambda tok: self.decode_step(tok, cache)
        out = [input_ids]
        for step in range(max_new_tokens):
            tok = sample(logits, temperature, top_k, generator)
            out.append(tok[:, None].to(input_ids.dtype))
            if step + 1 < max_new_tokens:
                logits = decode(tok)
        return torch.cat(out, dim=1)


def sample(
    logits: torch.Tensor, temperature: float, top_k: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Next tokens [B] from logits [B, vocab]: argmax when temperature == 0."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
