"""GPU checks of the verification harness itself (marked gpu: skipped without CUDA)."""

import pytest
import torch

from ttt_infer import TTTConfig, TTTForCausalLM
from ttt_infer.verify.run import NOT_RUN, PASS, VerifyConfig, chain, decode, graph_decode, run_verify

pytestmark = pytest.mark.gpu

TINY64 = dict(hidden_size=128, num_attention_heads=2, intermediate_size=256, vocab_size=512, num_hidden_layers=1)


def _model(layer: str, dtype, backend: str):
    torch.manual_seed(0)
    cfg = TTTConfig.standard("1b", layer, "mamba", initializer_range=0.3, **TINY64)
    m = TTTForCausalLM(cfg).to("cuda", dtype)
    m.backend = backend  # KernelsUnavailable here is a failure: on a GPU the kernels must run
    return m


def _stream(S: int = 40) -> torch.Tensor:
    return torch.randint(0, 512, (3, S), generator=torch.Generator().manual_seed(1)).cuda()


@pytest.mark.parametrize("layer", ["linear", "mlp"])
def test_graph_replay_equals_eager_with_kernels(layer):
    m = _model(layer, torch.float16, "kernels")
    toks = _stream()
    eager, graph = decode(m, toks), graph_decode(m, toks)
    assert torch.equal(eager.argmax(-1), graph.argmax(-1))
    assert (eager - graph).abs().max().item() <= 1e-3
    # after a 21-token prompt (not a multiple of 16)
    prompt = _stream(21).flip(1)
    eager = chain(m, prompt, toks)[:, 21:]
    graph = graph_decode(m, toks, prompt)
    assert torch.equal(eager.argmax(-1), graph.argmax(-1))
    assert (eager - graph).abs().max().item() <= 1e-3


@torch.no_grad()
def _manual_graph_decode(model, tokens):
    """One decode step captured by hand (no backend check), replayed per token from an empty cache."""
    B, S = tokens.shape
    cache, empty = model.new_cache(B), model.new_cache(B)
    tok = tokens[:, 0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        model.decode_step(tok, cache)
    torch.cuda.current_stream().wait_stream(side)
    cache.copy_(empty)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = model.decode_step(tok, cache)
    cache.copy_(empty)
    res = []
    for t in range(S):
        tok.copy_(tokens[:, t])
        g.replay()
        res.append(out.clone())
    return torch.stack(res, 1)


def test_graph_comparison_catches_frozen_positions():
    """The reference backend reads its mini-batch position from a python int, which a graph freezes at
    capture (the seed's bug): replay then differs from eager, so the graph check can fail."""
    m = _model("linear", torch.float32, "reference")
    toks = _stream()
    eager, graph = decode(m, toks), _manual_graph_decode(m, toks)
    torch.testing.assert_close(graph[:, 0], eager[:, 0])  # step 0 is right (position 0 at capture)
    assert (eager[:, 1:] - graph[:, 1:]).abs().max().item() > 1e-2


def test_verify_runs_graph_check_on_cuda(tmp_path):
    vc = VerifyConfig(
        layer_types=["linear", "mlp"],
        dtypes=["fp16", "bf16"],
        batch=4,
        prefill_len=40,
        decode_len=40,
        device="cuda",
        overrides={**TINY64, "initializer_range": 0.3},
        progress=False,
    )
    s = run_verify(vc, tmp_path, log=print)
    graph = [c for c in s["checks"] if c["name"] == "graph.replay_vs_eager"]
    assert len(graph) == 4 and all(c["status"] == PASS for c in graph), graph
    assert not any(c["status"] == NOT_RUN for c in s["checks"])
