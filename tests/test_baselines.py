"""Baselines on the CPU: the Transformer's and the Mamba-2 model's cached decode against full forwards
(tiny configs, eager), the cache rules, the 1.3B parameter counts (meta device), and Mamba's
ModelUnavailable without a GPU or packages."""

import sys

import pytest
import torch

from ttt_infer.baselines.mamba import Mamba2Config, Mamba2LM, MambaBench, mamba2_param_count
from ttt_infer.baselines.transformer import Llama, LlamaConfig, TransformerBench, llama_param_count
from ttt_infer.bench.models import ModelUnavailable, make_bench_model

TINY_LLAMA = dict(dim=64, n_heads=4, ffn_dim=96, vocab_size=101, n_layers=2)
TINY_MAMBA = dict(d_model=32, n_layers=2, vocab_size=101, d_state=16, headdim=8, ngroups=2, d_conv=4)


def _generate(bench, ids, steps):
    """Prefill then `steps` decodes: the input tokens fed at each decode and the logits [B, steps+1, V]."""
    bench.prefill(ids, max_new_tokens=steps)
    fed, logits = [], [bench.last_logits.clone()]
    for _ in range(steps):
        fed.append(bench._token.clone())
        bench.decode()
        logits.append(bench.last_logits.clone())
    return torch.stack(fed, 1), torch.stack(logits, 1)


def _check_against_full(bench, full_forward, ids, steps, atol):
    fed, logits = _generate(bench, ids, steps)
    T = ids.shape[1]
    full = full_forward(torch.cat([ids, fed], 1))
    torch.testing.assert_close(logits, full[:, T - 1 :], atol=atol, rtol=0)
    # greedy: each fed token is the argmax of the logits before it
    assert torch.equal(fed, full[:, T - 1 : -1].argmax(-1))


@pytest.mark.parametrize("T", [1, 7, 16])
def test_transformer_prefill_then_decode_equals_full_forward(T):
    torch.manual_seed(T)
    bench = TransformerBench(torch.float32, "cpu", **TINY_LLAMA)
    assert not bench.cuda_graph
    ids = torch.randint(0, 101, (3, T))
    _check_against_full(bench, bench.model, ids, steps=6, atol=1e-4)


def test_transformer_cache_is_sized_exactly_and_only_when_asked():
    bench = TransformerBench(torch.float32, "cpu", **TINY_LLAMA)
    ids = torch.randint(0, 101, (2, 5))
    bench.prefill(ids)
    assert bench.cache is None
    with pytest.raises(RuntimeError, match="prefill"):
        bench.decode()
    bench.prefill(ids, max_new_tokens=3)
    assert bench.cache.seqlen == 8 and tuple(bench.cache.k[0].shape) == (2, 4, 8, 16)
    for _ in range(3):
        bench.decode()
    assert int(bench._pos) == 8
    with pytest.raises(RuntimeError, match="full"):
        bench.decode()


def test_transformer_second_prefill_reuses_cache_and_restarts():
    torch.manual_seed(1)
    bench = TransformerBench(torch.float32, "cpu", **TINY_LLAMA)
    ids = torch.randint(0, 101, (2, 9))
    fed1, logits1 = _generate(bench, ids, 4)
    k0 = bench.cache.k[0]
    fed2, logits2 = _generate(bench, ids, 4)
    assert bench.cache.k[0] is k0  # same shape: the static buffers are reused
    assert torch.equal(fed1, fed2) and torch.equal(logits1, logits2)


def test_transformer_num_layers_and_weights():
    bench = TransformerBench(torch.float32, "cpu", num_layers=1, vocab_size=101)  # 1.3B widths, one layer
    assert bench.name == "transformer" and len(bench.model.layers) == 1 and "SDPA" in bench.implementation
    w = bench.model.layers[0].wqkv.weight
    assert 0.018 < w.std().item() < 0.022 and abs(w.mean().item()) < 1e-3


def test_param_counts_of_the_default_configs():
    with torch.device("meta"):
        llama, mamba = Llama(LlamaConfig()), Mamba2LM(Mamba2Config())
    n_llama = sum(p.numel() for p in llama.parameters())
    n_mamba = sum(p.numel() for p in mamba.parameters())
    assert n_llama == llama_param_count(LlamaConfig())
    assert n_mamba == mamba2_param_count(Mamba2Config())
    # the paper's 1.3B Transformer; tied embeddings (32000 x 2048 once)
    assert n_llama == 24 * (4 * 2048**2 + 3 * 2048 * 5504 + 2 * 2048) + 32000 * 2048 + 2048
    assert 1.25e9 < n_llama < 1.31e9 and 1.25e9 < n_mamba < 1.35e9
    assert llama.embed.weight.is_meta and mamba.layers[0].mixer.in_proj.weight.shape == (2 * 4096 + 2 * 128 + 64, 2048)


@pytest.mark.parametrize("T", [2, 11])
def test_mamba2_torch_prefill_then_decode_equals_full_forward(T):
    torch.manual_seed(T)
    bench = MambaBench(torch.float32, "cpu", ssm_impl="torch", **TINY_MAMBA)
    assert bench.impl == "torch" and "reference" in bench.implementation
    ids = torch.randint(0, 101, (2, T))
    _check_against_full(bench, lambda x: bench.model(x, "torch"), ids, steps=5, atol=1e-4)


def test_mamba2_decay_matters():
    """The state carries information: the decode logits depend on the prompt's first token."""
    bench = MambaBench(torch.float32, "cpu", ssm_impl="torch", **TINY_MAMBA)
    ids = torch.randint(0, 101, (1, 8))
    other = ids.clone()
    other[0, 0] = (ids[0, 0] + 1) % 101
    _, a = _generate(bench, ids, 1)
    _, b = _generate(bench, other, 1)
    assert (a - b).abs().max() > 1e-6


def test_mamba_unavailable_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelUnavailable, match="CUDA"):
        MambaBench(torch.float16, "cpu")
    with pytest.raises(ModelUnavailable):
        make_bench_model("mamba", torch.float16, "cpu")


def test_mamba_unavailable_without_packages(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "fla", None)
    with pytest.raises(ModelUnavailable, match="mamba_ssm.*fla"):
        MambaBench(torch.float16, "cuda")
    with pytest.raises(ValueError):
        MambaBench(torch.float16, "cuda", ssm_impl="jax")


# The Triton kernels of ttt_infer.baselines.kernels: in the interpreter on the CPU (conftest sets
# TRITON_INTERPRET=1 there), natively on a GPU.
KDEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_transformer_triton_kernels_equal_torch_ops():
    pytest.importorskip("triton")
    torch.manual_seed(3)
    ref = TransformerBench(torch.float32, KDEV, fused_kernels=False, cuda_graph=False, **TINY_LLAMA)
    fused = TransformerBench(torch.float32, KDEV, fused_kernels=True, cuda_graph=False, **TINY_LLAMA)
    assert "Triton" in fused.implementation and "Triton" not in ref.implementation
    ids = torch.randint(0, 101, (2, 5), device=KDEV)
    fed_r, log_r = _generate(ref, ids, 2)
    fed_f, log_f = _generate(fused, ids, 2)
    torch.testing.assert_close(log_f, log_r, atol=2e-5, rtol=0)
    assert torch.equal(fed_f, fed_r)
    with torch.inference_mode():  # plain prefill (no cache): fresh K/V buffers
        torch.testing.assert_close(fused.model(ids), ref.model(ids), atol=2e-5, rtol=0)


def test_mamba2_triton_step_equals_torch_step():
    pytest.importorskip("triton")
    torch.manual_seed(2)
    bench = MambaBench(torch.float32, KDEV, ssm_impl="torch", cuda_graph=False, **TINY_MAMBA)  # 2 groups
    ids = torch.randint(0, 101, (3, 6), device=KDEV)
    bench.prefill(ids, max_new_tokens=2)
    states_r = bench.states
    states_t = [(c.clone(), s.clone()) for c, s in states_r]
    tok = bench._token
    with torch.inference_mode():
        for _ in range(2):
            lr = bench.model.step(tok, "torch", states_r)
            lt = bench.model.step(tok, "triton", states_t)
            torch.testing.assert_close(lt, lr, atol=1e-5, rtol=0)
            tok = lr.argmax(-1)
    for (cr, sr), (ct, st) in zip(states_r, states_t, strict=True):
        torch.testing.assert_close(ct, cr, atol=1e-6, rtol=0)
        torch.testing.assert_close(st, sr, atol=1e-5, rtol=0)
    assert states_r[0][1].abs().max() > 1e-3  # the states are not trivially zero
