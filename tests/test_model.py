"""The whole language model on the reference backend: prefill/decode consistency, positions,
learnable terms, dtypes, generation, input errors."""

import pytest
import torch
from _models import VOCAB, rel_err, tiny_config, tiny_model

import ttt_infer.layers as layers
from ttt_infer import TTTConfig, TTTForCausalLM
from ttt_infer.kernels import KernelsUnavailable

LAYER_TYPES = ["linear", "mlp"]
BACKBONES = ["mamba", "transformer"]


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_prefill_then_decode_equals_longer_prefill(layer_type, backbone):
    model = tiny_model(layer_type, backbone)
    ids = torch.randint(0, VOCAB, (2, 45), generator=torch.Generator().manual_seed(3))
    full = model(ids)
    assert full.dtype == torch.float64
    for T in (1, 15, 16, 17, 40):
        cache = model.new_cache(2)
        logits = [model(ids[:, :T], cache)]
        logits += [model.decode_step(ids[:, t], cache)[:, None] for t in range(T, 45)]
        assert cache.seqlen == 45 and int(cache.position) == 45
        assert rel_err(torch.cat(logits, 1), full) < 1e-10, T


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_prefill_in_chunks_equals_prefill_at_once(layer_type):
    model = tiny_model(layer_type, "mamba")
    ids = torch.randint(0, VOCAB, (3, 50), generator=torch.Generator().manual_seed(4))
    full = model(ids)
    cache = model.new_cache(3)
    parts = [model(ids[:, a:b], cache) for a, b in ((0, 9), (9, 30), (30, 50))]
    assert rel_err(torch.cat(parts, 1), full) < 1e-10


def test_rope_positions_restart_every_mini_batch(monkeypatch):
    seen = []
    real = layers.rope_rotation

    def spy(positions, f, theta, dtype):
        seen.append(positions.tolist())
        return real(positions, f, theta, dtype)

    monkeypatch.setattr(layers, "rope_rotation", spy)
    model = tiny_model("linear", "transformer", num_hidden_layers=1)
    cache = model.new_cache(1)
    model(torch.randint(0, VOCAB, (1, 37)), cache)
    assert seen[0] == [t % 16 for t in range(37)]
    seen.clear()
    model.decode_step(torch.tensor([5]), cache)  # absolute position 37 -> 5
    assert seen[0] == [37 % 16]


def test_rope_equals_permute_rotate_half_form():
    """Our interleaved RoPE == ttt-lm-pytorch's permute_qk -> rotate_half RoPE -> undo_permute_qk."""
    B, nh, T, f = 2, 3, 16, 8
    x = torch.randn(B, nh, T, f, dtype=torch.float64)
    pos = torch.arange(T)
    # the other form, written from its definition
    xp = x.reshape(B, nh, T, f // 2, 2).transpose(3, 4).reshape(B, nh, T, f)
    inv = 1.0 / 10000 ** (torch.arange(0, f, 2, dtype=torch.float64) / f)
    emb = torch.cat([pos[:, None] * inv] * 2, -1)
    rot = torch.cat([-xp[..., f // 2 :], xp[..., : f // 2]], -1)
    yp = xp * emb.cos() + rot * emb.sin()
    y = yp.reshape(B, nh, T, 2, f // 2).transpose(3, 4).reshape(B, nh, T, f)
    assert rel_err(layers.rope(x, pos, 10000.0), y) < 1e-14


def test_learning_rate_and_token_scale_formulas():
    model = tiny_model("linear", "transformer", num_hidden_layers=1)
    layer = model.model.layers[0].seq_modeling_block
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    w = layer.learnable_ttt_lr_weight[:, 0, :]  # [nh, C]
    c = layer.learnable_ttt_lr_bias[:, 0]
    assert c.abs().min() > 0  # perturbed: the bias term is exercised
    want = model.config.ttt_base_lr * torch.sigmoid(torch.einsum("btc,hc->bht", x, w) + c[None, :, None]) / 16
    assert rel_err(layer.learning_rate(x), want) < 1e-14
    beta = layer.learnable_token_idx
    want_tau = (1.0 / torch.arange(1, 17, dtype=torch.float64) + beta).clamp_min(0)
    assert rel_err(layer.token_scale(torch.float64), want_tau) < 1e-14


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_zero_token_scale_means_no_learning(layer_type):
    """tau = 0 (beta very negative) freezes the inner model: the state stays at its init."""
    model = tiny_model(layer_type, "transformer", num_hidden_layers=1)
    layer = model.model.layers[0].seq_modeling_block
    with torch.no_grad():
        layer.learnable_token_idx.fill_(-10.0)
    cache = model.new_cache(2)
    model(torch.randint(0, VOCAB, (2, 40)), cache)
    st = cache.ttt[0]
    assert torch.equal(st.W1, layer.W1.expand_as(st.W1))
    with torch.no_grad():
        layer.learnable_token_idx.fill_(0.3)
    cache = model.new_cache(2)
    model(torch.randint(0, VOCAB, (2, 40)), cache)
    assert not torch.allclose(cache.ttt[0].W1, layer.W1.expand_as(st.W1))


def test_every_learnable_term_changes_the_output():
    model = tiny_model("mlp", "mamba", num_hidden_layers=1)
    ids = torch.randint(0, VOCAB, (1, 20))
    base = model(ids)
    layer = model.model.layers[0].seq_modeling_block
    for name in (
        "learnable_token_idx",
        "learnable_ttt_lr_bias",
        "learnable_ttt_lr_weight",
        "ttt_norm_weight",
        "ttt_norm_bias",
        "W1",
        "b1",
        "W2",
        "b2",
    ):
        p = getattr(layer, name)
        delta = 0.1 * torch.randn_like(p)  # random: a constant shift along LN's axis would be invisible
        with torch.no_grad():
            p.add_(delta)
            assert rel_err(model(ids), base) > 1e-8, name
            p.sub_(delta)


@pytest.mark.parametrize("dtype,bound", [(torch.float32, 1e-5), (torch.float16, 3e-2), (torch.bfloat16, 1e-1)])
def test_low_precision_models_track_fp64(dtype, bound):
    ref = tiny_model("linear", "mamba")
    lo = tiny_model("linear", "mamba").to(dtype)
    ids = torch.randint(0, VOCAB, (2, 35))
    cache = lo.new_cache(2)
    assert cache.ttt[0].W1.dtype == torch.float32
    out = torch.cat([lo(ids[:, :20], cache)] + [lo.decode_step(ids[:, t], cache)[:, None] for t in range(20, 35)], 1)
    assert out.dtype == torch.float32
    assert rel_err(out, ref(ids)) < bound


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_greedy_generate_equals_argmax_of_full_forward(layer_type):
    model = tiny_model(layer_type, "mamba")
    prompt = torch.randint(0, VOCAB, (2, 19))
    out = model.generate(prompt, max_new_tokens=14)
    assert out.shape == (2, 33) and torch.equal(out[:, :19], prompt)
    for t in range(19, 33):
        assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = tiny_model("linear", "transformer")
    prompt = torch.randint(0, VOCAB, (3, 5))
    a = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    greedy = model.generate(prompt, 8)
    assert torch.equal(model.generate(prompt, 8, temperature=0.7, top_k=1), greedy)


def test_standard_configs():
    sizes = {"125m": (768, 12, 64), "350m": (1024, 16, 64), "760m": (1536, 16, 96), "1b": (2048, 32, 64)}
    for name, (hidden, heads, head_dim) in sizes.items():
        cfg = TTTConfig.standard(name, "mlp", "transformer")
        assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim) == (hidden, heads, head_dim)
        assert cfg.ttt_base_lr == 0.1 and cfg.backbone == "transformer"
    assert TTTConfig.standard("1b").backbone == "mamba"
    with pytest.raises(ValueError, match="ttt_layer_type"):
        TTTConfig(ttt_layer_type="rnn")
    with pytest.raises(ValueError, match="divisible"):
        TTTConfig(hidden_size=100, num_attention_heads=3)


def test_head_dim_96_runs():
    model = tiny_model("linear", "mamba", hidden_size=192, num_attention_heads=2, num_hidden_layers=1)
    assert model.config.head_dim == 96
    ids = torch.randint(0, VOCAB, (1, 20))
    cache = model.new_cache(1)
    out = torch.cat(
        [model(ids[:, :17], cache)] + [model.decode_step(ids[:, t], cache)[:, None] for t in (17, 18, 19)], 1
    )
    assert rel_err(out, model(ids)) < 1e-10


def test_input_errors():
    model = TTTForCausalLM(tiny_config(num_hidden_layers=1))
    with pytest.raises(ValueError, match="2-D"):
        model(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="cache holds 3"):
        model(torch.zeros(2, 3, dtype=torch.long), model.new_cache(3))
    with pytest.raises(ValueError, match="unknown backend"):
        model.backend = "cuda"
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), -1)


def test_kernel_backend_without_gpu_says_why():
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU-only message")
    model = TTTForCausalLM(tiny_config(num_hidden_layers=1))
    with pytest.raises(KernelsUnavailable):
        model.backend = "kernels"
    assert model.backend == "reference"


def test_batch_of_one_does_not_modify_the_weights():
    model = tiny_model("mlp", "transformer", num_hidden_layers=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, VOCAB, (1, 40))
    first = model(ids)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(ids), first)


def test_token_scale_cache_follows_the_parameter():
    """tau is cached between calls (decode steps) but recomputed when learnable_token_idx changes in place
    (a checkpoint load copies into it) and in inference mode (no version counter: no cache)."""
    model = tiny_model("linear", "mamba", num_hidden_layers=1)
    layer = model.model.layers[0].seq_modeling_block
    tau = layer.token_scale(torch.float64)
    assert layer.token_scale(torch.float64) is tau  # cached
    with torch.no_grad():
        layer.learnable_token_idx.add_(0.25)
    moved = layer.token_scale(torch.float64)
    assert torch.allclose(
        moved, (1.0 / torch.arange(1, 17, dtype=torch.float64) + layer.learnable_token_idx).clamp_min(0)
    )
    with torch.inference_mode():
        m2 = tiny_model("linear", "mamba", num_hidden_layers=1)
        assert torch.isfinite(m2.model.layers[0].seq_modeling_block.token_scale(torch.float64)).all()
