"""What the benchmark times: one adapter per model family behind a common interface.

    m = make_bench_model("ttt-linear", dtype=torch.float16, device="cuda", backend="kernels")
    m.prefill(input_ids)                       # the prompt; logits of the last position only
    m.prefill(input_ids, max_new_tokens=128)   # ... keeping a cache sized for 128 decode steps
    m.decode()                                 # one token per sequence, continuing the last prefill

Each adapter says which implementation runs (`implementation`) and how many parameters it has.
Baselines live in ttt_infer/baselines/ and follow the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

MODELS = ("ttt-linear", "ttt-mlp", "transformer", "mamba")


class BenchModel(Protocol):
    name: str
    implementation: str
    params: int
    # for the fraction of the physical limit (optional): FLOPs per prompt token (a number, or a
    # function of the prompt length), bytes of weights read per decode step, and state bytes per
    # sequence read per decode step as a function of the context length
    prefill_flops_per_token: float | Callable[[int], float]
    weight_bytes: float
    decode_state_bytes: Callable[[float], float]

    def prefill(self, input_ids: torch.Tensor, max_new_tokens: int = 0) -> None: ...

    def decode(self) -> None: ...

    def close(self) -> None: ...


class ModelUnavailable(RuntimeError):
    """This model cannot run here (missing package, extension, GPU); recorded as a skip with the reason."""


class TTTBench:
    """TTT-Linear / TTT-MLP, 1b config, Mamba backbone (as the seed benchmarked), any backend.

    compiler: the torch.compile backend of "reference-compiled" (inductor; the CPU tests use aot_eager).
    """

    def __init__(
        self,
        layer_type: str,
        dtype: torch.dtype,
        device: str,
        backend: str,
        num_layers: int | None = None,
        size: str = "1b",
        compiler: str = "inductor",
        **config_overrides,
    ) -> None:
        from ..config import TTTConfig
        from ..kernels import KernelsUnavailable
        from ..model import TTTForCausalLM
        from .limits import ttt_limits

        over = dict(config_overrides) if num_layers is None else {**config_overrides, "num_hidden_layers": num_layers}
        cfg = TTTConfig.standard(size, layer_type, "mamba", **over)
        with torch.device(device):
            self.model = TTTForCausalLM(cfg).to(dtype).eval()
        try:
            self.model.backend = backend
        except KernelsUnavailable as e:
            raise ModelUnavailable(str(e)) from e
        self.name = f"ttt-{layer_type}"
        if backend == "reference-compiled":
            self.model._backend.compiler = compiler
        self.implementation = {
            "kernels": "kernels: ThunderKittens prefill + Triton decode, CUDA-graph decode",
            "reference": "reference: PyTorch eager (dual-form prefill, primal-form decode)",
            "reference-compiled": (
                "reference-compiled: PyTorch eager dual-form prefill; decode step (whole model, primal form) "
                f"torch.compile'd, backend {compiler}, fullgraph, static shapes, compiled in the warm-up steps"
            ),
        }[backend]
        lim = ttt_limits(cfg, weight_bytes_per_param=torch.finfo(dtype).bits // 8)
        self.params = lim["params"]
        self.prefill_flops_per_token = lim["prefill_flops_per_token"]
        self.weight_bytes = lim["weight_bytes"]
        self.decode_state_bytes = lambda context: lim["state_bytes_per_seq"]  # independent of the context
        self.cache = None
        self._decoder = None
        self._token: torch.Tensor | None = None

    def prefill(self, input_ids: torch.Tensor, max_new_tokens: int = 0) -> None:
        self.cache = self.model.new_cache(input_ids.shape[0])
        logits = self.model(input_ids, self.cache, last_only=True)
        self._token = logits[:, -1].argmax(-1)
        self._decoder = None
        if max_new_tokens and self.model.backend == "kernels" and self.model.device.type == "cuda":
            from ..kernels.graphs import CUDAGraphDecoder

            self._decoder = CUDAGraphDecoder(self.model, self.cache)  # captured at the first decode()

    def decode(self) -> None:
        if self._decoder is not None:
            logits = self._decoder.step(self._token)
        else:
            logits = self.model.decode_step(self._token, self.cache)
        self._token = logits.argmax(-1)

    def details(self, point) -> dict:
        """What the kernels chose for this point: the decode kernel configuration the tuner picked."""
        if point.kind == "prefill" or self.model.backend != "kernels" or self.model.device.type != "cuda":
            return {}
        from ..kernels import decode

        cfg = self.model.config
        key = (cfg.ttt_layer_type, point.batch * cfg.num_attention_heads, self.model.dtype)
        tuned = decode.TUNED.get(key)
        return {"decode_kernel_config": decode.tune.config_text(tuned)} if tuned else {}

    def close(self) -> None:
        self.cache = self._decoder = self.model = None


def make_bench_model(
    name: str, dtype: torch.dtype, device: str, backend: str = "kernels", num_layers: int | None = None
) -> BenchModel:
    """The adapter for `name` (ttt-linear, ttt-mlp, transformer, mamba); ModelUnavailable if it cannot run."""
    if name in ("ttt-linear", "ttt-mlp"):
        return TTTBench(name.split("-")[1], dtype, device, backend, num_layers)
    if name == "transformer":
        from ..baselines.transformer import TransformerBench

        return TransformerBench(dtype, device, num_layers)
    if name == "mamba":
        from ..baselines.mamba import MambaBench

        return MambaBench(dtype, device, num_layers)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
