"""Triton glue kernels (ttt_infer/kernels/glue.py) against the PyTorch reference (layers.TorchGlue).

Without a GPU these run in the Triton interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1);
with one, the same tests run the compiled kernels. Inputs are random, outputs poisoned beforehand
where the kernel writes into an existing buffer (the conv history).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt_infer.kernels import KernelsUnavailable
from ttt_infer.kernels import glue as glue_mod
from ttt_infer.layers import TORCH_GLUE, depthwise_conv1d

try:
    from ttt_infer.kernels.glue import TritonGlue

    GLUE = TritonGlue()
except (ImportError, KernelsUnavailable) as e:  # pragma: no cover
    pytest.skip(f"glue kernels unavailable: {e}", allow_module_level=True)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])  # no bf16 in the interpreter
# fp32: accumulation order only; 16-bit: a rounding of the output (or of an intermediate) may differ by one ulp
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def rnd(*shape, dtype=torch.float32, seed=0, scale=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(dtype).to(DEV)


def conv(C: int, seed: int, dtype) -> nn.Conv1d:
    torch.manual_seed(seed)
    c = depthwise_conv1d(4, C)
    with torch.no_grad():
        c.bias.normal_()  # a bias that is not ~0 is exercised
    return c.to(DEV, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(dtype):
    x = rnd(3, 7, 96, dtype=dtype, seed=1)
    w = rnd(96, dtype=dtype, seed=2) + 1
    assert rel_err(GLUE.rms_norm(x, w, 1e-6), TORCH_GLUE.rms_norm(x, w, 1e-6)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 2, 3, 20, 37])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("C", [64, 512])
def test_causal_conv_and_history(dtype, T, residual, C):
    """T = 1, 2 mix history and input in the new history; 37 spans three programs along T (separate push);
    C = 512 two channel tiles."""
    B = 2
    x = rnd(B, T, C, dtype=dtype, seed=T)
    res = rnd(B, T, C, dtype=dtype, seed=T + 1) if residual else None
    c = conv(C, T, dtype)
    h0 = rnd(B, 3, C, dtype=dtype, seed=T + 2)
    h_ref, h_k = h0.clone(), h0.clone()
    want = TORCH_GLUE.causal_conv(x, c, h_ref, residual=res)
    got = GLUE.causal_conv(x, c, h_k, residual=res)
    assert got.shape == (B, T, C)
    assert rel_err(got, want) < TOL[dtype]
    assert torch.equal(h_k, h_ref)  # copies only: exact
    # continuing: the history the kernel left behind drives the next chunk exactly as the reference's
    x2 = rnd(B, 5, C, dtype=dtype, seed=T + 3)
    assert rel_err(GLUE.causal_conv(x2, c, h_k), TORCH_GLUE.causal_conv(x2, c, h_ref)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [96, 200])
def test_pre_block(dtype, C):
    """A Mamba block's front (x2 = x + conv(norm_1(x)), h = norm_2(x2), history advanced): the fused one-token
    kernel for four decode steps in a row (each step's history feeds the next), then a 3-token prompt (the
    three separate kernels); C = 200 leaves part of the row's power-of-two block masked."""
    from ttt_infer.layers import RMSNorm

    B = 3
    c = conv(C, 5, dtype)
    n1, n2 = RMSNorm(C, 1e-6), RMSNorm(C, 1e-5)
    with torch.no_grad():
        n1.weight.normal_()
        n2.weight.normal_()
    n1, n2 = n1.to(DEV, dtype), n2.to(DEV, dtype)
    h0 = rnd(B, 3, C, dtype=dtype, seed=6)
    h_ref, h_k = h0.clone(), h0.clone()
    for step, T in enumerate((1, 1, 1, 1, 3)):
        x = rnd(B, T, C, dtype=dtype, seed=10 + step, scale=2.0)
        want_x2, want_h = TORCH_GLUE.pre_block(x, n1, c, h_ref, n2)
        got_x2, got_h = GLUE.pre_block(x, n1, c, h_k, n2)
        assert got_x2.shape == got_h.shape == (B, T, C) and got_h.dtype == dtype
        assert rel_err(got_x2, want_x2) < TOL[dtype], step
        assert rel_err(got_h, want_h) < TOL[dtype], step
        assert rel_err(h_k, h_ref) < TOL[dtype], step  # the normalized inputs, rounded as the reference rounds


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T, start", [(1, 0), (1, 15), (20, 0), (37, 5), (3, 13)])
@pytest.mark.parametrize("nh, C", [(2, 64), (4, 64), (4, 96), (8, 512)])
def test_qk_conv_rope(dtype, T, start, nh, C):
    """C = 96: heads of 24 (not a power of two) and a channel tile wider than C; C = 512: heads of 64 over
    two channel tiles."""
    B = 2
    x = rnd(B, T, C, dtype=dtype, seed=T + nh)
    cq, ck = conv(C, 1, dtype), conv(C, 2, dtype)
    h0 = rnd(B, 3, C, dtype=dtype, seed=9)
    h_ref, h_k = h0.clone(), h0.clone()
    pos = torch.tensor([start], device=DEV)
    want = TORCH_GLUE.qk_conv_rope(x, cq, ck, h_ref, pos, nh, 10000.0, 16)
    got = GLUE.qk_conv_rope(x, cq, ck, h_k, pos, nh, 10000.0, 16)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (B, nh, T, C // nh) and g.is_contiguous()
        assert rel_err(g, w) < TOL[dtype]
    assert torch.equal(h_k, h_ref)


@pytest.mark.parametrize("tile, nh, C", [((32, 128, 8), 8, 512), ((8, 32, 2), 4, 96), ((64, 2, 1), 4, 96)])
def test_conv_tiles(tile, nh, C):
    """Other program tiles (times, channels, warps) of the convolutions give the reference's results: tiles
    narrower than a head, wider than T, a single channel pair."""
    glue, dtype, B, T = TritonGlue(conv_tile=tile), torch.float16, 2, 37
    x, res = rnd(B, T, C, dtype=dtype, seed=5), rnd(B, T, C, dtype=dtype, seed=6)
    cq, ck = conv(C, 1, dtype), conv(C, 2, dtype)
    h0 = rnd(B, 3, C, dtype=dtype, seed=9)
    h_ref, h_k = h0.clone(), h0.clone()
    want = TORCH_GLUE.causal_conv(x, cq, h_ref, residual=res)
    assert rel_err(glue.causal_conv(x, cq, h_k, residual=res), want) < 2e-3
    pos = torch.tensor([7], device=DEV)
    got = glue.qk_conv_rope(x, cq, ck, h_k, pos, nh, 10000.0, 16)
    want = TORCH_GLUE.qk_conv_rope(x, cq, ck, h_ref, pos, nh, 10000.0, 16)
    assert all(rel_err(g, w) < 2e-3 for g, w in zip(got, want, strict=True))
    assert torch.equal(h_k, h_ref)


@pytest.mark.parametrize("tile, warps, nh, C", [((512, 4), 4, 8, 512), ((2048, 8), 16, 4, 96), ((2, 1), 1, 4, 96)])
def test_decode_tiles(tile, warps, nh, C):
    """One token (decode): other tiles (channels, warps) of the convolutions' programs and other warps of the block
    front's give the reference's results over three steps (each step's history feeds the next): a tile wider than
    C, a single channel pair, a program of one warp."""
    from ttt_infer.layers import RMSNorm

    glue, dtype, B = TritonGlue(decode_conv_tile=tile, preblock_warps=warps), torch.float16, 3
    cq, ck = conv(C, 1, dtype), conv(C, 2, dtype)
    n1, n2 = RMSNorm(C, 1e-6).to(DEV, dtype), RMSNorm(C, 1e-5).to(DEV, dtype)
    h0 = rnd(B, 3, C, dtype=dtype, seed=9)
    hq_ref, hq_k, hp_ref, hp_k = h0.clone(), h0.clone(), h0.clone(), h0.clone()
    for step in range(3):
        x = rnd(B, 1, C, dtype=dtype, seed=20 + step)
        pos = torch.tensor([14 + step], device=DEV)  # the mini-batch's end crossed
        got = glue.qk_conv_rope(x, cq, ck, hq_k, pos, nh, 10000.0, 16)
        want = TORCH_GLUE.qk_conv_rope(x, cq, ck, hq_ref, pos, nh, 10000.0, 16)
        assert all(rel_err(g, w) < 2e-3 for g, w in zip(got, want, strict=True)), step
        assert torch.equal(hq_k, hq_ref), step
        got = glue.pre_block(x, n1, cq, hp_k, n2)
        want = TORCH_GLUE.pre_block(x, n1, cq, hp_ref, n2)
        assert all(rel_err(g, w) < 2e-3 for g, w in zip(got, want, strict=True)), step
        assert rel_err(hp_k, hp_ref) < 2e-3, step


def test_conv_tile_must_be_powers_of_two():
    with pytest.raises(ValueError, match="powers of two"):
        TritonGlue(conv_tile=(16, 96, 4))
    with pytest.raises(ValueError, match="powers of two"):
        TritonGlue(decode_conv_tile=(96, 4))
    with pytest.raises(ValueError, match="powers of two"):
        TritonGlue(preblock_warps=6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w_like_x", [False, True])
@pytest.mark.parametrize("nh", [6, 40])
@pytest.mark.parametrize("T", [19, 40])
def test_lr_gate(dtype, w_like_x, nh, T):
    """w in x's 16-bit dtype (as in a 16-bit model) takes the tensor-core path: still the fp32 dot product.
    nh = 40: with few rows the heads are split over programs, 16 a program (three, the last partly masked).
    T = 19: 38 rows, the few-rows kernel (a program a row and 4 heads: nh = 6 ends in a half-masked block);
    T = 40: 80 rows, above LR_GATE_ROWS_MAX, the tensor-core kernel."""
    assert 2 * 19 <= glue_mod.LR_GATE_ROWS_MAX < 2 * 40
    x = rnd(2, T, 96, dtype=dtype, seed=3)
    w, b = rnd(nh, 96, seed=4, scale=0.1, dtype=dtype if w_like_x else torch.float32), rnd(nh, seed=5)
    got = GLUE.lr_gate(x, w, b, 1.0 / 16)
    assert got.shape == (2, nh, T) and got.dtype == torch.float32
    assert rel_err(got, TORCH_GLUE.lr_gate(x, w, b, 1.0 / 16)) < 2e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gated", [False, True, "slice"])
def test_post_gate(dtype, gated):
    """gated="slice": the gate is a column slice of a wider tensor (a stacked projection's output)."""
    B, nh, T, f = 2, 4, 5, 24  # C = 96: not a power of two
    o = rnd(B, nh, T, f, seed=6, scale=3.0)
    ln = nn.LayerNorm(nh * f, eps=1e-6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ln = ln.to(DEV, dtype)
    gate = rnd(B, T, nh * f, dtype=dtype, seed=7) if gated else None
    if gated == "slice":
        gate = rnd(B, T, 3 * nh * f, dtype=dtype, seed=7)[..., nh * f : 2 * nh * f]
        assert not gate.is_contiguous()
    got = GLUE.post_gate(o, gate, ln, 1e-6, dtype)
    assert got.shape == (B, T, nh * f) and got.dtype == dtype
    assert rel_err(got, TORCH_GLUE.post_gate(o, gate, ln, 1e-6, dtype)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul(dtype):
    a, b = rnd(3, 5, 1100, dtype=dtype, seed=8), rnd(3, 5, 1100, dtype=dtype, seed=9)  # two column blocks
    assert rel_err(GLUE.silu_mul(a, b), TORCH_GLUE.silu_mul(a, b)) < TOL[dtype]
    ab = rnd(3, 5, 2200, dtype=dtype, seed=10)  # the halves of one stacked projection's output
    a, b = ab.split(1100, dim=-1)
    y = GLUE.silu_mul(a, b)
    assert y.is_contiguous() and rel_err(y, TORCH_GLUE.silu_mul(a, b)) < TOL[dtype]


@pytest.mark.gpu
def test_row_kernels_past_65535_rows():
    """B*T above 65535 rows (a prefill of 16 x 4096 tokens): no row count may land on a 65535-limited grid axis
    (session 4: silu_mul put the rows on axis 1 and failed with `invalid argument` from B=16, T=4096 on)."""
    rows, n = 70_000, 40
    ab = rnd(rows, 2 * n, dtype=torch.float16, seed=11)
    a, b = ab.split(n, dim=-1)  # column slices, as from a stacked projection
    assert rel_err(GLUE.silu_mul(a, b), TORCH_GLUE.silu_mul(a, b)) < TOL[torch.float16]
    o, gate = rnd(1, 2, rows, 64, dtype=torch.float16, seed=12), rnd(1, rows, 2 * 64, dtype=torch.float16, seed=13)
    ln = nn.LayerNorm(2 * 64).to(DEV, torch.float16)
    got = GLUE.post_gate(o, gate, ln, 1e-6, torch.float16)
    assert rel_err(got, TORCH_GLUE.post_gate(o, gate, ln, 1e-6, torch.float16)) < TOL[torch.float16]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("bias", [False, True])
def test_projections_as_one_gemm(dtype, bias):
    """The stacked GEMM gives each projection's result; the stack follows in-place weight updates."""
    torch.manual_seed(4)
    projs = tuple(nn.Linear(96, n, bias=bias and i != 1).to(DEV, dtype) for i, n in enumerate((96, 64, 96)))
    x = rnd(2, 5, 96, dtype=dtype, seed=11)
    glue = TritonGlue()
    for _ in range(2):  # the second call uses the kept stack
        got = glue.projections(x, projs)
        for g, p in zip(got, projs, strict=True):
            assert g.shape == (2, 5, p.out_features) and rel_err(g, p(x)) < TOL[dtype]
    assert len(glue._stacks) == 1
    with torch.no_grad():
        projs[1].weight.mul_(-2.0)  # an in-place change (a loaded checkpoint, say): the stack is remade
    assert rel_err(glue.projections(x, projs)[1], projs[1](x)) < TOL[dtype]
    assert glue.projections(x, projs[:1])[0].shape == (2, 5, 96)


def test_bad_inputs_get_clear_errors():
    x = rnd(1, 4, 64, dtype=torch.float64)
    with pytest.raises(TypeError, match="fp64 runs through the reference"):
        GLUE.rms_norm(x, torch.ones(64, device=DEV), 1e-6)
    x = rnd(1, 4, 64)
    with pytest.raises(ValueError, match="weight must be"):
        GLUE.rms_norm(x, torch.ones(32, device=DEV), 1e-6)
    with pytest.raises(ValueError, match="history must be"):  # the old layout, [B, C, k-1], is refused
        GLUE.causal_conv(x, conv(64, 0, torch.float32), torch.zeros(1, 64, 3, device=DEV))
    with pytest.raises(ValueError, match="do not split"):
        GLUE.qk_conv_rope(x, conv(64, 0, torch.float32), conv(64, 1, torch.float32), torch.zeros(1, 3, 64, device=DEV),
                          torch.zeros(1, dtype=torch.int64, device=DEV), 3, 1e4, 16)  # fmt: skip
    with pytest.raises(ValueError, match="a and b must match"):
        GLUE.silu_mul(x, x[:, :2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_with_residual_in_the_gemm(dtype):
    torch.manual_seed(3)
    proj = nn.Linear(96, 64, bias=False).to(DEV, dtype)
    x, res = rnd(2, 5, 96, dtype=dtype, seed=10), rnd(2, 5, 64, dtype=dtype, seed=11)
    got = GLUE.linear(x, proj, res)
    assert got.shape == res.shape and got.dtype == dtype
    assert rel_err(got, TORCH_GLUE.linear(x, proj, res)) < TOL[dtype]
    assert torch.equal(GLUE.linear(x, proj), proj(x))
