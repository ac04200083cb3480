"""Triton decode kernels (ttt_infer/kernels/decode/) against the PyTorch reference primal step.

On a machine without a GPU these run in the Triton interpreter (conftest sets TRITON_INTERPRET=1)
on CPU tensors; on a GPU machine the same tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch
from _decode_cases import F, as_dtype, make_case, reference_run, rel_err, step_inputs

from ttt_infer.kernels import KernelsUnavailable
from ttt_infer.ttt import reference

try:
    from ttt_infer.kernels import decode

    decode.check_available()
except (ImportError, KernelsUnavailable) as e:  # pragma: no cover
    pytest.skip(f"decode kernels unavailable: {e}", allow_module_level=True)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
STEPS = 41  # positions 0..40: the mini-batch ends at 15 and 31 are both crossed


def kernel_run(st, ins, t0: int, t1: int) -> torch.Tensor:
    """Kernel steps for tokens t0..t1-1 with a device position tensor and a NaN-poisoned output."""
    B, nh = st.W1.shape[:2]
    pos = torch.full((1,), t0, dtype=torch.int64, device=st.W1.device)
    outs = []
    for t in range(t0, t1):
        out = torch.full((B, nh, 1, F), float("nan"), device=st.W1.device)
        r = decode.ttt_decode_step(st, *step_inputs(ins, t), pos, out=out)
        assert r.data_ptr() == out.data_ptr()
        assert torch.isfinite(out).all(), f"output not fully written at token {t}"
        outs.append(out.clone())
        pos += 1
    return torch.cat(outs, 2)


def poison_rows(st) -> None:
    """Rows of the mini-batch not yet written must never be read."""
    for name in ("k", "g1", "lr", "x2", "g2"):
        t = getattr(st, name)
        if t is not None:
            t.fill_(float("nan"))


# "" = the default (interpreter) / tuned (GPU) configuration; the others are opt-in variants
CONFIGS = [
    ("linear", ""),
    ("linear", "linear=mh:2:2"),
    ("linear", "linear=v3:4:0"),
    ("linear", "linear=v3:4:3"),
    ("linear", "linear=ps:4:33"),
    ("mlp", ""),
    ("mlp", "mlp=chunk:4:64"),
    ("mlp", "mlp=v3:4:1064"),
    ("mlp", "mlp=v3:8:12032"),
]
if DEV == "cuda":  # on a GPU the tuner may pick any candidate: every one is checked (compiled, not interpreted)
    CONFIGS += [
        (kind, f"{kind}={v}:{w}:{n}")
        for kind in decode.CANDIDATES
        for v, w, n in decode.tune.candidates(kind)  # the CUDA ones where the compiled extension loads
        if (kind, f"{kind}={v}:{w}:{n}") not in CONFIGS
    ]


@pytest.mark.parametrize("kind, config", CONFIGS)
def test_kernel_matches_reference_fp32(kind, config, monkeypatch):
    """Every kernel variant (forced through TTT_DECODE_CONFIG; "" = the interpreter default / GPU tuner)."""
    monkeypatch.setenv("TTT_DECODE_CONFIG", config)
    st64, ins = make_case(kind, B=2, nh=2, T=STEPS, act_dtype=torch.float32, seed=1, device=DEV)
    st0, st_ref, st_k = (as_dtype(st64, d) for d in (torch.float64, torch.float32, torch.float32))
    poison_rows(st_ref)
    poison_rows(st_k)
    ref = reference_run(st_ref, ins, 0, STEPS, upcast=False)
    out = kernel_run(st_k, ins, 0, STEPS)
    exact = reference_run(st64, ins, 0, STEPS, upcast=True)
    # fp32 arithmetic on both sides: both far under 1e-4 from float64
    assert rel_err(ref, exact) < 1e-5
    assert rel_err(out, exact) < 1e-5, rel_err(out, exact)
    assert (out - ref).abs().max() < 1e-4
    # the weights after the updates at positions 15 and 31, and rows 0..8 of the third mini-batch
    for name, t in st_k.tensors().items():
        want = getattr(st64, name)
        if name in ("k", "g1", "lr", "x2", "g2"):
            t, want = t[:, :, :9], want[:, :, :9]
        assert rel_err(t, want) < 1e-5, name
    # the inner loop matters at these scales: ignoring the mini-batch's rows moves the output by O(1)
    no_rows = [
        reference.primal_step(as_dtype(st0, torch.float64), *(x.double() for x in step_inputs(ins, t)), start=0)
        for t in range(STEPS)
    ]
    assert rel_err(torch.cat(no_rows, 2), exact) > 1e-2


@pytest.mark.parametrize("kind, config", CONFIGS)
def test_v_as_a_column_slice_view(kind, config, monkeypatch):
    """In the model, v is a column slice of the stacked q/v/g projection: [B, nh, 1, f] with its sequences
    3 nh f apart. Every kernel variant reads it in place (the SV stride); the result must equal a run on a
    contiguous copy bit for bit, across a mini-batch end (positions 0..16)."""
    monkeypatch.setenv("TTT_DECODE_CONFIG", config)
    st64, ins = make_case(kind, B=2, nh=2, T=17, act_dtype=torch.float32, seed=3, device=DEV)
    st_a, st_b = as_dtype(st64, torch.float32), as_dtype(st64, torch.float32)
    pos_a = torch.zeros(1, dtype=torch.int64, device=DEV)
    pos_b = pos_a.clone()
    B, nh = st_a.W1.shape[:2]
    for t in range(17):
        xq, xk, xv, lr, ln_w, ln_b, tau = step_inputs(ins, t)
        wide = torch.randn(B, 1, 3 * nh * F, device=DEV)  # [q | v | g] of a stacked projection
        wide[:, 0, nh * F : 2 * nh * F] = xv.reshape(B, nh * F)
        view = wide[..., nh * F : 2 * nh * F].reshape(B, 1, nh, F).transpose(1, 2)
        assert view.stride(0) == 3 * nh * F and not view.is_contiguous() and torch.equal(view, xv)
        out_a = decode.ttt_decode_step(st_a, xq, xk, view, lr, ln_w, ln_b, tau, pos_a)
        out_b = decode.ttt_decode_step(st_b, xq, xk, xv.contiguous(), lr, ln_w, ln_b, tau, pos_b)
        assert torch.equal(out_a, out_b), t
        pos_a += 1
        pos_b += 1
    for name, t in st_a.tensors().items():
        assert torch.equal(t, getattr(st_b, name)), name


def test_persistent_grid_with_a_partial_last_turn(monkeypatch):
    """linear "ps" on 5 (sequence, head) pairs with 3 programs per SM: 3 programs x 2 turns, one turn
    past the end (it must store nothing); positions 0..17 cross the end-of-mini-batch update."""
    monkeypatch.setenv("TTT_DECODE_CONFIG", "linear=ps:4:23")
    st64, ins = make_case("linear", B=5, nh=1, T=18, act_dtype=torch.float32, seed=7, device=DEV)
    st_k = as_dtype(st64, torch.float32)
    poison_rows(st_k)
    out = kernel_run(st_k, ins, 0, 18)
    exact = reference_run(st64, ins, 0, 18, upcast=True)
    assert rel_err(out, exact) < 1e-5
    for name in ("W1", "b1"):
        assert rel_err(getattr(st_k, name), getattr(st64, name)) < 1e-5, name


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_kernel_fp16_within_twice_reference_error(kind):
    st64, ins = make_case(kind, B=2, nh=2, T=STEPS, act_dtype=torch.float16, seed=2, device=DEV)
    exact = reference_run(as_dtype(st64, torch.float64), ins, 0, STEPS, upcast=True)
    ref = reference_run(as_dtype(st64, torch.float32), ins, 0, STEPS, upcast=False)  # fp16 matmul operands
    st_k = as_dtype(st64, torch.float32)
    poison_rows(st_k)
    out = kernel_run(st_k, ins, 0, STEPS)
    e_ref, e_k = rel_err(ref, exact), rel_err(out, exact)
    assert 0 < e_ref < 1e-2
    assert e_k <= 2 * e_ref, (e_k, e_ref)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_decode_continues_after_prefill_mid_mini_batch(kind):
    """Prompt of 21 tokens through the reference dual form, then kernel decode from position 21."""
    st64, ins = make_case(kind, B=1, nh=2, T=40, act_dtype=torch.float32, seed=3, device=DEV)
    exact_all = reference_run(as_dtype(st64, torch.float64), ins, 0, 40, upcast=True)
    st = as_dtype(st64, torch.float32)
    xq, xk, xv, lr, ln_w, ln_b, tau = ins
    reference.dual_forward(st, xq[:, :, :21], xk[:, :, :21], xv[:, :, :21], lr[:, :, :21], ln_w, ln_b, tau, start=0)
    out = kernel_run(st, ins, 21, 40)
    assert rel_err(out, exact_all[:, :, 21:]) < 1e-5


def test_forced_config_errors(monkeypatch):
    st, xs, pos = _one(B=1, nh=2)
    monkeypatch.setenv("TTT_DECODE_CONFIG", "linear=mh:4:4")  # 2 heads are not a multiple of 4
    with pytest.raises(ValueError, match="not a multiple of 4"):
        _call(st, xs, pos)
    monkeypatch.setenv("TTT_DECODE_CONFIG", "linear=chunk:4:64")
    with pytest.raises(ValueError, match="no variant"):
        _call(st, xs, pos)


@pytest.mark.parametrize(
    "kind, configs, default, bad_config, cfg, rows",
    [
        ("mlp", {"cu:8:2": ("cu", 8, 2)}, ("cu", 8, 3), ((8, 4), "2 or 3"), (8, 3), 12),
        ("linear", {"cu:4:8": ("cu", 4, 8)}, ("cu", 4, 8), ((4, 3), "cu:4:8, got cu:4:3"), (4, 8), 10),
    ],
)
def test_cuda_variant_config_and_errors(kind, configs, default, bad_config, cfg, rows):
    """The CUDA variants (TTT-MLP: cu:8:2 / cu:8:3; TTT-Linear: cu:4:8 only): their configurations; their argument
    checks run before the extension is needed (args[rows]: the state's K rows); each is a tuner candidate only
    where the compiled extension with it loads."""
    from ttt_infer.kernels.decode import cuda

    for text, want in configs.items():
        assert decode.tune._parse_config(f"{kind}={text}", kind) == want
    assert decode.tune._parse_config(f"{kind}=cu:{default[1]}", kind) == default
    st64, ins = make_case(kind, B=1, nh=2, T=1, act_dtype=torch.float16, seed=5, device=DEV)
    st = as_dtype(st64, torch.float32)
    pos = torch.zeros(1, dtype=torch.int64, device=DEV)
    _, _, _, args, _ = decode._kernel_args(st, *step_inputs(ins, 0), pos, torch.empty(1, 2, 1, F, device=DEV))

    def launch(a, c):
        return cuda.launch_mlp(a, c[1]) if kind == "mlp" else cuda.launch_linear(a, *c)

    with pytest.raises(ValueError, match=bad_config[1]):
        launch(args, bad_config[0])
    name = "TTT-MLP" if kind == "mlp" else "TTT-Linear"
    for index, value, exc, msg in (
        (7, pos.int(), TypeError, f"{name} decode kernel reads an int64 position"),
        (4, args[4].double(), TypeError, "ln_w in fp32 or torch.float16"),
        (rows, args[rows][:, :, :8], ValueError, "mini-batch 16"),  # rows of a mini-batch of 8
    ):
        bad = list(args)
        bad[index] = value
        with pytest.raises(exc, match=msg):
            launch(bad, cfg)
    have = cuda.available(kind)
    if DEV == "cpu":
        assert not have
    assert (default in decode.tune.candidates(kind)) == have


def test_tuned_configs_report(monkeypatch):
    """What the tuner picked, as reports write it (verify's summary.json): one readable key a shape."""
    monkeypatch.setattr(decode.tune, "TUNED", {("mlp", 1024, torch.bfloat16): ("cu", 8, 2),
                                               ("linear", 512, torch.float16): ("v3", 2, 3)})  # fmt: skip
    assert decode.tuned_configs() == {"linear 512 pairs float16": "v3:2:3", "mlp 1024 pairs bfloat16": "cu:8:2"}


def test_cuda_trace_buffer_is_checked():
    """The CUDA step's optional timeline (cuda.tracing, scripts/trace_decode_step.py) takes only a contiguous
    CUDA int64 [pairs, TRACE_SLOTS] buffer, and is off again after the block."""
    from ttt_infer.kernels.decode import cuda

    assert len(cuda.TRACE_FIELDS) <= cuda.TRACE_SLOTS
    for bad in (torch.zeros(4, cuda.TRACE_SLOTS, dtype=torch.int64),  # CPU
                torch.zeros(4, cuda.TRACE_SLOTS, dtype=torch.int32, device=DEV),
                torch.zeros(4, 8, dtype=torch.int64, device=DEV)):  # fmt: skip
        with pytest.raises(ValueError, match="trace buffer"):
            with cuda.tracing(bad):
                pass
    if DEV == "cuda":
        with cuda.tracing(torch.zeros(4, cuda.TRACE_SLOTS, dtype=torch.int64, device=DEV)) as buf:
            assert cuda._trace is buf
    assert cuda._trace is None


def test_position_is_read_from_the_device_tensor():
    """Same inputs at positions 3 and 19 (same p) agree; at 4 they differ (different tau and rows)."""
    st64, ins = make_case("linear", B=1, nh=1, T=1, act_dtype=torch.float32, seed=4, device=DEV)
    xs = step_inputs(ins, 0)
    outs = {}
    for p in (3, 19, 4):
        st = as_dtype(st64, torch.float32)
        outs[p] = decode.ttt_decode_step(st, *xs, torch.tensor([p], device=DEV))
    assert torch.equal(outs[3], outs[19])
    assert not torch.allclose(outs[3], outs[4])


# --- errors ------------------------------------------------------------------------------------------
def _one(kind="linear", B=1, nh=2, dtype=torch.float32):
    st64, ins = make_case(kind, B=B, nh=nh, T=1, act_dtype=dtype, seed=5, device=DEV)
    return as_dtype(st64, torch.float32), list(step_inputs(ins, 0)), torch.zeros(1, dtype=torch.int64, device=DEV)


def _call(st, xs, pos):
    return decode.ttt_decode_step(st, *xs, pos)


def test_error_activation_dtype():
    st, xs, pos = _one()
    xs[0] = xs[0].double()
    with pytest.raises(TypeError, match="fp16, bf16 or fp32"):
        _call(st, [xs[0], xs[1].double(), xs[2].double(), *xs[3:]], pos)
    st, xs, pos = _one()
    with pytest.raises(TypeError, match="share a dtype"):
        _call(st, [xs[0], xs[1].half(), *xs[2:]], pos)


def test_error_state_dtype():
    st, xs, pos = _one()
    st = as_dtype(st, torch.float64)
    with pytest.raises(TypeError, match="fp32"):
        _call(st, xs, pos)


def test_error_head_dim():
    st, xs, pos = _one()
    xs = [xs[0][..., :32], xs[1][..., :32], xs[2][..., :32], *xs[3:]]
    with pytest.raises(ValueError, match="head dim must be 64"):
        _call(st, xs, pos)


def test_error_non_contiguous_state():
    st, xs, pos = _one()
    st.W1 = st.W1.transpose(-1, -2)  # same shape for TTT-Linear, not contiguous
    with pytest.raises(ValueError, match="not contiguous"):
        _call(st, xs, pos)


@pytest.mark.parametrize("what", ["state_batch", "lr", "tau", "ln_w", "tokens"])
def test_error_shapes(what):
    st, xs, pos = _one(B=2)
    if what == "state_batch":
        st2, _, _ = _one(B=1)
        st = st2
        match = "state.W1 has shape"
    elif what == "lr":
        xs[3] = xs[3][:, :1]
        match = "lr must be"
    elif what == "tau":
        xs[6] = xs[6][:8]
        match = "tau must be"
    elif what == "ln_w":
        xs[4] = xs[4][:1]
        match = "ln_w must be"
    else:
        xs[:3] = [torch.cat([x, x], 2) for x in xs[:3]]
        match = "one token"
    with pytest.raises(ValueError, match=match):
        _call(st, xs, pos)


def test_error_mlp_hidden_size():
    st, xs, pos = _one("mlp")
    st.W1, st.b1 = st.W1[..., :128].contiguous(), st.b1[..., :128].contiguous()
    with pytest.raises(ValueError, match="state.W1 has shape"):
        _call(st, xs, pos)


def test_error_position():
    st, xs, pos = _one()
    with pytest.raises(TypeError, match="device tensor"):
        _call(st, xs, 0)
    with pytest.raises(TypeError, match="int64"):
        _call(st, xs, torch.zeros(1, device=DEV))


def test_error_device():
    st, xs, pos = _one()
    xs = [x.to("meta") for x in xs[:3]] + xs[3:]
    with pytest.raises(ValueError, match="is on"):
        _call(st, xs, pos)


@pytest.mark.skipif(DEV == "cuda", reason="the CPU-tensor error is only raised without a GPU")
def test_error_cpu_tensors_without_interpreter(monkeypatch):
    st, xs, pos = _one()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        _call(st, xs, pos)


# --- whole model -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, prompt", [("linear", 5), ("mlp", 16)])
def test_model_decode_with_kernels_matches_reference(kind, prompt):
    from _models import VOCAB, tiny_model

    model = tiny_model(kind, "mamba", dtype=torch.float32, hidden_size=128, num_attention_heads=2).to(DEV)
    ids = torch.randint(0, VOCAB, (2, prompt + 14), generator=torch.Generator().manual_seed(6)).to(DEV)
    full = model(ids)  # reference backend, whole sequence in dual form
    model._backend = decode.DecodeKernelBackend()
    cache = model.new_cache(2)
    logits = [model(ids[:, :prompt], cache)]
    logits += [model.decode_step(ids[:, t], cache)[:, None] for t in range(prompt, ids.shape[1])]
    assert cache.seqlen == ids.shape[1] and int(cache.position) == ids.shape[1]
    assert rel_err(torch.cat(logits, 1), full) < 1e-4


def test_graph_decoder_refuses_what_it_cannot_capture():
    from _models import tiny_model

    from ttt_infer.kernels.graphs import CUDAGraphDecoder

    model = tiny_model("linear", "mamba", dtype=torch.float32, hidden_size=128, num_attention_heads=2)
    with pytest.raises(ValueError, match="backend='kernels'"):
        CUDAGraphDecoder(model, model.new_cache(1))
    if DEV == "cpu":
        model._backend = decode.DecodeKernelBackend()
        with pytest.raises(ValueError, match="CUDA device"):
            CUDAGraphDecoder(model, model.new_cache(1))


@pytest.mark.skipif(DEV == "cuda", reason="fake timings: the CPU run checks the tuner's logic; GPU runs tune for real")
def test_tuner_weights_the_mini_batch_end_and_leaves_the_live_state_alone(monkeypatch):
    """Two candidates: A is fastest mid-mini-batch but slow at its end, B even. The tuner's score is the mean
    over a mini-batch ((15 x mid + end) / 16), so B wins; every timed launch really runs (interpreter) on
    scratch rows, output and weights, and the live state is untouched."""
    import triton.testing

    st64, ins = make_case("linear", B=2, nh=2, T=1, act_dtype=torch.float32, seed=3, device=DEV)
    ins = (*ins[:-1], 1.0 / torch.arange(1, 17, dtype=torch.float32, device=DEV))  # tau_16 > 0: the end updates W
    st = as_dtype(st64, torch.float32)
    live = {k: v.clone() for k, v in st.tensors().items()}
    pos = torch.tensor([5], device=DEV)
    out = torch.empty(2, 2, 1, F, device=DEV)
    kind, nprog, names, args, consts = decode._kernel_args(st, *step_inputs(ins, 0), pos, out)
    cand_a, cand_b = ("v1", 4, 1), ("v3", 4, 0)
    fake = iter([1.0, 10.0, 1.2, 1.2])  # A mid, A end, B mid, B end

    def do_bench(fn, **_):
        fn()
        return next(fake)

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setitem(decode.CANDIDATES, "linear", [cand_a, cand_b])
    best, times = decode._tune(kind, nprog, args, names, consts)
    assert best == cand_b
    assert times[cand_a] == pytest.approx((15 * 1.0 + 10.0) / 16) and times[cand_b] == pytest.approx(1.2)
    for name, t in st.tensors().items():
        assert torch.equal(t, live[name]), name
    assert int(pos) == 5
