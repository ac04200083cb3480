"""Checkpoints in ttt-lm-pytorch's format: round trips, a hand-written directory, clear errors."""

import json

import pytest
import torch
from _models import VOCAB, tiny_config, tiny_model
from safetensors.torch import load_file, save_file

from ttt_infer import load_pretrained, save_pretrained
from ttt_infer.checkpoint import CheckpointError

# HF's save_pretrained adds keys our config does not use; loading must accept them
HF_EXTRA = {
    "architectures": ["TTTForCausalLM"],
    "torch_dtype": "float32",
    "transformers_version": "4.40.0",
    "use_cache": False,
    "pretraining_tp": 1,
    "scan_checkpoint_group_size": 0,
}


@pytest.mark.parametrize("layer_type", ["linear", "mlp"])
@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
@pytest.mark.parametrize("safe", [True, False])
def test_round_trip_reproduces_logits(tmp_path, layer_type, backbone, safe):
    model = tiny_model(layer_type, backbone, dtype=torch.float32)
    save_pretrained(model, tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    loaded = load_pretrained(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 21))
    assert torch.equal(loaded(ids), model(ids))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert load_pretrained(tmp_path, dtype=torch.float64).dtype == torch.float64


def _hand_written_tensors(cfg, g):
    """Every tensor of a Mamba-backbone TTT-MLP checkpoint, named and shaped as MATH.md lists them."""
    C, nh, f, F_, k = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size, cfg.conv_kernel
    r = lambda *s: torch.randn(*s, generator=g) * 0.05
    t = {"model.embed_tokens.weight": r(cfg.vocab_size, C), "model.norm.weight": 1 + r(C)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        s = p + "seq_modeling_block."
        t.update(
            {
                p + "seq_norm.weight": 1 + r(C),
                p + "ffn_norm.weight": 1 + r(C),
                p + "mlp.gate_proj.weight": r(F_, C),
                p + "mlp.up_proj.weight": r(F_, C),
                p + "mlp.down_proj.weight": r(C, F_),
                p + "conv.conv.weight": r(C, 1, k),
                p + "conv.conv.bias": r(C),
                p + "conv.norm.weight": 1 + r(C),
                s + "q_proj.weight": r(C, C),
                s + "v_proj.weight": r(C, C),
                s + "o_proj.weight": r(C, C),
                s + "g_proj.weight": r(C, C),
                s + "conv_q.weight": r(C, 1, k),
                s + "conv_q.bias": r(C),
                s + "conv_k.weight": r(C, 1, k),
                s + "conv_k.bias": r(C),
                s + "W1": r(nh, f, 4 * f),
                s + "b1": r(nh, 1, 4 * f),
                s + "W2": r(nh, 4 * f, f),
                s + "b2": r(nh, 1, f),
                s + "ttt_norm_weight": 1 + r(nh, f),
                s + "ttt_norm_bias": r(nh, f),
                s + "learnable_ttt_lr_weight": r(nh, 1, C),
                s + "learnable_ttt_lr_bias": r(nh, 1),
                s + "learnable_token_idx": r(16),
                s + "post_norm.weight": 1 + r(C),
                s + "post_norm.bias": r(C),
            }
        )
    return t


def test_hand_written_checkpoint_lands_every_tensor(tmp_path):
    cfg = tiny_config("mlp", "mamba")
    tensors = _hand_written_tensors(cfg, torch.Generator().manual_seed(0))
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), **HF_EXTRA}))
    model = load_pretrained(tmp_path)
    params = dict(model.named_parameters())
    for name, t in tensors.items():
        assert torch.equal(params[name], t), name
    block = model.model.layers[1].seq_modeling_block
    assert torch.equal(block.W2, tensors["model.layers.1.seq_modeling_block.W2"])
    assert torch.equal(model.lm_head.weight, tensors["model.embed_tokens.weight"])
    assert model.config.extra["architectures"] == ["TTTForCausalLM"]


def test_lr_weight_stored_as_nh_c_1_is_accepted(tmp_path):
    model = tiny_model("linear", "transformer", dtype=torch.float32)
    save_pretrained(model, tmp_path)
    t = load_file(tmp_path / "model.safetensors")
    name = "model.layers.0.seq_modeling_block.learnable_ttt_lr_weight"
    t[name] = t[name].reshape(t[name].shape[0], -1, 1)
    save_file(t, tmp_path / "model.safetensors")
    ids = torch.randint(0, VOCAB, (1, 9))
    assert torch.equal(load_pretrained(tmp_path)(ids), model(ids))


@pytest.fixture
def saved(tmp_path):
    save_pretrained(tiny_model("linear", "mamba", dtype=torch.float32), tmp_path)
    return tmp_path, load_file(tmp_path / "model.safetensors")


def test_missing_tensor_is_named(saved):
    path, t = saved
    del t["model.layers.1.seq_modeling_block.W1"]
    save_file(t, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): model.layers.1.seq_modeling_block.W1"):
        load_pretrained(path)


def test_misnamed_tensor_is_named(saved):
    path, t = saved
    t["model.layers.0.seq_modeling_block.W_1"] = t.pop("model.layers.0.seq_modeling_block.W1")
    save_file(t, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing.*seq_modeling_block.W1.*unexpected.*seq_modeling_block.W_1"):
        load_pretrained(path)


def test_wrong_shape_is_named(saved):
    path, t = saved
    t["model.norm.weight"] = torch.ones(65)
    save_file(t, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.norm.weight: expected \(64,\), got \(65,\)"):
        load_pretrained(path)


def test_unknown_layer_type(saved):
    path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "ttt_layer_type": "gru"}))
    with pytest.raises(CheckpointError, match="ttt_layer_type"):
        load_pretrained(path)


def test_untied_lm_head_that_differs_is_refused(saved):
    path, t = saved
    t["lm_head.weight"] = t["model.embed_tokens.weight"] + 1
    save_file(t, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="tie_word_embeddings"):
        load_pretrained(path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(tmp_path)
    tiny_config().save_json(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pretrained(tmp_path)
