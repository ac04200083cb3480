"""The decode GEMM (ttt_infer/kernels/gemm.py) against a float64 reference and cuBLAS/PyTorch.

Without a GPU the kernel runs in the Triton interpreter on CPU tensors (small shapes, fp32 and fp16); with
one, compiled, plus the 1b model's decode shapes in bf16 and fp16 (marked gpu). Outputs are fresh tensors;
the split-K partials and tickets are checked for determinism and reset.
"""

from __future__ import annotations

import json

import pytest
import torch

from ttt_infer.kernels import KernelsUnavailable

try:
    from ttt_infer.kernels import gemm
    from ttt_infer.kernels.glue import TritonGlue

    GLUE = TritonGlue()
except (ImportError, KernelsUnavailable) as e:  # pragma: no cover
    pytest.skip(f"Triton kernels unavailable: {e}", allow_module_level=True)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])


def rnd(*shape, dtype=torch.float32, seed=0, scale=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(dtype).to(DEV)


def err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).norm() / ref.norm()).item()


def check(M, N, K, dtype, config, residual, seed=0):
    x, w = rnd(M, K, dtype=dtype, seed=seed), rnd(N, K, dtype=dtype, seed=seed + 1, scale=0.05)
    r = rnd(M, N, dtype=dtype, seed=seed + 2) if residual else None
    ref = x.double() @ w.double().t() + (r.double() if residual else 0)
    torch_out = torch.addmm(r, x, w.t()) if residual else x @ w.t()  # the same-precision PyTorch result
    y = gemm.skinny_linear(x, w, r, config)
    assert y.shape == (M, N) and y.dtype == dtype
    assert torch.isfinite(y).all()
    e_k, e_t = err(y, ref), err(torch_out, ref)
    assert e_k <= 2 * e_t + (1e-6 if dtype == torch.float32 else 0), (config, e_k, e_t)
    return y


# every candidate on a shape none of them divides (N, K not multiples of BN, BK), with and without residual
@pytest.mark.parametrize("config", gemm.CANDIDATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_candidates_against_float64(config, dtype):
    check(5, 70, 300, dtype, config, residual=True)
    check(16, 33, 40, dtype, config, residual=False, seed=3)


@pytest.mark.parametrize("M", [1, 7, 16, 17, 64])
def test_row_counts(M):
    check(M, 48, 96, torch.float16, (16, 32, 4, 2, 2), residual=True)


def test_split_is_deterministic_and_resets_its_tickets():
    x, w, r = rnd(3, 200), rnd(40, 200, scale=0.05, seed=1), rnd(3, 40, seed=2)
    a = gemm.skinny_linear(x, w, r, (16, 16, 4, 2, 4))
    b = gemm.skinny_linear(x, w, r, (16, 16, 4, 2, 4))
    assert torch.equal(a, b)
    assert int(gemm._counters(x.device, 3)[:3].abs().sum()) == 0  # every ticket back to 0
    # the split order is fixed: 4 splits of 64 columns each summed in order 0..3 (fp32)
    parts = [x[:, s * 64 : (s + 1) * 64].double() @ w[:, s * 64 : (s + 1) * 64].double().t() for s in range(4)]
    assert torch.allclose(a.double(), sum(parts) + r.double(), rtol=1e-5, atol=1e-5)


def test_views_are_read_in_place():
    big = rnd(4, 3 * 64)
    x = big[:, 64:128]  # a column slice: row stride 192
    w = rnd(32, 64, seed=1, scale=0.05)
    r = rnd(4, 2 * 32, seed=2)[:, :32]
    y = gemm.skinny_linear(x, w, r, (16, 32, 4, 2, 1))
    torch.testing.assert_close(y, torch.addmm(r, x, w.t()), rtol=1e-5, atol=1e-5)


def test_bad_inputs_get_clear_errors():
    x, w = rnd(4, 32), rnd(16, 32)
    with pytest.raises(ValueError, match="M <= 64"):
        gemm.skinny_linear(rnd(65, 32), w)
    with pytest.raises(ValueError, match="w \\[N, K\\]"):
        gemm.skinny_linear(x, rnd(16, 31))
    with pytest.raises(TypeError, match="share a dtype"):
        gemm.skinny_linear(x, w.half())
    with pytest.raises(TypeError, match="share a dtype"):
        gemm.skinny_linear(x.to(torch.int32), w.to(torch.int32))
    with pytest.raises(ValueError, match="unit column stride"):
        gemm.skinny_linear(rnd(32, 4).t(), w)
    with pytest.raises(ValueError, match="residual must be"):
        gemm.skinny_linear(x, w, rnd(4, 15))
    with pytest.raises(ValueError, match="BN:BK:WARPS:STAGES:SPLIT"):
        gemm.parse_config("16:24:4:3:1")
    with pytest.raises(ValueError, match="BN:BK:WARPS:STAGES:SPLIT"):
        gemm.parse_config("16:32:4")


def test_choose_follows_the_override_and_the_table(monkeypatch, tmp_path):
    x, w, r = rnd(16, 64), rnd(32, 64), rnd(16, 32)
    monkeypatch.setenv("TTT_INFER_GEMM", "cublas")
    assert gemm.choose(x, w, r) is None
    monkeypatch.setenv("TTT_INFER_GEMM", "32:64:4:3:2")
    assert gemm.choose(x, w, r) == (32, 64, 4, 3, 2)
    assert gemm.choose(rnd(65, 64), w, None) is None  # too many rows: cuBLAS whatever the override
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"gpu": "test", "entries": [
        {"bm": 16, "N": 32, "K": 64, "residual": True, "dtype": "float32", "config": [16, 32, 4, 2, 1]},
        {"bm": 16, "N": 32, "K": 64, "residual": False, "dtype": "float32", "config": None},
    ]}))  # fmt: skip
    monkeypatch.setenv("TTT_INFER_GEMM", str(table))
    assert gemm.choose(x, w, r) == (16, 32, 4, 2, 1)
    assert gemm.choose(x[:3], w, r[:3]) == (16, 32, 4, 2, 1)  # 3 rows: the same BM = 16 entry
    assert gemm.choose(x, w, None) is None  # measured: cuBLAS was faster
    assert gemm.choose(torch.cat([x, x]), w, torch.cat([r, r])) is None  # BM = 32: not in the table
    monkeypatch.setenv("TTT_INFER_GEMM", "table")
    if DEV == "cpu":
        assert gemm.choose(x, w, r) is None  # the interpreter has no GPU model, so no table


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_glue_linear_and_projections_through_the_kernel(monkeypatch, dtype):
    """TritonGlue routes few-row projections through the kernel (forced here) and matches cuBLAS/PyTorch."""
    from torch import nn

    monkeypatch.setenv("TTT_INFER_GEMM", "16:32:4:2:2")
    lin = [nn.Linear(64, n, bias=False).to(DEV, dtype) for n in (48, 16)]
    x, res = rnd(3, 1, 64, dtype=dtype), rnd(3, 1, 48, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
    a, b = GLUE.projections(x, tuple(lin))
    torch.testing.assert_close(a, lin[0](x), **tol)
    torch.testing.assert_close(b, lin[1](x), **tol)
    torch.testing.assert_close(GLUE.linear(x, lin[0], res), res + lin[0](x), **tol)
    (c,) = GLUE.projections(x, (lin[1],))
    torch.testing.assert_close(c, lin[1](x), **tol)


DECODE_SHAPES = [(6144, 2048, False), (11008, 2048, False), (2048, 5504, True), (2048, 2048, True)]  # 1b: q/v/g,
# gate/up, down + residual, o_proj + residual


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 16, 64])
@pytest.mark.parametrize("N,K,residual", DECODE_SHAPES)
def test_decode_shapes_table_configs(dtype, M, N, K, residual):
    """The 1b model's decode GEMMs with the configuration this GPU's table picks (and the table's other picks):
    error vs float64 at most 2x cuBLAS's."""
    import triton

    table = gemm._table(str(gemm.table_path(torch.device("cuda"))))
    configs = sorted(set(table.values())) or [gemm.CANDIDATES[0]]
    mine = table.get((max(16, triton.next_power_of_2(M)), N, K, residual, "bfloat16"))
    for config in [mine] + [c for c in configs if c != mine] if mine else configs:
        check(M, N, K, dtype, config, residual, seed=M)


@pytest.mark.gpu
@pytest.mark.parametrize("config", gemm.CANDIDATES)
def test_every_candidate_compiled(config):
    """Every candidate compiled, at o_proj's shape (16 rows, bf16) and an odd one (K not a multiple of BK)."""
    try:
        check(16, 2048, 2048, torch.bfloat16, config, residual=True)
        check(3, 200, 1000, torch.bfloat16, config, residual=False, seed=1)
    except triton_resource_errors() as e:  # a tile that does not fit in shared memory is skipped, and says so
        pytest.skip(f"{config} does not fit: {e}")


def triton_resource_errors():
    from triton.runtime.errors import OutOfResources

    return (OutOfResources,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("config", [(16, 32, 4, 2, 1), (16, 32, 4, 2, 3)])
def test_glu_input_is_silu_mul_fused(dtype, config):
    """silu(a) * b computed as the kernel loads its input: the same bits as TritonGlue.silu_mul, then the GEMM."""
    M, K, N = 5, 96, 40
    ab = rnd(M, 2 * K, dtype=dtype)  # the gate/up output: a and b are column slices of one tensor
    a, b = ab[:, :K], ab[:, K:]
    w, r = rnd(N, K, dtype=dtype, seed=1, scale=0.05), rnd(M, N, dtype=dtype, seed=2)
    fused = gemm.skinny_linear(a, w, r, config, glu_b=b)
    assert torch.equal(fused, gemm.skinny_linear(GLUE.silu_mul(a, b), w, r, config))
    ref = torch.nn.functional.silu(a.double()) * b.double() @ w.double().t() + r.double()
    two_step = torch.addmm(r, torch.nn.functional.silu(a) * b, w.t())
    assert err(fused, ref) <= 2 * err(two_step, ref) + (1e-6 if dtype == torch.float32 else 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("config", [(16, 32, 4, 2, 1), (16, 32, 4, 2, 2)])
def test_lr_gate_in_the_epilogue(dtype, config):
    """The stacked weight's last nh rows give the lr gate (fp32: as TritonGlue.lr_gate) and the rest the same
    bits as the GEMM without them."""
    M, K, ny, nh = 6, 64, 48, 3
    x = rnd(M, K, dtype=dtype)
    w = rnd(ny + nh, K, dtype=dtype, seed=1, scale=0.1)
    c = rnd(nh, seed=2)
    y, lr = gemm.skinny_linear(x, w, None, config, lr_gate=(c, 0.25))
    assert y.shape == (M, ny) and lr.shape == (M, nh) and lr.dtype == torch.float32
    assert torch.equal(y, gemm.skinny_linear(x, w[:ny], None, config))
    want = GLUE.lr_gate(x[:, None], w[ny:], c, 0.25)[:, :, 0]  # [M, nh] at T = 1
    torch.testing.assert_close(lr, want, rtol=2e-6, atol=2e-6)
    with pytest.raises(ValueError, match="whole BN"):
        gemm.skinny_linear(x, w[: ny + 2], None, config, lr_gate=(c[:1], 0.25))  # 49 rows before the gate


@pytest.mark.parametrize("T", [1, 3])
def test_glue_projections_lr_and_swiglu_match_the_reference(monkeypatch, T):
    """TritonGlue's fused decode paths (forced configuration) against TorchGlue's composition; T > 1 takes the
    unfused path through the same stacked weights."""
    from torch import nn

    from ttt_infer.layers import TORCH_GLUE

    monkeypatch.setenv("TTT_INFER_GEMM", "16:32:4:2:2")
    monkeypatch.setenv("TTT_INFER_GEMM_FOLDS", "silu,lr")  # both folds (silu is opt-in)
    glue = TritonGlue()  # its own stacked-weight cache
    C, nh, inter = 64, 4, 96
    projs = tuple(nn.Linear(C, C, bias=False).to(DEV) for _ in range(3))
    w_lr, c_lr = rnd(nh, C, seed=3, scale=0.1), rnd(nh, seed=4)
    x, res = rnd(2, T, C, seed=5), rnd(2, T, C, seed=6)
    ys, lr = glue.projections_lr(x, projs, w_lr, c_lr, 0.5)
    ys_ref, lr_ref = TORCH_GLUE.projections_lr(x, projs, w_lr, c_lr, 0.5)
    assert lr.shape == lr_ref.shape == (2, nh, T)
    torch.testing.assert_close(lr, lr_ref, rtol=2e-6, atol=2e-6)
    for a, b in zip(ys, ys_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    gate, up, down = nn.Linear(C, inter, bias=False), nn.Linear(C, inter, bias=False), nn.Linear(inter, C, bias=False)
    gate, up, down = gate.to(DEV), up.to(DEV), down.to(DEV)
    torch.testing.assert_close(glue.swiglu(x, gate, up, down, res), TORCH_GLUE.swiglu(x, gate, up, down, res),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    # the lr rows are stacked once: a second call reuses the same stacked copy (a fresh view of w_lr each call)
    glue.projections_lr(x, projs, w_lr.view(nh, C), c_lr, 0.5)
    assert sum(1 for k in glue._stacks if len(k) == 5) == 1


def test_model_decode_through_the_fused_gemm_paths(monkeypatch):
    """Whole-model decode with every few-row GEMM forced through the decode GEMM (lr gate and SwiGLU fused)."""
    from _models import VOCAB, rel_err, tiny_model

    from ttt_infer.kernels import decode

    monkeypatch.setenv("TTT_INFER_GEMM", "16:32:4:2:2")
    monkeypatch.setenv("TTT_INFER_GEMM_FOLDS", "silu,lr")  # both folds (silu is opt-in)
    model = tiny_model("linear", "mamba", dtype=torch.float32, hidden_size=128, num_attention_heads=2).to(DEV)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(6)).to(DEV)
    full = model(ids)
    model._backend = decode.DecodeKernelBackend()
    cache = model.new_cache(2)
    logits = [model(ids[:, :3], cache)]
    logits += [model.decode_step(ids[:, t], cache)[:, None] for t in range(3, ids.shape[1])]
    assert rel_err(torch.cat(logits, 1), full) < 1e-4


@pytest.mark.parametrize("folds, rows, fused", [("silu,lr", 3, True), ("lr", 3, False), ("silu", 17, False)])
def test_silu_fold_follows_the_switch_and_the_row_limit(monkeypatch, folds, rows, fused):
    from torch import nn

    monkeypatch.setenv("TTT_INFER_GEMM", "16:32:4:2:1")
    monkeypatch.setenv("TTT_INFER_GEMM_FOLDS", folds)
    glue = TritonGlue()
    calls = []
    monkeypatch.setattr(glue, "silu_mul", lambda a, b: calls.append(1) or TritonGlue.silu_mul(glue, a, b))
    gate, up, down = (nn.Linear(i, o, bias=False).to(DEV) for i, o in ((32, 48), (32, 48), (48, 32)))
    x = rnd(rows, 1, 32)
    y = glue.swiglu(x, gate, up, down)
    torch.testing.assert_close(y, down(torch.nn.functional.silu(gate(x)) * up(x)), rtol=1e-5, atol=1e-5)
    assert (not calls) == fused
