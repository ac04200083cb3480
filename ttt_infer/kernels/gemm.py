"""The decode GEMM: y [M, N] = x [M, K] @ w [N, K]^T (+ residual [M, N]) for few rows (M = B*T <= 64).

At decode a projection reads its whole weight for a handful of rows, so its time is the weight's bytes over
the bandwidth the kernel reaches. cuBLAS's kernels for these shapes reach 27-77% of the H200's copy rate
inside a CUDA graph (results/h200/decode_layer.jsonl, session 6), the small weights (o_proj, 8 MB) worst.
`skinny_linear` is a Triton kernel for them: program (n, s) streams the [BN, K / SPLIT] slab of w at columns
n * BN through a pipelined loop (STAGES tiles in flight) once for all M rows (x padded to BM >= 16 rows for
tl.dot), fp32 accumulation, the residual added in fp32, one rounding (what cuBLAS's addmm with beta = 1
computes). SPLIT > 1 (more programs for a narrow N): each split writes its fp32 partial sum to a workspace,
the last split of a column block to arrive (an atomic ticket per block) sums the partials in split order
(deterministic: the same bits every run) and finishes; it resets the ticket, so the counters need no memset
between calls.

Which kernel runs: `choose(x2, w, residual)` looks the shape up in a table measured on the GPU model
(`gemm_tables/<gpu>.json`, written by `scripts/bench_decode_layer.py --write-table`): a shape the table has,
where a Triton configuration beat cuBLAS in that measurement, runs that configuration; anything else
(another GPU, another shape, > 64 rows, a bias) runs cuBLAS. TTT_INFER_GEMM overrides: "cublas" (never
Triton), "BN:BK:WARPS:STAGES:SPLIT" (that configuration for every eligible call), or a table file's path.

The kernel can also take SwiGLU's gate and up and compute silu(a) * b as it loads x (`glu_b`), and compute
the lr gate in the last column block's epilogue (`lr_gate`); `folds()` says which of these the glue uses.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import torch

from .decode.common import _ACT_DTYPES as _DTYPES
from .decode.common import _interpreting, tl, triton
from .pdl import launch_kwargs, pdl_enter

MAX_ROWS = 64
TABLES = Path(__file__).with_name("gemm_tables")
# (BN, BK, num_warps, num_stages, SPLIT): what the table measurement tries for each shape
CANDIDATES = [
    (64, 128, 4, 4, 1),
    (64, 128, 4, 4, 2),
    (64, 128, 4, 4, 4),
    (64, 128, 4, 4, 8),
    (64, 256, 4, 3, 1),
    (64, 256, 4, 3, 2),
    (64, 256, 4, 3, 4),
    (64, 64, 4, 6, 2),
    (64, 64, 4, 6, 4),
    (128, 128, 4, 3, 1),
    (128, 128, 4, 3, 2),
    (128, 128, 8, 4, 4),
    (128, 64, 4, 5, 4),
    (128, 64, 4, 5, 8),
]
# Tried for 64 rows and removed (run 39, session 12): smaller K tiles, more stages, 8 splits (64:64:4:4:8,
# 64:32:4:6:8, 128:32:8:6:8) took 1.4-2.7x cuBLAS's time at every 1b decode shape.

if triton is not None:

    @triton.jit
    def _skinny_kernel(X, XB, W, R, Y, P, CNT, LRB, LRO, M, N, K, NY, sxm, sxb, swn, srm, lr_scale,
                       K_SPLIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT: tl.constexpr,
                       HAS_RES: tl.constexpr, IEEE: tl.constexpr, EVEN_K: tl.constexpr, GLU: tl.constexpr,
                       HAS_LR: tl.constexpr, PDL: tl.constexpr = False):  # fmt: skip
        pdl_enter(PDL)  # after the previous kernel, before any memory access (kernels/pdl.py)
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        n = pid_n * BN + tl.arange(0, BN)
        nm = n < N
        m = tl.arange(0, BM)
        mm = m < M
        # y^T [BN, BM] = w [BN, BK] @ x^T [BK, BM]: w is the MMA's A operand, so BN >= 64 gets Hopper's
        # pipelined (shared-memory, async-copy) wgmma path; with x as A (M = BM = 16) Triton 3.6 loads both
        # tiles straight into registers, one tile in flight
        acc = tl.zeros([BN, BM], tl.float32)
        k_lo = pid_k * K_SPLIT  # K_SPLIT: whole BK tiles; tiles past K (last split) are masked off
        w_rows = W + n[:, None].to(tl.int64) * swn
        x_cols = X + m[None, :].to(tl.int64) * sxm
        xb_cols = XB + m[None, :].to(tl.int64) * sxb
        for k0 in range(0, K_SPLIT, BK):
            k = k_lo + k0 + tl.arange(0, BK)
            if EVEN_K:  # a whole tile in or out: a mask constant along k keeps 16-byte async copies
                km = (k_lo + k0 + tl.zeros([BK], tl.int32)) < K
            else:
                km = k < K
            w = tl.load(w_rows + k[None, :], mask=nm[:, None] & km[None, :], other=0.0)
            xt = tl.load(x_cols + k[:, None], mask=km[:, None] & mm[None, :], other=0.0)  # [BK, BM]
            if GLU:  # x = silu(a) * b with _silu_mul_kernel's roundings (a = X, b = XB)
                a = xt.to(tl.float32)
                sa = (a * tl.sigmoid(a)).to(W.dtype.element_ty).to(tl.float32)
                bt = tl.load(xb_cols + k[:, None], mask=km[:, None] & mm[None, :], other=0.0).to(tl.float32)
                xt = (sa * bt).to(W.dtype.element_ty)
            if IEEE:
                acc += tl.dot(w, xt, input_precision="ieee")
            else:  # 16-bit x and w: exact products, fp32 accumulation on the tensor cores
                acc += tl.dot(w, xt)
        mask = nm[:, None] & mm[None, :]
        last = True
        if SPLIT > 1:
            part = n[:, None] + m[None, :] * N  # [BN, BM]
            tl.store(P + pid_k * M * N + part, acc, mask=mask)
            tl.debug_barrier()  # every thread's partial is written before the ticket is taken (release)
            ticket = tl.atomic_add(CNT + pid_n, 1, sem="acq_rel")
            last = ticket == SPLIT - 1
            if last:  # the other splits' partials are visible (acquire); read them past L1
                acc = tl.zeros([BN, BM], tl.float32)
                for s in tl.static_range(SPLIT):
                    acc += tl.load(P + s * M * N + part, mask=mask, other=0.0, cache_modifier=".cg")
                tl.atomic_xchg(CNT + pid_n, 0)  # ready for the next call
        if last:
            if HAS_RES:
                acc += tl.load(R + m[None, :].to(tl.int64) * srm + n[:, None], mask=mask, other=0.0).to(tl.float32)
            out = n[:, None] + m[None, :] * NY  # y has NY columns: the ones before the lr gate's
            if HAS_LR:  # columns NY.. are the lr gate's heads (whole blocks): scale * sigmoid(x . w_h + c_h), fp32
                if pid_n * BN >= NY:
                    h = n - NY
                    logit = acc + tl.load(LRB + h, mask=nm, other=0.0).to(tl.float32)[:, None]
                    tl.store(LRO + h[:, None] + m[None, :] * (N - NY), lr_scale * tl.sigmoid(logit), mask=mask)
                else:
                    tl.store(Y + out, acc.to(Y.dtype.element_ty), mask=mask)
            else:
                tl.store(Y + out, acc.to(Y.dtype.element_ty), mask=mask)


def _fail(msg: str, exc=ValueError):
    raise exc(f"skinny_linear: {msg}")


def parse_config(text: str) -> tuple[int, int, int, int, int]:
    """Parse "BN:BK:WARPS:STAGES:SPLIT" into a configuration (checked: powers of two, BN and BK >= 16)."""
    try:
        cfg = tuple(int(v) for v in text.split(":"))
    except ValueError:
        cfg = ()
    if len(cfg) != 5 or any(v < 1 for v in cfg) or any(v & (v - 1) for v in cfg[:3]) or min(cfg[:2]) < 16:
        _fail(f"a configuration is BN:BK:WARPS:STAGES:SPLIT (BN, BK powers of two >= 16, WARPS a power of two), "
              f"got {text!r}")  # fmt: skip
    return cfg


_COUNTERS: dict = {}


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 tickets, one per column block, kept per (device, stream): the kernel resets what it uses,
    so GEMMs on one stream (sequential) share them; another stream gets its own."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


def skinny_linear(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None,
                  config: tuple[int, int, int, int, int] = CANDIDATES[0], glu_b: torch.Tensor | None = None,
                  lr_gate: tuple[torch.Tensor, float] | None = None):  # fmt: skip
    """x [M, K] @ w [N, K]^T (+ residual [M, N]) in x's dtype, M <= MAX_ROWS, through the Triton kernel with
    `config` (BN, BK, WARPS, STAGES, SPLIT). x, glu_b and residual may be row views (unit column stride).

    glu_b [M, K]: the GEMM's input is silu(x) * glu_b (SwiGLU's, rounded as `TritonGlue.silu_mul`), never stored.
    lr_gate (bias [nh], scale): w's last nh rows are the lr gate's weights; returns (y [M, N - nh],
    lr [M, nh] fp32 = scale * sigmoid(x . w_h + bias_h), accumulated in fp32 as `TritonGlue.lr_gate`)."""
    if triton is None:
        _fail("Triton is not installed", RuntimeError)
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        _fail(f"needs x [M, K] and w [N, K], got {tuple(x.shape)} and {tuple(w.shape)}")
    M, K = x.shape
    N = w.shape[0]
    if not (0 < M <= MAX_ROWS) or K == 0 or N == 0:
        _fail(f"needs 1 <= M <= {MAX_ROWS} rows and K, N > 0, got x {tuple(x.shape)}, w {tuple(w.shape)}")
    if x.dtype != w.dtype or x.dtype not in _DTYPES:
        _fail(f"x and w must share a dtype in {_DTYPES}, got {x.dtype} and {w.dtype}", TypeError)
    if w.device != x.device or not (x.is_cuda or _interpreting()):
        _fail(f"x and w must be on one CUDA device (or the CPU under TRITON_INTERPRET=1), got {x.device}, {w.device}")
    if x.stride(1) != 1 or w.stride(1) != 1:
        _fail("x and w need unit column stride (a row view or a contiguous tensor)")
    if glu_b is not None and (glu_b.shape != x.shape or glu_b.dtype != x.dtype or glu_b.device != x.device
                              or glu_b.stride(1) != 1):  # fmt: skip
        _fail(f"glu_b must match x {tuple(x.shape)} {x.dtype} with unit column stride, got {tuple(glu_b.shape)} "
              f"{glu_b.dtype}")  # fmt: skip
    bn, bk, warps, stages, split = config
    ny = N
    if lr_gate is not None:
        lr_bias, lr_scale = lr_gate
        nh = lr_bias.numel()
        ny = N - nh
        if not (0 < nh < N) or ny % bn or lr_bias.device != x.device or residual is not None:
            _fail(f"the lr gate's {nh} heads must be w's last rows after whole BN = {bn} blocks of the others "
                  f"(N = {N}), with no residual")  # fmt: skip
    if residual is not None and (residual.shape != (M, N) or residual.dtype != x.dtype
                                 or residual.device != x.device or residual.stride(1) != 1):  # fmt: skip
        _fail(f"residual must be [{M}, {N}] {x.dtype} on {x.device} with unit column stride, got "
              f"{tuple(residual.shape)} {residual.dtype} on {residual.device}")  # fmt: skip
    k_split = triton.cdiv(triton.cdiv(K, bk), split) * bk
    split = triton.cdiv(K, k_split)  # no empty split
    blocks = triton.cdiv(N, bn)
    y = torch.empty(M, ny, device=x.device, dtype=x.dtype)
    lr = torch.empty(M, N - ny, device=x.device, dtype=torch.float32) if lr_gate is not None else y
    part = torch.empty(split, M, N, device=x.device, dtype=torch.float32) if split > 1 else y
    cnt = _counters(x.device, blocks) if split > 1 else y
    r = residual if residual is not None else y
    xb = glu_b if glu_b is not None else x
    lrb = lr_gate[0].reshape(-1) if lr_gate is not None else y
    _skinny_kernel[(blocks, split)](
        x, xb, w, r, y, part, cnt, lrb, lr, M, N, K, ny, x.stride(0), xb.stride(0), w.stride(0), r.stride(0),
        float(lr_gate[1]) if lr_gate is not None else 0.0,
        K_SPLIT=k_split, BM=max(16, triton.next_power_of_2(M)), BN=bn, BK=bk, SPLIT=split, HAS_RES=residual is not None,
        IEEE=x.dtype == torch.float32, EVEN_K=K % bk == 0, GLU=glu_b is not None, HAS_LR=lr_gate is not None,
        num_warps=warps, num_stages=stages, **launch_kwargs(x.device),
    )  # fmt: skip
    return (y, lr) if lr_gate is not None else y


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@functools.cache
def _table(source: str) -> dict:
    """{(BM, N, K, residual, dtype name): config} from a table file (missing file: empty)."""
    path = Path(source)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {table_key(e): tuple(e["config"]) for e in data["entries"] if e.get("config")}


def table_key(entry: dict) -> tuple:
    """A table entry's shape: (BM, N, K, residual, dtype name)."""
    return entry["bm"], entry["N"], entry["K"], entry["residual"], entry["dtype"]


def table_path(device: torch.device) -> Path:
    return _table_path(torch.device(device).index or 0)


@functools.cache
def _table_path(index: int) -> Path:  # the GPU's name is asked once, not on every decode GEMM
    return TABLES / f"{_slug(torch.cuda.get_device_name(index))}.json"


def choose(x2: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None):
    """The configuration to run y = x2 @ w^T (+ residual) with, or None for cuBLAS."""
    M = x2.shape[0]
    if not (
        0 < M <= MAX_ROWS
        and triton is not None
        and x2.dtype == w.dtype
        and x2.dtype in _DTYPES
        and w.device == x2.device
        and (x2.is_cuda or _interpreting())
        and x2.stride(1) == 1
        and w.stride(1) == 1
        and (residual is None or (residual.dtype == x2.dtype and residual.stride(1) == 1))
    ):
        return None
    how = os.environ.get("TTT_INFER_GEMM", "table")
    if how == "cublas":
        return None
    if ":" in how:
        return parse_config(how)
    if how == "table" and not x2.is_cuda:  # the interpreter: no GPU model, no table
        return None
    source = how if how != "table" else str(table_path(x2.device))
    bm = max(16, triton.next_power_of_2(M))
    name = str(x2.dtype).removeprefix("torch.")
    return _table(source).get((bm, w.shape[0], w.shape[1], residual is not None, name))


# What the glue folds into the decode GEMM (TTT_INFER_GEMM_FOLDS, comma-separated; "" for neither): "lr" (the
# lr gate into the q/v/g GEMM's last column block; the default) and "silu" (SwiGLU's silu * mul into down's
# input loads, at <= FOLD_SILU_MAX_ROWS rows; opt-in). Same-run A/B on the H200 (session 6, TTT-Linear bf16, ms
# a step at B=1 / 16 / 64, results/h200/history/decode_folds_*.jsonl): none 1.50 / 1.65 / 2.09, lr 1.39-1.41 /
# 1.53-1.55 / 2.09, silu + lr 1.46 / 1.59-1.60 / 2.09: the silu fold costs more in down than the kernel it
# saves (at 64 rows, before the row limit, it made B=64 29% slower).
FOLD_SILU_MAX_ROWS = 16


def folds() -> set[str]:
    return {f.strip() for f in os.environ.get("TTT_INFER_GEMM_FOLDS", "lr").split(",") if f.strip()}


def linear(x2: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """x2 [M, K] @ w [N, K]^T (+ residual [M, N], one rounding): the Triton kernel where `choose` says so,
    cuBLAS (F.linear / torch.addmm) otherwise."""
    cfg = choose(x2, w, residual)
    if cfg is not None:
        return skinny_linear(x2, w, residual, cfg)
    if residual is None:
        return torch.nn.functional.linear(x2, w)
    return torch.addmm(residual, x2, w.t())
