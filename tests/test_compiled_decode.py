"""The "reference-compiled" backend on the CPU: the torch.compile'd decode step gives the eager
reference's logits and states, and compiles once, not once per position in the mini-batch.

The compiled tests use torch.compile's "aot_eager" backend: the same dynamo trace of the same code
(TTTForCausalLM._decode_graph -> reference.primal_step_at, fullgraph, static shapes) and the same
functionalised graph as the default "inductor" backend used on the GPU, without inductor's C++ code
generation, which took 10-22 s per model on 2 CPU cores with a cold inductor cache (up to 46 s with
another test run on the same cores). TTT_INFER_TEST_INDUCTOR=1 runs the inductor variant too.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch._dynamo
from _models import random_inner, rel_err, tiny_model

from ttt_infer.bench import sweep
from ttt_infer.bench.models import TTTBench
from ttt_infer.ttt import reference

PROMPT = 21  # not a multiple of the mini-batch (16): decode starts at row 5
STEPS = 43  # positions 21..63: rows 5..15, then two full mini-batches (ends at 31, 47, 63)


def _compile_unavailable() -> str | None:
    """Why torch.compile cannot run here, or None: a one-op function compiled with aot_eager."""
    if not hasattr(torch, "compile") or not hasattr(torch, "compiler"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        if not torch._dynamo.is_dynamo_supported():
            return "torch._dynamo does not support this Python"
        torch._dynamo.reset()
        out = torch.compile(lambda x: x * 2 + 1, backend="aot_eager", fullgraph=True)(torch.ones(3))
        torch._dynamo.reset()
    except Exception as e:  # noqa: BLE001 - any failure means: no compile here, say why
        return f"torch.compile fails here: {type(e).__name__}: {e}"
    if not torch.equal(out, torch.full((3,), 3.0)):
        return "torch.compile gives a wrong result for x * 2 + 1"
    return None


needs_compile = pytest.mark.skipif((why := _compile_unavailable()) is not None, reason=why or "")


class CountingCompiler:
    """A torch.compile backend that counts the graphs dynamo hands it and the calls of the compiled code,
    delegating to `inner` ("aot_eager" or "inductor")."""

    def __init__(self, inner: str) -> None:
        self.inner, self.graphs, self.calls = inner, 0, 0

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.registry import lookup_backend

        self.graphs += 1
        fn = lookup_backend(self.inner)(gm, example_inputs)

        def run(*args):
            self.calls += 1
            return fn(*args)

        return run


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_primal_step_at_matches_primal_step(kind, dtype):
    """The branch-free step (device position, masked rows, torch.where at the end of the mini-batch),
    eager: the same outputs and states as primal_step at every row 0..15, across two mini-batch ends."""
    st, ins = random_inner(kind, T=40)
    st = type(st)(**{k: v.to(dtype) for k, v in st.tensors().items()})
    xq, xk, xv, lr, ln_w, ln_b, tau = (x.to(dtype) for x in ins)
    a, b = st.clone(), st.clone()
    reference.dual_forward(a, xq[:, :, :5], xk[:, :, :5], xv[:, :, :5], lr[:, :, :5], ln_w, ln_b, tau, 0)
    b.copy_(a)
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    for t in range(5, 40):
        xs = (xq[:, :, t : t + 1], xk[:, :, t : t + 1], xv[:, :, t : t + 1], lr[:, :, t : t + 1], ln_w, ln_b, tau)
        want = reference.primal_step(a, *xs, start=t % 16)
        got = reference.primal_step_at(b, *xs, position=torch.tensor([t]))
        assert rel_err(got, want) < tol, t
        for name, ref_t in a.tensors().items():
            assert rel_err(b.tensors()[name], ref_t) < tol, (t, name)


def _decode_both(kind: str, compiler):
    """Prompt of PROMPT tokens, then STEPS teacher-forced decode steps, eager and compiled (fp32).

    Returns (eager logits, compiled logits, eager cache, compiled cache, seconds of the first compiled
    step, seconds of the other compiled steps); the compiled steps after the first run under
    torch.compiler.set_stance("fail_on_recompile"), so any recompilation is an error.
    """
    model = tiny_model(kind, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (2, PROMPT + STEPS), generator=g)
    out = {}
    for backend in ("reference", "reference-compiled"):
        model.backend = backend
        if backend == "reference-compiled":
            model._backend.compiler = compiler
        cache = model.new_cache(2)
        model(ids[:, :PROMPT], cache)
        logits, times = [], []
        for t in range(PROMPT, PROMPT + STEPS):
            t0 = time.perf_counter()
            if backend == "reference-compiled" and t > PROMPT:
                with torch.compiler.set_stance("fail_on_recompile"):
                    logits.append(model.decode_step(ids[:, t], cache))
            else:
                logits.append(model.decode_step(ids[:, t], cache))
            times.append(time.perf_counter() - t0)
        out[backend] = (torch.stack(logits, 1), cache, times)
    (le, ce, _), (lc, cc, tc) = out["reference"], out["reference-compiled"]
    return le, lc, ce, cc, tc[0], sum(tc[1:])


def _check(kind, counting, le, lc, ce, cc):
    assert counting.graphs == 1, f"{counting.graphs} graphs compiled for {STEPS} decode steps (want 1)"
    assert counting.calls == STEPS, f"the compiled graph ran {counting.calls} times for {STEPS} steps"
    assert cc.seqlen == ce.seqlen == PROMPT + STEPS and int(cc.position) == PROMPT + STEPS
    err = rel_err(lc, le)
    assert err < 1e-5, f"{kind}: compiled vs eager logits rel err {err:.2e}"
    for a, b in zip(cc.tensors(), ce.tensors(), strict=True):
        assert rel_err(a, b) < 1e-5
    # the same greedy continuation
    assert torch.equal(lc.argmax(-1), le.argmax(-1))
    return err


@needs_compile
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_compiled_decode_matches_eager_without_recompiling(kind):
    """43 decode steps after a 21-token prompt (rows 5..15, then all 16 rows twice, three mini-batch ends):
    one graph compiled (at the first step), run 43 times, no recompilation (fail_on_recompile after the
    first step), logits and final states equal to the eager reference's within fp32 rounding."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    counting = CountingCompiler("aot_eager")
    t0 = time.perf_counter()
    le, lc, ce, cc, first, rest = _decode_both(kind, counting)
    err = _check(kind, counting, le, lc, ce, cc)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    took = time.perf_counter() - t0
    print(f"{kind}: logits rel err {err:.1e}, first compiled step {first:.2f} s, other {STEPS - 1} steps {rest:.2f} s")
    print(f"{kind}: total {took:.1f} s")


@needs_compile
@pytest.mark.skipif(
    os.environ.get("TTT_INFER_TEST_INDUCTOR") != "1",
    reason="inductor on the CPU compiles for 10-45 s per model on 2 cores: set TTT_INFER_TEST_INDUCTOR=1",
)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_compiled_decode_inductor(kind):
    """The same check with inductor, the default compiler (what the GPU benchmark runs)."""
    torch._dynamo.reset()
    counting = CountingCompiler("inductor")
    le, lc, ce, cc, first, rest = _decode_both(kind, counting)
    err = _check(kind, counting, le, lc, ce, cc)
    print(
        f"{kind} inductor: logits rel err {err:.1e}, first compiled step {first:.2f} s, other {STEPS - 1} steps {rest:.2f} s"
    )


@needs_compile
@pytest.mark.timeout(120)
def test_generate_and_bench_rows_with_reference_compiled(tmp_path):
    """generate() decodes through the compiled step (same greedy tokens as eager); the benchmark has a
    reference-compiled backend whose rows say what ran, and no prefill-only points of its own."""
    torch._dynamo.reset()
    model = tiny_model("linear", dtype=torch.float32)
    ids = torch.randint(1, 97, (2, 19), generator=torch.Generator().manual_seed(2))
    want = model.generate(ids, 20)
    model.backend = "reference-compiled"
    counting = CountingCompiler("aot_eager")
    model._backend.compiler = counting
    assert torch.equal(model.generate(ids, 20), want)
    assert counting.graphs == 1 and counting.calls == 19

    spec = sweep.SweepSpec(
        models=("ttt-linear",),
        backends=("reference", "reference-compiled"),
        dtype="fp32",
        prefill_batches=(1,),
        prefill_lens=(16,),
        decode_batches=(2,),
        decode_gen_lens=(40,),
        pd_batches=(1,),
        pd_prompt_lens=(17,),
        pd_gen_len=3,
        extra_prefill=(),
    )
    pts = sweep.grid(spec)
    assert {(p.kind, p.backend) for p in pts} == {
        ("prefill", "reference"),
        ("decode", "reference"),
        ("prefill_decode", "reference"),
        ("decode", "reference-compiled"),
        ("prefill_decode", "reference-compiled"),
    }
    assert {p.gen_len for p in pts if p.kind == "decode"} == {spec.reference_gen_len}  # capped like the reference

    def make(name, dtype, device, backend, num_layers):
        tiny = dict(size="125m", num_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=96)
        return TTTBench("linear", dtype, device, backend, compiler="aot_eager", **tiny)

    rows = sweep.run_sweep(pts, tmp_path / "r.jsonl", spec, "cpu", 1, None, None, {}, False, make)
    assert [r["status"] for r in rows] == ["ok"] * len(pts), [r.get("reason") for r in rows]
    comp = [r for r in rows if r["backend"] == "reference-compiled"]
    assert comp and all(r["label"] == "ttt-linear (reference-compiled)" for r in comp)
    assert all("torch.compile'd, backend aot_eager" in r["implementation"] for r in comp)
    assert all(r["implementation"].startswith("reference: PyTorch eager") for r in rows if r["backend"] == "reference")


def test_reference_compiled_needs_the_python_position_for_prompts():
    model = tiny_model("linear", dtype=torch.float32)
    model.backend = "reference-compiled"
    st = model.new_cache(1).ttt[0]
    with pytest.raises(ValueError, match="python position"):
        model._backend.inner(st, *(torch.zeros(1, 4, 2, 16),) * 3, torch.zeros(1, 4, 2), None, None, None, None, None)
