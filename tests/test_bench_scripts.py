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
    # four GEMMs in two weight layouts, the four in a row, six glue kernels, each run once
    assert len(rows) == 15 and {"q/v/g nk", "q/v/g kn", "o_proj+res kn", "4 GEMMs in a row"} <= parts
    assert {"pre_block (norm, conv + res, norm)", "lr_gate", "post_gate"} <= parts
    assert all(r["us"] is None for r in rows)  # no timing without a GPU, and it says so
    assert "smoke run" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run; on a GPU the script times for real")
def test_bench_decode_layer_skinny_candidates_run(tmp_path):
    pytest.importorskip("triton")
    from ttt_infer.kernels.gemm import CANDIDATES

    out = tmp_path / "parts.jsonl"
    args = ["--batch", "2", "--hidden", "64", "--heads", "2", "--intermediate", "128", "--dtype", "fp32",
            "--l2-mb", "0.01", "--out", str(out), "--skinny"]  # fmt: skip
    assert _load("bench_decode_layer").main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 * (2 + len(CANDIDATES)) + 1 + 6
    assert "o_proj+res triton " + ":".join(map(str, CANDIDATES[0])) in {r["part"] for r in rows}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run; on a GPU the script launches for real")
@pytest.mark.parametrize("kind, config, position", [("linear", "linear=v3:2:0", 15), ("mlp", "mlp=v1:8:0", 8)])
def test_profile_decode_step_runs_a_forced_configuration(kind, config, position, capsys, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TTT_DECODE_CONFIG", "")  # the script sets it for its process: restored after the test
    args = ["--kind", kind, "--batch", "2", "--heads", "1", "--config", config, "--position", str(position),
            "--warmup", "1"]  # fmt: skip
    assert _load("profile_decode_step").main(args) == 0
    assert f"smoke run (no GPU): {config} at B=2, finite: True" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _load("profile_decode_step").main(["--kind", kind, "--config", "other=v1:4:1"])


def test_decode_gemm_table_keeps_cublas_where_it_wins(tmp_path):
    """write_table: per shape the fastest Triton configuration if it beat cuBLAS, else null; merged by BM."""
    mod = _load("bench_decode_layer")
    rows = [
        dict(kind="gemm", gemm="o", layout="nk", N=64, K=32, residual=True, us=5.0),
        dict(kind="gemm", gemm="o", layout="kn", N=64, K=32, residual=True, us=1.0),  # not a candidate
        dict(kind="gemm", gemm="o", layout="triton 64:32:4:3:2", N=64, K=32, residual=True, us=3.0),
        dict(kind="gemm", gemm="o", layout="triton 64:32:4:3:1", N=64, K=32, residual=True, us=float("inf")),
        dict(kind="gemm", gemm="q", layout="nk", N=96, K=32, residual=False, us=2.0),
        dict(kind="gemm", gemm="q", layout="triton 64:32:4:3:2", N=96, K=32, residual=False, us=2.5),
        dict(kind="glue", part="rms_norm", us=1.0),
    ]
    path = tmp_path / "t.json"
    mod.write_table(str(path), rows, 16, "bfloat16", "GPU X", {"git_sha": "abc"})
    mod.write_table(str(path), rows[:4], 64, "bfloat16", "GPU X", {"git_sha": "abc"})
    t = json.loads(path.read_text())
    got = {(e["bm"], e["N"]): e["config"] for e in t["entries"]}
    assert got == {(16, 64): [64, 32, 4, 3, 2], (16, 96): None, (64, 64): [64, 32, 4, 3, 2]}
    assert t["gpu"] == "GPU X"


def test_bench_decode_report_keeps_fp16_points_apart(tmp_path):
    """bench_decode.py --dtype fp16 points are reported beside the bf16 ones (marked), not in their place; rows
    written before the option (no dtype) count as bf16."""
    mod = _load("bench_decode")
    env = {"git_sha": "abcdef1234", "gpu": "G", "driver": "d", "torch": "t", "triton": "tr"}
    common = dict(bench="model", kind="linear", B=16, backend="kernels", mode="cuda_graph v1:4:1", tokens_s=1.0,
                  limit_tokens_s=2.0, frac_limit=0.5, env=env, copy_tb_s=4.2)  # fmt: skip
    rows = [dict(common, ms=1.6), dict(common, ms=1.8, dtype="fp16"), dict(common, ms=1.5, dtype="bf16")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [ln for ln in mod.report(path).splitlines() if ln.startswith("| linear")]
    assert len(lines) == 2
    assert "| linear | 16 | kernels | cuda_graph v1:4:1 | 1.500 |" in lines[0]  # the latest bf16 point
    assert "| linear (fp16) | 16 | kernels | cuda_graph v1:4:1 | 1.800 |" in lines[1]


def _sass_csv(lines: list[tuple[str, dict[str, int]]]) -> str:
    """A minimal `ncu --page source --csv --print-source sass` export: kernel line, header, one row a line."""
    reasons = ["stall_barrier", "stall_long_sb", "stall_short_sb"]
    head = ["Address", "Source", "Warp Stall Sampling (All Samples)", *reasons, *(f"{r} (Not Issued)" for r in reasons)]
    rows = ['"Kernel Name","k"', ",".join(f'"{h}"' for h in head)]
    for i, (sass, counts) in enumerate(lines):
        vals = [str(counts.get(r, 0)) for r in reasons]
        rows.append(",".join(f'"{x}"' for x in [hex(16 * i), sass, str(sum(counts.values())), *vals, *vals]))
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("gz", [False, True])
def test_ncu_stalls_shares_and_top_lines(tmp_path, gz, capsys):
    import gzip

    text = _sass_csv([("LDS.128 R4, [R5]", {"stall_barrier": 30, "stall_short_sb": 10}),
                      ("STL [R1+0xc], R15", {"stall_long_sb": 50}),
                      ("FFMA R1, R2, R3, R4", {"stall_short_sb": 10})])  # fmt: skip
    path = tmp_path / ("x_sass.csv.gz" if gz else "x_sass.csv")
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    mod = _load("ncu_stalls")
    s = mod.summarize(path, top=2)
    assert s["samples"] == 100
    assert s["reasons"] == {"stall_long_sb": 0.5, "stall_barrier": 0.3, "stall_short_sb": 0.2}
    assert [(x["index"], x["share"], x["reason"]) for x in s["lines"]] == [(1, 0.5, "stall_long_sb"),
                                                                        (0, 0.4, "stall_barrier")]  # fmt: skip
    assert mod.main([str(path), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "STL [R1+0xc], R15" in out and "LDS.128" not in out


def test_ncu_stalls_phases_split_at_block_barriers(tmp_path, capsys):
    text = _sass_csv([("LDG.E R0, desc[UR8][R2.64]", {"stall_long_sb": 20}),
                      ("BAR.SYNC.DEFER_BLOCKING 0x0", {"stall_barrier": 5}),
                      ("LDS R4, [R5]", {"stall_barrier": 25, "stall_short_sb": 10}),
                      ("FFMA R1, R2, R3, R4", {"stall_short_sb": 20}),
                      ("BAR.SYNC.DEFER_BLOCKING 0x0", {}),
                      ("EXIT", {"stall_short_sb": 20})])  # fmt: skip
    path = tmp_path / "p_sass.csv"
    path.write_text(text)
    mod = _load("ncu_stalls")
    ps = mod.phases(path)
    assert [(p["first"], p["last"]) for p in ps] == [(0, 1), (2, 4), (5, 5)]
    assert [p["share"] for p in ps] == [0.25, 0.55, 0.2]
    assert [p["barrier_share"] for p in ps] == [0.05, 0.25, 0.0]
    assert mod.main([str(path), "--phases"]) == 0
    out = capsys.readouterr().out
    assert "[    2-    4]  0.550  barrier  0.250" in out


def test_ncu_stalls_rejects_other_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text('"a","b"\n"1","2"\n')
    with pytest.raises(ValueError, match="not an ncu"):
        _load("ncu_stalls").summarize(path)


def _trace_rows(ctas):
    """Trace rows (scripts/trace_decode_step.py's FIELDS) for CTAs given as (sm, start us, life us, update):
    the marks evenly spaced over the life, times in ns from an arbitrary clock origin."""
    rows = []
    for sm, start, life, update in ctas:
        marks = 10 if update else 8  # entry .. out, and the update's two marks (W2 written, W1 written)
        times = [int(1e6 + 1e3 * (start + life * i / marks)) for i in range(marks + 1)]
        rows.append([sm, *times, *([] if update else [0, 0])])
    return rows


def test_trace_summary_of_a_two_wave_launch():
    mod = _load("trace_decode_step")
    # 4 SMs, 2 CTAs each for 10 us, then 2 more CTAs on SMs 0 and 1 for 10 us: a full wave, then a tail
    ctas = [(sm, 0.0, 10.0, False) for sm in range(4) for _ in range(2)] + [
        (0, 10.0, 10.0, False),
        (1, 10.0, 10.0, False),
    ]
    s = mod.summarize(_trace_rows(ctas))
    assert s["ctas"] == 10 and s["sms"] == 4 and s["peak_alive"] == 8
    assert s["span_us"] == pytest.approx(20.0) and s["mean_alive"] == pytest.approx(5.0)
    assert s["ramp_us"] == pytest.approx(0.0) and s["tail_us"] == pytest.approx(10.0)
    assert s["tail_ctas"] == 2 and s["tail_life_p50_us"] == pytest.approx(10.0)
    assert s["ctas_per_sm"] == {"min": 2, "max": 3} and s["sm_finish_spread_us"] == pytest.approx(10.0)
    assert s["life_us"]["p50"] == pytest.approx(10.0)
    # eight phases between nine marks (no update): each 10 / 8 us
    assert len(s["phases"]) == 8 and "out->w2out" not in s["phases"] and "w2out->update" not in s["phases"]
    assert s["phases"]["z1->z2k"]["mean_us"] == pytest.approx(1.25)
    assert len(s["tail_phases"]) == 8 and s["tail_phases"]["z1->z2k"]["mean_us"] == pytest.approx(1.25)
    assert "tail below it 10.0 us (2 CTAs alive in it" in mod.report(s, "test")


def test_trace_summary_with_the_update_and_bad_traces():
    mod = _load("trace_decode_step")
    s = mod.summarize(_trace_rows([(0, 0.0, 10.0, True), (1, 1.0, 10.0, True)]))
    assert s["phases"]["out->w2out"]["mean_us"] == pytest.approx(1.0) and s["span_us"] == pytest.approx(11.0)
    assert s["phases"]["w2out->update"]["mean_us"] == pytest.approx(1.0) and len(s["phases"]) == 10
    assert s["life_us"]["max"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="no entry or out mark"):
        mod.summarize([[0] * len(mod.FIELDS)])
    with pytest.raises(ValueError, match="empty"):
        mod.summarize([])
