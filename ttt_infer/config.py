"""TTTConfig: the model hyper-parameters, in the key names of ttt-lm-pytorch's config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# hidden, ffn, layers, heads (head dim = hidden / heads)
STANDARD_SIZES: dict[str, dict[str, int]] = {
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12),
    "350m": dict(hidden_size=1024, intermediate_size=2736, num_hidden_layers=24, num_attention_heads=16),
    "760m": dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "1b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24, num_attention_heads=32),
}

BACKBONES: dict[str, dict[str, bool]] = {
    "transformer": dict(pre_conv=False, share_qk=False, use_gate=False),
    "mamba": dict(pre_conv=True, share_qk=True, use_gate=True),
}

LAYER_TYPES = ("linear", "mlp")


@dataclass
class TTTConfig:
    """Hyper-parameters of a TTT language model (defaults: the 1b TTT-Linear, Transformer backbone)."""

    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5504
    num_hidden_layers: int = 24
    num_attention_heads: int = 32
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    pad_token_id: int | None = None
    bos_token_id: int = 1
    eos_token_id: int = 2
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    use_gate: bool = False
    share_qk: bool = False
    ttt_layer_type: str = "linear"
    ttt_base_lr: float = 1.0
    mini_batch_size: int = 16
    pre_conv: bool = False
    conv_kernel: int = 4
    # keys we read but do not use (training only); kept so that a round trip preserves them
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.ttt_layer_type not in LAYER_TYPES:
            raise ValueError(f"ttt_layer_type must be one of {LAYER_TYPES}, got {self.ttt_layer_type!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even (rotary embedding)")
        if self.hidden_act != "silu":
            raise ValueError(f"only hidden_act='silu' is supported, got {self.hidden_act!r}")
        for name in ("mini_batch_size", "conv_kernel", "vocab_size", "num_hidden_layers", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def backbone(self) -> str:
        for name, flags in BACKBONES.items():
            if all(getattr(self, k) == v for k, v in flags.items()):
                return name
        return "custom"

    @classmethod
    def standard(cls, size: str, layer_type: str = "linear", backbone: str = "mamba", **overrides: Any) -> TTTConfig:
        """One of the paper's sizes ("125m", "350m", "760m", "1b") with a layer type and backbone preset."""
        if size not in STANDARD_SIZES:
            raise ValueError(f"unknown size {size!r}; choose from {sorted(STANDARD_SIZES)}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        kw: dict[str, Any] = {**STANDARD_SIZES[size], **BACKBONES[backbone], "ttt_layer_type": layer_type}
        if layer_type == "mlp":
            kw["ttt_base_lr"] = 0.1  # the JAX configs' value for TTT-MLP
        kw.update(overrides)
        return cls(**kw)

    # --- config.json ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TTTConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kw, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **d, "model_type": "ttt"}

    @classmethod
    def from_json(cls, path: str | Path) -> TTTConfig:
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(d)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
