"""The benchmark's logic on the CPU: grid, limits, sweep records, resume, failures, figures, CLI."""

import json
import re

import pytest
import torch

from ttt_infer import TTTConfig
from ttt_infer.bench import figures, limits, sweep
from ttt_infer.bench.models import ModelUnavailable, TTTBench
from ttt_infer.cli import main

TINY = dict(size="125m", num_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=96)


def tiny_factory(fail: dict | None = None):
    """Tiny TTT models on the CPU; `fail` maps a model name to an exception its decode raises."""
    fail = fail or {}

    def make(name, dtype, device, backend, num_layers):
        if name == "mamba":
            raise ModelUnavailable("mamba needs CUDA")
        m = TTTBench("mlp" if name == "ttt-mlp" else "linear", torch.float32, device, "reference", **TINY)
        m.name = name
        if name in fail:

            def broken():
                raise fail[name]

            m.decode = broken
        return m

    return make


def small_spec(**kw):
    base = dict(
        models=("ttt-linear", "transformer", "mamba"),
        backends=("reference",),
        dtype="fp32",
        prefill_batches=(2,),
        prefill_lens=(17, 32),
        decode_batches=(1, 3),
        decode_gen_lens=(3,),
        pd_batches=(2,),
        pd_prompt_lens=(20,),
        pd_gen_len=2,
        extra_prefill=(),
    )
    base.update(kw)
    return sweep.SweepSpec(**base)


def test_default_grid_covers_the_issue():
    pts = sweep.grid(sweep.SweepSpec())
    pre = {(p.model, p.backend, p.batch, p.prompt_len) for p in pts if p.kind == "prefill"}
    for T in (2048, 4096, 8192, 16384, 32768):
        assert ("ttt-linear", "kernels", 16, T) in pre and ("transformer", "-", 16, T) in pre
    assert ("ttt-mlp", "kernels", 1, 32768) in pre
    dec = {p.batch for p in pts if p.kind == "decode" and p.model == "ttt-mlp"}
    assert dec == {1, 16, 64, 256, 512}
    spec = sweep.SweepSpec()
    ref_big = sweep.Point("prefill", "ttt-linear", "reference", 16, 8192)
    assert "capped" in sweep.skip_reason(ref_big, spec)
    assert sweep.skip_reason(sweep.Point("prefill", "ttt-linear", "kernels", 16, 8192), spec) is None
    full = sweep.grid(sweep.SweepSpec.full())
    assert max(p.batch for p in full if p.kind == "decode") == 4096
    # the reference backend decodes 16 tokens, everything else 128
    gens = {(p.backend, p.gen_len) for p in pts if p.kind in ("decode", "prefill_decode")}
    assert gens == {("kernels", 128), ("-", 128), ("reference", 16)}


def test_limits_reproduce_perf_md_table():
    ce = limits.Ceilings(copy_bytes_per_s=4.2e12, matmul_flops_per_s=690e12)
    want = {"linear": (1.6e3, 24e3, 78e3, 178e3, 226e3), "mlp": (1.6e3, 16e3, 28e3, 36e3, 37e3)}
    for lt, table in want.items():
        lim = limits.ttt_limits(TTTConfig.standard("1b", lt, "mamba"))
        assert abs(lim["params"] - 1.29e9) / 1.29e9 < 0.02
        for B, tps in zip((1, 16, 64, 256, 512), table, strict=True):
            got = limits.decode_limit_tokens_per_s(lim["weight_bytes"], B, lim["state_bytes_per_seq"], ce)
            assert abs(got - tps) / tps < 0.05, (lt, B, got)
    lin = limits.ttt_limits(TTTConfig.standard("1b", "linear", "mamba"))
    assert abs(limits.prefill_limit_tokens_per_s(lin["prefill_flops_per_token"], ce) - 267e3) / 267e3 < 0.02
    assert limits.ttt_state_bytes(TTTConfig.standard("1b", "linear")) == 768 * (64 * 64 + 64) * 4


def test_sweep_records_every_point_and_resumes(tmp_path):
    out = tmp_path / "r.jsonl"
    spec = small_spec()
    pts = sweep.grid(spec)
    ce = limits.Ceilings(1e11, 1e12)
    rows = sweep.run_sweep(pts, out, spec, "cpu", 1, None, ce, {"gpu": None}, False, tiny_factory())
    assert len(rows) == len(pts) == len(sweep.read_results(out))
    by = {r["key"]: r for r in rows}
    assert all(by[p.key]["status"] == "skipped" and "CUDA" in by[p.key]["reason"] for p in pts if p.model == "mamba")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len([p for p in pts if p.model != "mamba"])
    for r in ok:
        assert r["ms"] > 0 and r["tokens_per_s"] > 0 and r["implementation"] and r["params"] > 0
        assert r["ceilings"]["copy_tb_s"] == pytest.approx(0.1) and "env" in r
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["time_utc"]) for r in rows)  # when measured
    ttt_dec = next(r for r in ok if r["kind"] == "decode" and r["model"] == "ttt-linear")
    assert 0 < ttt_dec["fraction_of_limit"] == ttt_dec["decode_fraction_of_limit"]
    assert "details" not in ttt_dec  # the reference backend on the CPU chose no kernel configuration
    assert ttt_dec["tokens_per_s"] == pytest.approx(ttt_dec["batch"] * 3 / (ttt_dec["ms"] / 1e3))
    # a rerun measures nothing; a lost line (and a line cut by a crash) is measured again
    assert sweep.run_sweep(pts, out, spec, "cpu", 1, None, ce, {}, False, tiny_factory()) == []
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[1:]) + "\n" + lines[0][:40] + "\n")
    again = sweep.run_sweep(pts, out, spec, "cpu", 1, None, ce, {}, False, tiny_factory())
    assert [r["key"] for r in again] == [json.loads(lines[0])["key"]]


def test_model_details_are_recorded(tmp_path, monkeypatch):
    """A model's details(point) (the kernels' choices, e.g. the decode configuration) land in its rows."""
    from ttt_infer.kernels import decode

    spec = small_spec()
    pts = [p for p in sweep.grid(spec) if p.model == "ttt-linear" and p.kind == "decode"]
    base = tiny_factory()

    def make(*a):
        m = base(*a)
        m.model._backend.name = "kernels"  # as if it ran the kernels on a GPU
        monkeypatch.setattr(type(m.model), "device", property(lambda self: torch.device("cuda")))
        return m

    for p in pts:
        key = ("linear", p.batch * TINY["num_attention_heads"], torch.float32)
        monkeypatch.setitem(decode.TUNED, key, ("v3", 4, 1))
    monkeypatch.setattr(TTTBench, "decode", lambda self: None)
    monkeypatch.setattr(TTTBench, "prefill", lambda self, ids, max_new_tokens=0: None)
    rows = sweep.run_sweep(pts, tmp_path / "r.jsonl", spec, "cpu", 1, None, None, {}, False, make)
    assert rows and all(r["details"] == {"decode_kernel_config": "v3:4:1"} for r in rows)


def test_prefill_decode_times_a_warm_prefill():
    """A shape's first prefill pays compilation and tuning; prefill_decode times one after a warm-up (a sweep of
    decode points only timed the cold one: 3.3 s instead of 0.2 s for TTT-Linear at B=16, T=2048)."""
    calls = []

    class Cold:
        def prefill(self, ids, max_new_tokens=0):
            calls.append("prefill")

        def decode(self):
            calls.append("decode")

    def timer(fn):
        cold = not calls
        fn()
        return 1000.0 if cold else 1.0

    p = sweep.Point("prefill_decode", "ttt-linear", "kernels", 2, 20, 3, "fp32")
    res = sweep.measure(Cold(), p, timer, "cpu", 5)
    assert res["prefill_ms"] == 1.0 and res["decode_ms"] == 1.0 and res["ms"] == 2.0
    assert calls[:2] == ["prefill", "prefill"] and calls.count("decode") == sweep.DECODE_WARMUP + 3


def test_failing_points_are_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "r.jsonl"
    spec = small_spec(models=("ttt-linear", "ttt-mlp"))
    fail = {
        "ttt-linear": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB"),
        "ttt-mlp": RuntimeError("kernel launch failed"),
    }
    rows = sweep.run_sweep(sweep.grid(spec), out, spec, "cpu", 1, None, None, {}, False, tiny_factory(fail))
    status = {(r["model"], r["kind"]): r["status"] for r in rows}
    assert status[("ttt-linear", "decode")] == "oom" and status[("ttt-mlp", "decode")] == "error"
    assert status[("ttt-linear", "prefill")] == "ok" and status[("ttt-mlp", "prefill")] == "ok"
    assert any("kernel launch failed" in r.get("reason", "") for r in rows)


def _synthetic_rows():
    env = {"gpu": "NVIDIA H200", "torch": "2.11", "triton": "3.6", "tk_commit": "dbb4ecda5f9a", "git_sha": "abc"}
    rows = []
    for label, model, be, speed in (
        ("ttt-linear (kernels)", "ttt-linear", "kernels", 3.0),
        ("transformer", "transformer", "-", 1.0),
    ):
        for T in (2048, 4096, 8192):
            p = sweep.Point("prefill", model, be, 16, T)
            rows.append(
                {
                    "key": p.key,
                    "kind": "prefill",
                    "label": label,
                    "model": model,
                    "backend": be,
                    "batch": 16,
                    "prompt_len": T,
                    "gen_len": 0,
                    "status": "ok",
                    "ms": T / speed / 100,
                    "tokens_per_s": 16 * T / (T / speed / 1e5),
                    "prefill_fraction_of_limit": 0.5,
                    "env": env,
                    "ceilings": {"copy_tb_s": 4.2, "matmul_tflop_s": 700},
                }
            )
        for B in (1, 16, 64):
            p = sweep.Point("decode", model, be, B, 1, 128)
            rows.append(
                {
                    "key": p.key,
                    "kind": "decode",
                    "label": label,
                    "model": model,
                    "backend": be,
                    "batch": B,
                    "prompt_len": 1,
                    "gen_len": 128,
                    "status": "ok",
                    "ms": 100.0,
                    "decode_ms_per_step": 0.8,
                    "tokens_per_s": B * speed * 1000,
                    "decode_fraction_of_limit": 0.7,
                    "env": env,
                }
            )
        p = sweep.Point("prefill_decode", model, be, 16, 8192, 128)
        rows.append(
            {
                "key": p.key,
                "kind": "prefill_decode",
                "label": label,
                "model": model,
                "backend": be,
                "batch": 16,
                "prompt_len": 8192,
                "gen_len": 128,
                "status": "ok",
                "ms": 300.0,
                "prefill_ms": 200.0,
                "decode_ms_per_step": 0.7 / speed,
                "tokens_per_s": 5e5,
                "decode_fraction_of_limit": 0.6,
                "env": env,
            }
        )
    rows.append(
        {
            "key": "decode|transformer|-|fp16|B512|T1|G128",
            "kind": "decode",
            "status": "oom",
            "reason": "CUDA out of memory",
        }
    )
    return rows


def test_figures_and_readme_from_synthetic_results(tmp_path):
    res = tmp_path / "bench.jsonl"
    res.write_text("\n".join(json.dumps(r) for r in _synthetic_rows()) + "\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{figures.README_START}\nold table\n{figures.README_END}\n\ntail\n")
    written = figures.figures_from_file(res, tmp_path / "fig", readme)
    names = {p.name for p in written}
    assert {"prefill_latency.png", "decode_throughput.png", "decode_latency_vs_context.png", "bench.md"} <= names
    for p in written:
        assert p.stat().st_size > 1000 or p.suffix == ".md"
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "fig" / "bench.md").read_text()
    assert "NVIDIA H200" in md and "| ttt-linear (kernels) | 16 | 8192 |" in md and "oom" in md
    text = readme.read_text()
    assert "old table" not in text and "| transformer | 16 | 2048 |" in text and text.endswith("tail\n")
    assert "fig/prefill_latency.png" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers|bench-results"):
        figures.update_readme(readme, md, [])


def test_table_of_merged_runs_says_which_run_each_point_is_from():
    rows = _synthetic_rows()
    assert "| git |" not in figures.markdown_table(rows)  # one run: its sha in the header only
    rerun = [dict(r, env=dict(r["env"], git_sha="def456"), ceilings={"copy_tb_s": 4.0, "matmul_tflop_s": 700.0})
             for r in rows if r.get("model") == "transformer"]  # fmt: skip
    md = figures.markdown_table([r for r in rows if r.get("model") != "transformer"] + rerun)
    assert re.search(r"git abc \(\d+ points\), def456 \(\d+ points\)|git def456 \(\d+ points\), abc \(", md)
    assert "Measured ceilings (run def456): copy 4.00 TB/s, bf16 matmul 700 TFLOP/s" in md
    assert re.search(r"\| transformer \| 16 \| 2048 \|.*\| def456 \|", md)
    assert re.search(r"\| ttt-linear \(kernels\) \| 16 \| 2048 \|.*\| abc \|", md)


def test_cli_errors(tmp_path, capsys):
    if not torch.cuda.is_available():
        assert main(["bench", "--out", str(tmp_path / "r.jsonl")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["figures", "--results", str(tmp_path / "missing.jsonl")]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "--models", "gpt5"])
    with pytest.raises(SystemExit):
        main(["bench", "--prefill-lens", "0,16"])


def test_cli_dry_run_on_cpu(tmp_path, capsys, monkeypatch):
    """`ttt-infer bench --device cpu` end to end with tiny models (the factory is swapped for speed)."""
    real = sweep.run_sweep
    monkeypatch.setattr("ttt_infer.bench.cli.run_sweep", lambda *a, **k: real(*a, **k, factory=tiny_factory()))
    out = tmp_path / "r.jsonl"
    assert (
        main(
            [
                "bench",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--models",
                "ttt-linear",
                "--backends",
                "reference",
                "--dtype",
                "fp32",
                "--prefill-batches",
                "1",
                "--prefill-lens",
                "16",
                "--decode-batches",
                "1",
                "--decode-gen-lens",
                "2",
                "--pd-batches",
                "1",
                "--pd-prompt-lens",
                "17",
                "--pd-gen-len",
                "2",
                "--repeats",
                "1",
                "--no-progress",
                "--figures",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "prefill|ttt-linear|reference|fp32|B1|T16|G0" in printed
    assert re.search(r"sweep: 3 points measured in \d+ s \(0 already in ", printed)
    assert (tmp_path / "bench.md").exists() and len(sweep.read_results(out)) == 3
