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


# the kernels that may load before their wait (EARLY, pdl.early_loads), and the only pointers they may load
# from there: what no kernel ahead of them writes
EARLY_LOADS = {
    "ttt_infer.kernels.glue._decode_preblock_kernel": {"W1", "W2", "CB", "CW", "HIST"},
    "ttt_infer.kernels.glue._rms_norm_kernel": {"W"},
    "ttt_infer.kernels.glue._post_gate_kernel": {"LNW", "LNB"},
}


def _early_prefix(name, body):
    """An EARLY kernel starts with `if not EARLY: pdl_enter(PDL)` and waits once in a top-level `if EARLY:`
    block; returns the statements that run before that wait under EARLY, checking both."""
    assert ast.unparse(body[0]) == "if not EARLY:\n    pdl_enter(PDL)", f"{name}: {ast.unparse(body[0])!r}"
    waits = [
        (i, j) for i, st in enumerate(body) if isinstance(st, ast.If) and ast.unparse(st.test) == "EARLY"
        for j, inner in enumerate(st.body) if ast.unparse(inner) == "pdl_enter(PDL)"
    ]  # fmt: skip
    assert len(waits) == 1, f"{name} must wait once under EARLY"
    i, j = waits[0]
    return body[1:i] + body[i].body[:j]


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
        if name in EARLY_LOADS:  # before its wait, loads only from its allowed pointers
            params = inspect.signature(fn).parameters
            assert params["EARLY"].default is False, name
            pointers = {p for p, v in params.items() if "constexpr" not in str(v.annotation) and p.isupper()}
            pointers -= {"N", "C", "T", "NH", "SG"}  # the scalars among them
            for st in _early_prefix(name, body):
                for call in (n for n in ast.walk(st) if isinstance(n, ast.Call)):
                    if ast.unparse(call.func) in ("tl.load", "tl.store", "tl.atomic_add"):
                        assert ast.unparse(call.func) == "tl.load", f"{name} writes before its wait"
                        ptrs = {n.id for n in ast.walk(call.args[0]) if isinstance(n, ast.Name)} & pointers
                        assert ptrs <= EARLY_LOADS[name], f"{name} loads {ptrs} before its wait"
            continue
        assert "EARLY" not in inspect.signature(fn).parameters, f"{name}: add it to EARLY_LOADS"
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


def _compiled(script: str) -> dict:
    """The JSON a compile script prints, run in a fresh interpreter without TRITON_INTERPRET (compile, not
    interpret); skips where Triton's ptxas is missing."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    if run.returncode and "ptxas" in run.stderr.lower() and "not found" in run.stderr.lower():
        pytest.skip(f"Triton's ptxas is missing here: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_compiled_for_sm90_waits_before_its_first_load():
    """Compiled for sm_90 (no GPU needed): with PDL the PTX waits on the grid ahead before its first global
    load and lets the next grid launch; without it, neither instruction, and no launch attribute."""
    res = _compiled(_COMPILE)
    off, on = res["False"], res["True"]
    assert "griddepcontrol" not in off["ptx"] and not off["launch_pdl"]
    assert on["launch_pdl"]
    wait, trigger, load = (on["ptx"].find(s) for s in ("griddepcontrol.wait", "griddepcontrol.launch_dependents",
                                                        "ld.global"))  # fmt: skip
    assert 0 <= wait < trigger < load, (wait, trigger, load)


_COMPILE_EARLY = """
import json, triton
from triton.backends.compiler import GPUTarget
from ttt_infer.kernels.glue import _rms_norm_kernel
sig = {"X": "*bf16", "W": "*bf16", "Y": "*bf16", "N": "i32", "eps": "fp32", "BLOCK": "constexpr",
       "PDL": "constexpr", "EARLY": "constexpr"}
out = {}
for early in (False, True):
    src = triton.compiler.ASTSource(fn=_rms_norm_kernel, signature=sig,
                                    constexprs={"BLOCK": 2048, "PDL": True, "EARLY": early})
    out[str(early)] = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                     options={"num_warps": 8, "launch_pdl": True}).asm["ptx"]
print(json.dumps(out))
"""


def test_early_loads_compiled_for_sm90():
    """With EARLY (pdl.early_loads) the RMSNorm kernel's weight load comes before its wait on the grid ahead and
    x's after it; without, every load after the wait."""
    for early, text in _compiled(_COMPILE_EARLY).items():
        wait, first, last = text.find("griddepcontrol.wait"), text.find("ld.global"), text.rfind("ld.global")
        assert 0 <= first <= last and wait >= 0, early
        assert (first < wait < last) if early == "True" else (wait < first), (early, wait, first, last)


def test_early_loads_switch(monkeypatch):
    monkeypatch.delenv("TTT_INFER_EARLY_LOADS", raising=False)
    assert pdl.early_loads()  # on by default
    for setting, want in (("0", False), ("1", True)):
        monkeypatch.setenv("TTT_INFER_EARLY_LOADS", setting)  # the A/B switch, read on every launch
        assert pdl.early_loads() is want, setting
