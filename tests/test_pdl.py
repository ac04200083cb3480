"""Programmatic dependent launch (ttt_infer/kernels/pdl.py): when it is on, and that every kernel launched
with it waits for the kernel ahead before touching memory. The GPU side (PDL on vs off: identical logits
through a captured decode graph) is in tests/gpu/test_decode_gpu.py."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

from ttt_infer.kernels import gemm, glue, pdl  # noqa: E402
from ttt_infer.kernels.decode import linear, mlp  # noqa: E402


def test_off_where_it_does_not_exist(monkeypatch):
    assert pdl.launch_kwargs(torch.device("cpu")) == {}
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter has no grids to overlap
    assert pdl.launch_kwargs(torch.device("cuda", 0)) == {}
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("TTT_INFER_PDL", "0")  # the A/B switch, read on every launch
    assert not pdl.enabled(torch.device("cuda", 0))


def _kernels_with_pdl():
    for mod in (glue, gemm, linear, mlp):
        for name, obj in vars(mod).items():
            fn = getattr(obj, "fn", None)  # a JITFunction / InterpretedFunction wraps the Python function
            if callable(fn) and obj is not pdl.pdl_enter and "PDL" in inspect.signature(fn).parameters:
                yield f"{mod.__name__}.{name}", fn


def test_every_pdl_kernel_waits_first():
    found = dict(_kernels_with_pdl())
    # the decode path's kernels: the glue, the decode GEMM, the TTT step variants
    assert {"ttt_infer.kernels.glue._post_gate_kernel", "ttt_infer.kernels.gemm._skinny_kernel",
            "ttt_infer.kernels.decode.linear._ttt_linear_decode_v3",
            "ttt_infer.kernels.decode.mlp._ttt_mlp_decode_v3"} <= set(found)  # fmt: skip
    assert len(found) >= 15
    for name, fn in found.items():
        assert inspect.signature(fn).parameters["PDL"].default is False, name  # off unless launched with it
        body = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0].body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):  # the docstring
            body = body[1:]
        first = body[0]
        assert (
            isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
            and ast.unparse(first.value) == "pdl_enter(PDL)"
        ), f"{name} must call pdl_enter(PDL) before anything else, starts with {ast.unparse(first)!r}"  # fmt: skip


_COMPILE = """
import json, triton
from triton.backends.compiler import GPUTarget
from ttt_infer.kernels.glue import _silu_mul_kernel
sig = {"A": "*fp16", "B": "*fp16", "Y": "*fp16", "N": "i32", "SA": "i64", "SB": "i64", "BLOCK": "constexpr",
       "PDL": "constexpr"}
out = {}
for on in (False, True):
    src = triton.compiler.ASTSource(fn=_silu_mul_kernel, signature=sig, constexprs={"BLOCK": 1024, "PDL": on})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "launch_pdl": on})
    out[str(on)] = {"ptx": k.asm["ptx"], "launch_pdl": bool(k.metadata.launch_pdl)}
print(json.dumps(out))
"""


def test_compiled_for_sm90_waits_before_its_first_load():
    """Compiled for sm_90 (no GPU needed): with PDL the PTX waits on the grid ahead before its first global
    load and lets the next grid launch; without it, neither instruction, and no launch attribute."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    run = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, timeout=300)
    if run.returncode and "ptxas" in run.stderr.lower() and "not found" in run.stderr.lower():
        pytest.skip(f"Triton's ptxas is missing here: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    off, on = res["False"], res["True"]
    assert "griddepcontrol" not in off["ptx"] and not off["launch_pdl"]
    assert on["launch_pdl"]
    wait, trigger, load = (on["ptx"].find(s) for s in ("griddepcontrol.wait", "griddepcontrol.launch_dependents",
                                                        "ld.global"))  # fmt: skip
    assert 0 <= wait < trigger < load, (wait, trigger, load)
