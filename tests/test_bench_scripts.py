"""Smoke runs of the device benchmark scripts on the CPU (tiny shapes, the Triton interpreter): they must run
end to end here so that a device call is not the first time they do. Timing itself needs a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run; on a GPU the script times for real")
def test_bench_decode_layer_runs_every_part(tmp_path, capsys):
    pytest.importorskip("triton")
    out = tmp_path / "parts.jsonl"
    args = ["--batch", "2", "--hidden", "64", "--heads", "2", "--intermediate", "96", "--dtype", "fp16",
            "--l2-mb", "0.01", "--out", str(out)]  # fmt: skip
    assert _load("bench_decode_layer").main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    parts = {r["part"] for r in rows}
    # four GEMMs in two weight layouts, six glue kernels, each run once
    assert len(rows) == 14 and {"q/v/g nk", "q/v/g kn", "o_proj+res kn"} <= parts
    assert {"pre_block (norm, conv + res, norm)", "lr_gate", "post_gate"} <= parts
    assert all(r["us"] is None for r in rows)  # no timing without a GPU, and it says so
    assert "smoke run" in capsys.readouterr().out
