"""Decode kernels and CUDA-graph generation on the GPU (marked gpu; skipped without CUDA).

- Kernel vs the float64 reference, B in {1, 7, 64}, TTT-Linear and TTT-MLP, fp16 and bf16, 110
  decode steps after prompts of 1, 16 and 37 tokens (prompt through the reference dual form, and
  once through the TK prefill kernel when its extension is built): the kernel's relative error
  against float64 must be at most 2x the error of the PyTorch reference run in the same dtype.
- Whole model: CUDA-graph replay and eager kernel decode give identical tokens (greedy and sampled);
  kernel decode logits track the reference backend's; a batch larger than the graph's is refused.

Set TTT_DECODE_ERRLOG=path to append one JSON line of errors per case.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from _decode_cases import as_dtype, make_case, rel_err, step_inputs

from ttt_infer.ttt import reference

pytestmark = pytest.mark.gpu

DECODE_STEPS = 110


def _log(rec: dict) -> None:
    path = os.environ.get("TTT_DECODE_ERRLOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def _prefill(st, ins, T, upcast, fn=reference.dual_forward):
    xq, xk, xv, lr, ln_w, ln_b, tau = ins
    # contiguous prompt slices: the TK prefill takes only contiguous inputs (as the model passes them)
    xs = tuple(t[:, :, :T].contiguous() for t in (xq, xk, xv, lr)) + (ln_w, ln_b, tau)
    if upcast:
        xs = tuple(x.double() for x in xs)
    fn(st, *xs, start=0)


def _ref_decode(st, ins, t0, t1, upcast):
    outs = []
    for t in range(t0, t1):
        xs = step_inputs(ins, t)
        if upcast:
            xs = tuple(x.double() for x in xs)
        outs.append(reference.primal_step(st, *xs, start=t % 16))
    return torch.cat(outs, 2)


def _kernel_decode(st, ins, t0, t1):
    from ttt_infer.kernels import decode

    pos = torch.full((1,), t0, dtype=torch.int64, device="cuda")
    outs = []
    for t in range(t0, t1):
        out = torch.full_like(st.b1[:, :, None, :64], float("nan"))
        decode.ttt_decode_step(st, *step_inputs(ins, t), pos, out=out)
        outs.append(out)
        pos += 1
    o = torch.cat(outs, 2)
    assert torch.isfinite(o).all()
    return o


def _case(kind, B, dtype, prompt, nh=4, prefill_fn=reference.dual_forward, tag="reference", ln_act=False):
    T = prompt + DECODE_STEPS
    st64, ins = make_case(kind, B=B, nh=nh, T=T, act_dtype=dtype, seed=B * 1000 + prompt, device="cuda")
    if ln_act:  # the inner LayerNorm's parameters in the activation dtype (a model cast with .to(dtype))
        ins = ins[:4] + (ins[4].to(dtype), ins[5].to(dtype)) + ins[6:]
    exact_st = as_dtype(st64, torch.float64)
    _prefill(exact_st, ins, prompt, upcast=True)
    exact = _ref_decode(exact_st, ins, prompt, T, upcast=True)
    ref_st = as_dtype(st64, torch.float32)
    _prefill(ref_st, ins, prompt, upcast=False)
    ref = _ref_decode(ref_st, ins, prompt, T, upcast=False)
    k_st = as_dtype(st64, torch.float32)
    _prefill(k_st, ins, prompt, upcast=False, fn=prefill_fn)
    out = _kernel_decode(k_st, ins, prompt, T)
    e_ref, e_k = rel_err(ref, exact), rel_err(out, exact)
    w_ref, w_k = rel_err(ref_st.W1, exact_st.W1), rel_err(k_st.W1, exact_st.W1)
    _log(dict(kind=kind, B=B, dtype=str(dtype), prompt=prompt, steps=DECODE_STEPS, prefill=tag,
              err_kernel=e_k, err_reference=e_ref, ratio=e_k / e_ref, w1_err_kernel=w_k, w1_err_reference=w_ref))  # fmt: skip
    assert 0 < e_ref < 5e-2
    assert e_k <= 2 * e_ref, (e_k, e_ref)
    assert w_k <= 2 * w_ref, (w_k, w_ref)


@pytest.mark.parametrize("prompt", [1, 16, 37])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("B", [1, 7, 64])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_kernel_vs_float64_within_twice_reference(kind, B, dtype, prompt):
    _case(kind, B, dtype, prompt)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_kernel_decode_after_tk_prefill(kind):
    from ttt_infer.kernels import KernelsUnavailable, prefill

    try:
        prefill.check_available()
    except KernelsUnavailable as e:
        pytest.skip(f"TK prefill extension not available: {e}")
    _case(kind, 7, torch.bfloat16, 37, prefill_fn=prefill.ttt_prefill, tag="tk")


@pytest.mark.parametrize("ctas", [2, 3])
@pytest.mark.parametrize("ln_act", [False, True], ids=["ln_fp32", "ln_act"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("B", [1, 64])
def test_cuda_mlp_kernel_vs_float64_within_twice_reference(B, dtype, ln_act, ctas, monkeypatch):
    """The CUDA TTT-MLP decode kernel forced (the tuner may or may not pick it above), both register budgets."""
    from ttt_infer.kernels.decode import cuda

    if not cuda.available():
        pytest.skip("the compiled extension (with the CUDA decode kernel) is not built")
    monkeypatch.setenv("TTT_DECODE_CONFIG", f"mlp=cu:8:{ctas}")
    _case("mlp", B, dtype, 37, ln_act=ln_act, tag=f"cu:{ctas}")


@pytest.mark.parametrize("ln_act", [False, True], ids=["ln_fp32", "ln_act"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("B", [1, 7, 64])
def test_cuda_linear_kernel_vs_float64_within_twice_reference(B, dtype, ln_act, monkeypatch):
    """The CUDA TTT-Linear decode kernel forced (the tuner may or may not pick it), after a prompt of 37."""
    from ttt_infer.kernels.decode import cuda

    if not cuda.available("linear"):
        pytest.skip("the compiled extension (with the CUDA TTT-Linear decode kernel) is not built")
    monkeypatch.setenv("TTT_DECODE_CONFIG", "linear=cu:4:8")
    _case("linear", B, dtype, 37, ln_act=ln_act, tag="cu")


@pytest.mark.parametrize("p", [8, 15])
@pytest.mark.parametrize("ctas", [2, 3])
def test_cuda_mlp_traced_kernel_changes_nothing(ctas, p, monkeypatch):
    """The CUDA step's traced instantiation (cuda.tracing) computes the same bits as the normal one (out and the
    whole state, at a plain token and at the mini-batch's end), and every CTA leaves a complete timeline: an SM
    id below the GPU's count, marks in order, the update's marks exactly at p = 15."""
    from ttt_infer.kernels import decode
    from ttt_infer.kernels.decode import cuda

    if not cuda.available():
        pytest.skip("the compiled extension (with the CUDA decode kernel) is not built")
    monkeypatch.setenv("TTT_DECODE_CONFIG", f"mlp=cu:8:{ctas}")
    B, nh = 5, 4
    st64, ins = make_case("mlp", B=B, nh=nh, T=p + 1, act_dtype=torch.bfloat16, seed=11, device="cuda")
    st = as_dtype(st64, torch.float32)
    _prefill(st, ins, p, upcast=False)
    xs = step_inputs(ins, p)
    pos = torch.full((1,), p, dtype=torch.int64, device="cuda")
    runs = []
    for traced in (False, True):
        s = st.clone()
        out = torch.full((B, nh, 1, 64), float("nan"), device="cuda")
        buf = torch.zeros(B * nh, cuda.TRACE_SLOTS, dtype=torch.int64, device="cuda")
        if traced:
            with cuda.tracing(buf):
                decode.ttt_decode_step(s, *xs, pos, out=out)
        else:
            decode.ttt_decode_step(s, *xs, pos, out=out)
        torch.cuda.synchronize()
        runs.append((out, s.tensors(), buf.cpu()))
    assert torch.equal(runs[0][0], runs[1][0])
    for name, t in runs[0][1].items():
        assert torch.equal(t, runs[1][1][name]), name
    assert not runs[0][2].any()  # untraced: the buffer untouched
    tr = runs[1][2][:, : len(cuda.TRACE_FIELDS)]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert ((tr[:, 0] >= 0) & (tr[:, 0] < sms)).all()
    n = cuda.TRACE_FIELDS.index("out") + 1
    marks = tr[:, 1:n]  # entry .. out
    assert (marks > 0).all() and (marks[:, 1:] >= marks[:, :-1]).all()
    update = tr[:, n - 1 :]  # out, then the update's marks (W2 written, W1 written)
    if p == 15:
        assert (update[:, 1:] >= update[:, :-1]).all()
    else:
        assert (update[:, 1:] == 0).all()


# --- whole model, CUDA graphs ------------------------------------------------------------------------
def _model(kind):
    from ttt_infer import TTTConfig, TTTForCausalLM
    from ttt_infer.kernels.decode import DecodeKernelBackend

    torch.manual_seed(0)
    cfg = TTTConfig.standard("125m", kind, "mamba", hidden_size=256, num_attention_heads=4, num_hidden_layers=2,
                             intermediate_size=512, vocab_size=512)  # fmt: skip
    with torch.device("cuda"):
        model = TTTForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():  # off the init: learnable scalars, norms, biases too
            p.add_(0.05 * torch.randn_like(p))
    model = model.to(torch.bfloat16).eval()
    model._backend = DecodeKernelBackend()
    return model


def _graph_equals_eager(kind, temperature):
    model = _model(kind)
    prompt = torch.randint(0, 512, (3, 37), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    runs = []
    for graph in (False, True):
        g = torch.Generator("cuda").manual_seed(7)
        runs.append(model.generate(prompt, 40, temperature=temperature, top_k=50, generator=g, cuda_graph=graph))
    assert runs[0].shape == (3, 77)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_graph_replay_equals_eager(kind, temperature):
    _graph_equals_eager(kind, temperature)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_graph_replay_equals_eager_cuda_step(kind, monkeypatch):
    """The same with the TTT layer's step forced to its CUDA kernel (the tuner picks it at large batches only, which
    the test above does not reach): the position comes from the device tensor in a replayed graph too."""
    from ttt_infer.kernels.decode import cuda

    if not cuda.available(kind):
        pytest.skip(f"the compiled extension (with the CUDA TTT-{kind} decode kernel) is not built")
    monkeypatch.setenv("TTT_DECODE_CONFIG", "linear=cu:4:8,mlp=cu:8:3")
    _graph_equals_eager(kind, 0.0)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_graph_pdl_on_equals_off(kind, monkeypatch):
    """Programmatic dependent launch (kernels/pdl.py) overlaps a kernel's launch with the one ahead: it must
    not change a bit. A captured decode graph, 40 steps after a 21-token prompt, with it on and off; the
    decode GEMM forced on every projection (split K: its tickets and partials across launches)."""
    from ttt_infer.kernels import pdl
    from ttt_infer.kernels.graphs import CUDAGraphDecoder

    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs sm_90+")
    monkeypatch.setenv("TTT_INFER_GEMM", "64:128:4:4:2")
    ids = torch.randint(0, 512, (3, 21 + 40), device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    runs = []
    for on in ("1", "0"):
        monkeypatch.setenv("TTT_INFER_PDL", on)
        assert pdl.enabled(torch.device("cuda")) == (on == "1")
        model = _model(kind)
        cache = model.new_cache(3)
        model(ids[:, :21], cache)
        dec = CUDAGraphDecoder(model, cache)
        runs.append(torch.stack([dec.step(ids[:, t]).clone() for t in range(21, 61)], 1))
        assert dec.captured
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_graph_logits_track_reference_backend(kind):
    from ttt_infer.kernels.graphs import CUDAGraphDecoder
    from ttt_infer.ttt.ops import ReferenceBackend

    model = _model(kind)
    ids = torch.randint(0, 512, (2, 21 + 30), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    kern_backend = model._backend
    model._backend = ReferenceBackend()
    full = model(ids)  # reference, dual form over the whole sequence
    model._backend = kern_backend
    cache = model.new_cache(2)
    model(ids[:, :21], cache)
    dec = CUDAGraphDecoder(model, cache)
    logits = [dec.step(ids[:, t]).clone() for t in range(21, 51)]
    assert dec.captured and cache.seqlen == 51 and int(cache.position) == 51
    got = torch.stack(logits, 1)
    want = full[:, 21:51]  # step(ids[:, t]) gives the logits at position t
    err = rel_err(got, want)
    _log(dict(test="graph_logits_vs_reference_backend", kind=kind, rel_err=err))
    assert err < 5e-2
    # bigger batch than captured: refused; smaller: the first rows
    with pytest.raises(ValueError, match="larger than the captured graph"):
        dec.step(torch.zeros(3, dtype=torch.int64, device="cuda"))
    assert dec.step(ids[:1, 0]).shape == (1, 512)
