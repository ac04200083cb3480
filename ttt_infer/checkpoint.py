"""Checkpoints in ttt-lm-pytorch's `save_pretrained` format: config.json + model.safetensors
(or a sharded model.safetensors.index.json, or pytorch_model.bin)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import TTTConfig
from .model import TTTForCausalLM

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names what is wrong."""


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if (path / SAFETENSORS).exists():
        return load_file(path / SAFETENSORS)
    if (path / SAFETENSORS_INDEX).exists():
        index = json.loads((path / SAFETENSORS_INDEX).read_text())
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            if not (path / shard).exists():
                raise CheckpointError(f"{path}: shard {shard} named in {SAFETENSORS_INDEX} is missing")
            out.update(load_file(path / shard))
        return out
    if (path / TORCH_BIN).exists():
        obj = torch.load(path / TORCH_BIN, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path / TORCH_BIN}: expected a state dict, got {type(obj).__name__}")
        return obj
    raise CheckpointError(f"{path}: no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN})")


def _normalise(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept the one known layout variant: learnable_ttt_lr_weight stored as [nh, C, 1] (same data)."""
    out = dict(tensors)
    for name, t in tensors.items():
        if name.endswith("learnable_ttt_lr_weight") and name in expected:
            want = expected[name].shape
            if t.shape != want and t.dim() == 3 and t.shape == (want[0], want[2], want[1]):
                out[name] = t.reshape(want)
    return out


def check_tensors(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], config: TTTConfig, where: str
) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    optional = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(tensors) - optional)
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{n}: expected {tuple(expected[n].shape)}, got {tuple(tensors[n].shape)}"
        for n in sorted(set(tensors) & set(expected))
        if tensors[n].shape != expected[n].shape
    ]
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} missing tensor(s): " + ", ".join(missing[:12]) + (" ..." if len(missing) > 12 else "")
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected tensor(s): "
            + ", ".join(unexpected[:12])
            + (" ..." if len(unexpected) > 12 else "")
        )
    if shapes:
        problems.append("wrong shape(s): " + "; ".join(shapes[:12]))
    if problems:
        raise CheckpointError(f"{where}: " + " | ".join(problems))
    if config.tie_word_embeddings and "lm_head.weight" in tensors:
        if not torch.equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"]):
            raise CheckpointError(
                f"{where}: tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight"
            )


def load_pretrained(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    backend: str = "reference",
) -> TTTForCausalLM:
    """Load a ttt-lm-pytorch checkpoint directory. dtype defaults to float32, device to CPU."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint directory")
    if not (path / "config.json").exists():
        raise CheckpointError(f"{path}: no config.json")
    try:
        config = TTTConfig.from_json(path / "config.json")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from e
    tensors = _read_tensors(path)
    with torch.device("meta"):
        model = TTTForCausalLM(config)
    expected = model.state_dict()
    tensors = _normalise(tensors, expected)
    check_tensors(tensors, expected, config, str(path))
    model = model.to_empty(device="cpu")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    with torch.no_grad():
        model.load_state_dict(tensors, strict=not config.tie_word_embeddings)
    model = model.to(device=device or "cpu", dtype=dtype or torch.float32)
    model.backend = backend
    return model.eval()


def save_pretrained(model: TTTForCausalLM, path: str | Path, safe_serialization: bool = True) -> None:
    """Write `model` as ttt-lm-pytorch does: config.json + model.safetensors (or pytorch_model.bin)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_json(path / "config.json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # stored once, as the embedding
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, path / SAFETENSORS, metadata={"format": "pt"})
    else:
        torch.save(state, path / TORCH_BIN)
