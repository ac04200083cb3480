"""TK prefill kernels vs the float64 reference (ttt_infer.ttt.reference.dual_forward).

For every case: random inputs and a random (non-init) state, the same inputs through
- the float64 reference (the truth),
- the same-dtype reference (fp16/bf16 matmul operands, fp32 accumulation and state: the yardstick),
- the kernel (output buffer poisoned with NaN first),
and every returned tensor (output, W1, b1, [W2, b2], rows of the partial mini-batch) must satisfy
    rel_err(kernel) <= 2 * rel_err(same-dtype reference)   (floor 1e-6 where the reference is exact).
The kernel returns its output in the input dtype, so the yardstick's output is rounded to that dtype
too before its error is taken.
"""

from __future__ import annotations

import math

import pytest
import torch

from ttt_infer.ttt.cache import TTTState
from ttt_infer.ttt.reference import dual_forward

pytestmark = pytest.mark.gpu

F, MB, NH = 64, 16, 3
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _prefill():
    from ttt_infer.kernels import prefill

    try:
        prefill.check_available()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"kernels unavailable on a GPU machine: {e}")
    return prefill


def make_case(kind: str, B: int, T: int, start: int, dtype: torch.dtype, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev = "cuda"

    def rn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, device=dev, dtype=torch.float32) * scale

    hid = F if kind == "linear" else 4 * F
    base_lr = 1.0 if kind == "linear" else 0.1
    xq, xk, xv = (rn(B, NH, T, F).to(dtype) for _ in range(3))
    lr = base_lr * torch.sigmoid(rn(B, NH, T)) / F
    tau = torch.clamp(1.0 / torch.arange(1, MB + 1, device=dev) + rn(MB, scale=0.05), min=0.0)
    ln_w = 1.0 + rn(NH, F, scale=0.1)
    ln_b = rn(NH, F, scale=0.1)
    st = TTTState(
        W1=rn(B, NH, F, hid, scale=0.1),
        b1=rn(B, NH, hid, scale=0.1),
        k=rn(B, NH, MB, F),
        g1=rn(B, NH, MB, hid, scale=0.05),
        lr=base_lr * torch.sigmoid(rn(B, NH, MB)) / F,
    )
    if kind == "mlp":
        st.W2 = rn(B, NH, hid, F, scale=0.1)
        st.b2 = rn(B, NH, F, scale=0.1)
        st.x2 = rn(B, NH, MB, hid, scale=0.5)
        st.g2 = rn(B, NH, MB, F, scale=0.05)
    return st, (xq, xk, xv, lr, ln_w, ln_b, tau, start)


def state64(st: TTTState) -> TTTState:
    return TTTState(**{k: v.double() for k, v in st.tensors().items()})


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    d = (a.double() - ref.double()).norm().item()
    n = ref.double().norm().item()
    return d / n if n > 0 else d


def _need_wgmma(prefill, variant="native"):
    """Skip unless the wgmma kernel can run; on a compute-capability 9.0 GPU a missing kernel is a failure."""
    if prefill.wgmma_available(variant):
        return
    if torch.cuda.get_device_capability() == (9, 0):
        pytest.fail("wgmma kernel unavailable on a 9.0 GPU: was the extension built with 9.0a in TORCH_CUDA_ARCH_LIST?")
    pytest.skip("the wgmma kernel needs a compute-capability 9.0 GPU")


def compare(kind, B, T, start, dtype, seed, variant="native", mlp_warps=None, impl="default"):
    prefill = _prefill()
    if impl == "wgmma":
        _need_wgmma(prefill, variant)
    st, args = make_case(kind, B, T, start, dtype, seed)
    xq, xk, xv, lr, ln_w, ln_b, tau, start = args

    s64 = state64(st)
    out64 = dual_forward(
        s64, xq.double(), xk.double(), xv.double(), lr.double(), ln_w.double(), ln_b.double(), tau.double(), start
    )
    s_lo = st.clone()
    out_lo = dual_forward(s_lo, *args).to(dtype)
    s_k = st.clone()
    out_buf = torch.full_like(xq, float("nan"))
    out_k = prefill.ttt_prefill(s_k, *args, out=out_buf, variant=variant, mlp_warps=mlp_warps, impl=impl)
    torch.cuda.synchronize()
    assert out_k.data_ptr() == out_buf.data_ptr()
    assert torch.isfinite(out_k.float()).all(), "kernel left NaN/inf in the output (unwritten or bad values)"

    n_rows = (start + T) % MB  # rows of the final partial mini-batch kept in the state (0: none)
    pairs = {"out": (out_k, out_lo, out64)}
    names = ["W1", "b1"] + (["W2", "b2"] if kind == "mlp" else [])
    for n in names:
        pairs[n] = (getattr(s_k, n), getattr(s_lo, n), getattr(s64, n))
    if n_rows:
        rows = ["k", "g1", "lr"] + (["x2", "g2"] if kind == "mlp" else [])
        for n in rows:
            pairs[n + "_rows"] = tuple(getattr(s, n)[:, :, :n_rows] for s in (s_k, s_lo, s64))
    report = {}
    for name, (k, lo, ref) in pairs.items():
        ek, elo = rel(k, ref), rel(lo, ref)
        assert math.isfinite(ek), f"{name}: kernel error is {ek}"
        report[name] = (ek, elo)
    bad = {n: v for n, v in report.items() if v[0] > max(2 * v[1], 1e-6)}
    msg = ", ".join(f"{n}: kernel {a:.2e} ref {b:.2e}" for n, (a, b) in report.items())
    tag = (
        variant + (f"/{mlp_warps}w" if kind == "mlp" and mlp_warps else "") + (f"/{impl}" if impl != "default" else "")
    )
    print(f"[{tag}] {kind} {dtype} B={B} T={T} start={start}: {msg}")
    assert not bad, f"kernel error above 2x the same-dtype reference's: {bad}"
    return report, out_k


CASES = [(kind, B, T) for kind in ("linear", "mlp") for B in (1, 3, 16) for T in (16, 17, 100, 2048)]


@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("kind,B,T", CASES)
def test_prefill_matches_reference(kind, B, T, dname):
    compare(kind, B, T, 0, DTYPES[dname], seed=1000 + B * 7 + T)


@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("start,T", [(5, 17), (5, 100), (15, 2), (1, 3)])
def test_prefill_starts_inside_mini_batch(kind, start, T, dname):
    compare(kind, 3, T, start, DTYPES[dname], seed=77 + start * 31 + T)


@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize(
    "B,T,start",
    [(1, 16, 0), (1, 17, 0), (3, 100, 0), (16, 2048, 0), (3, 1, 0), (3, 17, 5), (3, 100, 5), (3, 2, 15), (3, 3, 1)],
)
def test_linear_wgmma_matches_reference(B, T, start, dname):
    """The Hopper warpgroup-MMA TTT-Linear kernel (impl="wgmma"), same float64 comparison."""
    compare("linear", B, T, start, DTYPES[dname], seed=4000 + B * 7 + T + start, impl="wgmma")


@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("B,T,start", [(1, 17, 0), (3, 100, 5), (16, 2048, 0), (3, 2, 15)])
def test_linear_v4_matches_reference(B, T, start, dname):
    """The previous default TTT-Linear kernel, kept as impl="v4" for same-run timing, still correct."""
    compare("linear", B, T, start, DTYPES[dname], seed=5000 + B * 7 + T + start, impl="v4")


@pytest.mark.parametrize("variant", ["native", "sm80"])
@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("B,T,start", [(3, 100, 5), (2, 37, 0), (1, 2048, 0), (3, 2, 15), (2, 19, 3), (1, 13, 0)])
def test_linear_v4_and_default_identical(B, T, start, dname, variant):
    """v6 (the default) differs from v4 only in shared-memory layouts (input staging, the LayerNorm partials):
    the same arithmetic in the same order, so outputs and states are bit-identical. The shapes cover the
    staging's edge paths: a first mini-batch that starts inside the state, a last one that ends inside the
    prompt, prompts shorter than one mini-batch."""
    prefill = _prefill()
    if variant == "sm80":
        from ttt_infer.kernels import KernelsUnavailable

        try:
            prefill.check_available("sm80")
        except KernelsUnavailable as e:
            pytest.skip(f"sm80 variant not built (python -m ttt_infer.kernels.build --variant sm80): {e}")
    st, args = make_case("linear", B, T, start, DTYPES[dname], seed=21 + B + T + start)
    s4, s6 = st.clone(), st.clone()
    o4 = prefill.ttt_prefill(s4, *args, impl="v4", variant=variant)
    o6 = prefill.ttt_prefill(s6, *args, variant=variant)
    torch.cuda.synchronize()
    assert torch.isfinite(o6).all()
    assert torch.equal(o6, o4)
    for n, t in s4.tensors().items():
        assert torch.equal(getattr(s6, n), t), n


def test_linear_wgmma_refused_without_sm90a_image():
    """The sm80 build (8.0+PTX) has no sm_90a image: impl="wgmma" raises a clear error, no launch."""
    from ttt_infer.kernels import KernelsUnavailable, prefill

    try:
        prefill.check_available("sm80")
    except KernelsUnavailable as e:
        pytest.skip(f"sm80 variant not built: {e}")
    assert not prefill.wgmma_available("sm80")
    st, args = make_case("linear", 1, 20, 0, torch.bfloat16, seed=1)
    with pytest.raises(RuntimeError, match=r"impl=\"wgmma\".*9\.0a"):
        prefill.ttt_prefill(st, *args, variant="sm80", impl="wgmma")


def test_linear_wgmma_chunks_compose_and_deterministic():
    prefill = _prefill()
    _need_wgmma(prefill)
    st, args = make_case("linear", 16, 512, 0, torch.bfloat16, seed=3)
    s1, s2 = st.clone(), st.clone()
    o1 = prefill.ttt_prefill(s1, *args, impl="wgmma")
    o2 = prefill.ttt_prefill(s2, *args, impl="wgmma")
    torch.cuda.synchronize()
    assert torch.equal(o1, o2)
    for n, t in s1.tensors().items():
        assert torch.equal(t, getattr(s2, n)), n
    st, args = make_case("linear", 2, 53, 0, torch.bfloat16, seed=11)
    xq, xk, xv, lr, ln_w, ln_b, tau, _ = args
    s_all, s_two, cut = st.clone(), st.clone(), 21
    o_all = prefill.ttt_prefill(s_all, xq, xk, xv, lr, ln_w, ln_b, tau, 0, impl="wgmma")
    head = (x[:, :, :cut].contiguous() for x in (xq, xk, xv, lr))
    tail = (x[:, :, cut:].contiguous() for x in (xq, xk, xv, lr))
    o1 = prefill.ttt_prefill(s_two, *head, ln_w, ln_b, tau, 0, impl="wgmma")
    o2 = prefill.ttt_prefill(s_two, *tail, ln_w, ln_b, tau, cut % MB, impl="wgmma")
    torch.cuda.synchronize()
    assert rel(torch.cat([o1, o2], 2), o_all) < 1e-2
    assert rel(s_two.W1, s_all.W1) < 1e-4


@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("warps", [8, 16])
@pytest.mark.parametrize("B,T,start", [(1, 17, 0), (3, 100, 0), (16, 2048, 0), (3, 100, 5), (3, 2, 15)])
def test_mlp_cta_sizes(B, T, start, warps, dname):
    """TTT-MLP with either CTA size (8 warps x 32 hidden units, 16 warps x 16)."""
    compare("mlp", B, T, start, DTYPES[dname], seed=900 + B + T + start, mlp_warps=warps)


@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("start,T", [(0, 100), (5, 100), (0, 2048)])
def test_sm80_path_matches_reference(kind, start, T, dname):
    """The same kernels built for sm_80 (+PTX), run on this GPU through the driver's PTX JIT."""
    from ttt_infer.kernels import KernelsUnavailable, prefill

    try:
        prefill.check_available("sm80")
    except KernelsUnavailable as e:
        pytest.skip(f"sm80 variant not built (python -m ttt_infer.kernels.build --variant sm80): {e}")
    compare(kind, 3, T, start, DTYPES[dname], seed=5 + T + start, variant="sm80")


@pytest.mark.parametrize("kind,warps", [("linear", None), ("mlp", 8), ("mlp", 16)])
def test_prefill_deterministic(kind, warps):
    """Two runs on the same inputs are bitwise equal (a race would show up as a moving result)."""
    prefill = _prefill()
    st, args = make_case(kind, 16, 512, 0, torch.bfloat16, seed=3)
    s1, s2 = st.clone(), st.clone()
    o1 = prefill.ttt_prefill(s1, *args, mlp_warps=warps)
    o2 = prefill.ttt_prefill(s2, *args, mlp_warps=warps)
    torch.cuda.synchronize()
    assert torch.equal(o1, o2)
    for n, t in s1.tensors().items():
        assert torch.equal(t, getattr(s2, n)), n


def test_prefill_chunks_compose():
    """Prefill of T tokens == prefill of a prefix then the rest continuing inside the mini-batch."""
    prefill = _prefill()
    for kind in ("linear", "mlp"):
        st, args = make_case(kind, 2, 53, 0, torch.bfloat16, seed=11)
        xq, xk, xv, lr, ln_w, ln_b, tau, _ = args
        s_all = st.clone()
        o_all = prefill.ttt_prefill(s_all, xq, xk, xv, lr, ln_w, ln_b, tau, 0)
        s_two = st.clone()
        cut = 21
        o1 = prefill.ttt_prefill(s_two, *(x[:, :, :cut].contiguous() for x in (xq, xk, xv, lr)), ln_w, ln_b, tau, 0)
        o2 = prefill.ttt_prefill(
            s_two, *(x[:, :, cut:].contiguous() for x in (xq, xk, xv, lr)), ln_w, ln_b, tau, cut % MB
        )
        torch.cuda.synchronize()
        o_two = torch.cat([o1, o2], 2)
        assert rel(o_two, o_all) < 1e-2, kind
        assert rel(s_two.W1, s_all.W1) < 1e-4, kind
