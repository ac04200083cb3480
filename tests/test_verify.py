"""`ttt-infer verify`: metric functions, figures, checks, exit codes (CPU, tiny models)."""

import json

import pytest
import torch

from ttt_infer import TTTConfig, TTTForCausalLM
from ttt_infer import model as model_mod
from ttt_infer.cli import main
from ttt_infer.ttt.ops import ReferenceBackend
from ttt_infer.verify import metrics
from ttt_infer.verify.figures import write_figures
from ttt_infer.verify.run import FAIL, NOT_RUN, PASS, Thresholds, VerifyConfig, chain, decode, phase_checks, run_verify

TINY = dict(hidden_size=64, num_attention_heads=2, intermediate_size=128, vocab_size=256, num_hidden_layers=1)
RUN_ARGS = [
    "verify", "--batch", "2", "--prefill-len", "24", "--decode-len", "24", "--device", "cpu", "--no-progress",
    "--candidate-backend", "reference",
]  # fmt: skip
SIZE_ARGS = ["--hidden-size", "64", "--num-heads", "2", "--intermediate-size", "128", "--vocab-size", "256",
             "--num-layers", "1"]  # fmt: skip
TINY_ARGS = RUN_ARGS + SIZE_ARGS


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Two sequences (B=2) over V=4 (hand-computed below)
P = torch.tensor([[0.4, 0.3, 0.2, 0.1], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
Q = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=torch.float64)
# |P - Q| = [.3 .1 .1 .3] -> max .3, half L1 .4, argmax 0 vs 3 (differ)
#           [.3 .1 .1 .1] -> max .3, half L1 .3, argmax 0 vs 0 (same)


# --- metrics ---------------------------------------------------------------------------------------------
def test_metrics_hand_computed():
    assert metrics.seed_tv_from_probs(P, Q).item() == pytest.approx((0.3 + 0.3) / 2)
    assert metrics.tv_from_probs(P, Q).item() == pytest.approx((0.4 + 0.3) / 2)
    assert metrics.token_diff(P, Q).item() == pytest.approx(0.5)
    assert metrics.token_diff(P, P).item() == 0.0
    assert metrics.tv_from_probs(P, P).item() == 0.0
    # disjoint supports: TV is 1, the seed's metric only 1/2
    a = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5]], dtype=torch.float64)
    assert metrics.tv_from_probs(a, b).item() == pytest.approx(1.0)
    assert metrics.seed_tv_from_probs(a, b).item() == pytest.approx(0.5)


def test_metrics_per_time_step_from_logits():
    # [B=2, T=3, V=4]: step 0 = (P, Q), step 1 = (P, P), step 2 = (Q, P)
    p = torch.stack([P, P, Q], dim=1)
    q = torch.stack([Q, P, P], dim=1)
    out = metrics.compare_logits(p.log(), q.log(), chunk=2)  # softmax(log p) = p; chunks of 2 steps
    assert out["seed_tv"].tolist() == pytest.approx([0.3, 0.0, 0.3])
    assert out["tv"].tolist() == pytest.approx([0.35, 0.0, 0.35])
    assert out["tv_max_seq"].tolist() == pytest.approx([0.4, 0.0, 0.4])
    assert out["token_diff"].tolist() == pytest.approx([0.5, 0.0, 0.5])
    s = metrics.summarize(out)
    assert s["tv_mean"] == pytest.approx(0.7 / 3) and s["tv_max"] == pytest.approx(0.35)
    assert s["token_diff_mean"] == pytest.approx(1 / 3)
    # [B, V] input gives scalars
    one = metrics.compare_logits(P.log(), Q.log())
    assert one["tv"].dim() == 0 and one["tv"].item() == pytest.approx(0.35)


def test_metrics_properties_random():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, 50, generator=g), torch.randn(3, 7, 50, generator=g)
    x, y = metrics.compare_logits(a, b, chunk=3), metrics.compare_logits(a, b, chunk=100)
    for k in x:
        torch.testing.assert_close(x[k], y[k])  # chunking does not change the result
    assert (x["seed_tv"] <= x["tv"] + 1e-15).all()  # max |p - q| <= TV
    assert (x["tv"] <= x["tv_max_seq"] + 1e-15).all() and (x["tv_max_seq"] <= 1).all()
    # logits shifted by a constant give the same distribution
    z = metrics.compare_logits(a.double(), a.double() + 3.0)
    assert z["tv"].abs().max() < 1e-12 and z["token_diff"].sum() == 0
    with pytest.raises(ValueError):
        metrics.tv_from_probs(P, Q[:1])


# --- figures ---------------------------------------------------------------------------------------------
def _synthetic_results(layers=("linear", "mlp"), dtypes=("fp16", "bf16"), T=30):
    t = torch.arange(T, dtype=torch.float64)
    res = {}
    for li, layer in enumerate(layers):
        res[layer] = {}
        for di, d in enumerate(dtypes):
            res[layer][d] = {}
            for phase in ("prefill", "decode"):
                res[layer][d][phase] = {
                    pair: dict(
                        tv=(0.001 * (1 + li + di + k) * (1 + torch.sin(t))).tolist(),
                        seed_tv=(0.0005 * (1 + k) * (1 + torch.cos(t))).tolist(),
                        token_diff=((t % (5 + k)) == 0).double().mul(0.03).tolist(),
                    )
                    for k, pair in enumerate(("cand_vs_ref", "cand_vs_fp64", "ref_vs_fp64"))
                }
    return res


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_on_synthetic_curves(tmp_path):
    paths = write_figures(_synthetic_results(), tmp_path / "figs")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["ttt_linear_prefill.png", "ttt_linear_decode.png", "ttt_mlp_prefill.png", "ttt_mlp_decode.png",
         "verify_combined.png"]
    )  # fmt: skip
    assert all(_is_png(p) for p in paths)
    # one layer type: its two figures and the combined one
    paths = write_figures(_synthetic_results(layers=("mlp",), dtypes=("bf16",)), tmp_path / "one")
    assert sorted(p.name for p in paths) == ["ttt_mlp_decode.png", "ttt_mlp_prefill.png", "verify_combined.png"]
    assert all(_is_png(p) for p in paths)


# --- checks ----------------------------------------------------------------------------------------------
def _phase(cr_tok, cr_tv, err_c, err_r, rf_tok=0.0, rf_tv=0.0):
    return dict(
        cand_vs_ref=dict(summary=dict(token_diff_mean=cr_tok, tv_max=cr_tv)),
        cand_vs_fp64=dict(summary=dict(tv_mean=err_c)),
        ref_vs_fp64=dict(summary=dict(tv_mean=err_r, token_diff_mean=rf_tok, tv_max=rf_tv)),
    )


@pytest.mark.parametrize(
    "tok,tv,err_c,err_r,expect",
    [
        (0.01, 0.01, 2e-3, 1e-3, [PASS, PASS, PASS]),  # every value exactly at its threshold
        (0.0101, 0.0, 1e-3, 1e-3, [FAIL, PASS, PASS]),
        (0.0, 0.0101, 1e-3, 1e-3, [PASS, FAIL, PASS]),
        (0.0, 0.0, 2.01e-3, 1e-3, [PASS, PASS, FAIL]),
        (0.0, 0.0, 0.0, 0.0, [PASS, PASS, PASS]),  # identical to fp64: ratio 0/0 passes
        (0.0, 0.0, 1e-9, 0.0, [PASS, PASS, FAIL]),  # reference exact, candidate not
    ],
)
def test_phase_checks_thresholds(tok, tv, err_c, err_r, expect):
    checks: list = []
    res = _phase(tok, tv, err_c, err_r)
    phase_checks(checks, "decode", "linear", "fp16", res, Thresholds())
    assert [c["name"] for c in checks] == ["decode.token_diff_mean", "decode.tv_max", "decode.error_ratio_vs_fp64"]
    assert [c["status"] for c in checks] == expect
    assert res["error"]["cand_vs_fp64"] == err_c and res["error"]["ref_vs_fp64"] == err_r


@pytest.mark.parametrize("strict", [False, True])
def test_precision_floor_raises_absolute_gates_only_above_spec(strict):
    """ref vs fp64 differs on 4% of tokens: the token gate becomes 2 x 4% = 8% (not strict); a floor below
    the spec value never lowers it; the error-ratio gate is untouched."""
    th = Thresholds(strict=strict)
    checks: list = []
    phase_checks(checks, "prefill", "linear", "bf16", _phase(0.07, 0.009, 1e-3, 1e-3, rf_tok=0.04, rf_tv=0.001), th)
    tok, tv, _ = checks
    assert tok["status"] == (FAIL if strict else PASS)
    assert tok["threshold"] == (0.01 if strict else pytest.approx(0.08))
    assert ("precision floor" in tok["reason"]) != strict
    assert tv["status"] == PASS and tv["threshold"] == 0.01 and tv["reason"] == ""  # 2 x 0.1% < 1%
    checks = []
    phase_checks(checks, "prefill", "linear", "bf16", _phase(0.09, 0.0, 1e-3, 1e-3, rf_tok=0.04), th)
    assert checks[0]["status"] == FAIL  # above even the floor


# --- the runs ----------------------------------------------------------------------------------------------
def _tiny_model(layer="linear", dtype=torch.float64, **over):
    torch.manual_seed(0)
    return TTTForCausalLM(TTTConfig.standard("1b", layer, "mamba", **{**TINY, **over})).to(dtype)


@pytest.mark.parametrize("layer", ["linear", "mlp"])
def test_teacher_forced_decode_and_chain_match_prefill(layer):
    """decode() feeds the shared stream; greedy mode writes the argmax stream; chain() = prefill of the whole."""
    m = _tiny_model(layer, initializer_range=0.3)
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(0, 256, (2, 21), generator=g)
    stream = toks.clone()
    logits = decode(m, stream, greedy=True)
    assert torch.equal(stream[:, 0], toks[:, 0])
    assert torch.equal(stream[:, 1:], logits[:, :-1].argmax(-1))  # each input is the previous step's argmax
    # teacher-forced decode of a stream = one prefill of it (fp64)
    torch.testing.assert_close(decode(m, stream), m(stream), rtol=1e-9, atol=1e-9)
    # prompt of 19 tokens (not a multiple of 16) then 2 decode steps = prefill of the 21 tokens
    torch.testing.assert_close(chain(m, stream[:, :19], stream[:, 19:]), m(stream), rtol=1e-9, atol=1e-9)


class Perturbed(ReferenceBackend):
    """The reference plus a fixed random offset on the TTT output: a deliberately wrong candidate."""

    name = "perturbed"

    def inner(self, *args):
        out = super().inner(*args)
        g = torch.Generator().manual_seed(1)
        return out + 0.5 * torch.randn(out.shape, generator=g, dtype=out.dtype)


class Broken(ReferenceBackend):
    """A candidate that raises (as a kernel with an unsupported shape would)."""

    name = "broken"

    def inner(self, *args):
        raise ValueError("head dim 32 is not supported")


@pytest.fixture
def perturbed_backend(monkeypatch):
    real = model_mod.get_backend
    fakes = {"perturbed": Perturbed, "broken": Broken}
    monkeypatch.setattr(model_mod, "BACKENDS", (*model_mod.BACKENDS, *fakes))
    monkeypatch.setattr(model_mod, "get_backend", lambda name: fakes[name]() if name in fakes else real(name))


def _vc(**kw):
    base = dict(
        layer_types=["linear"], dtypes=["fp32"], batch=2, prefill_len=24, decode_len=24, device="cpu",
        overrides={**TINY, "initializer_range": 0.3}, progress=False, candidate="reference",
    )  # fmt: skip
    return VerifyConfig(**{**base, **kw})


def test_perturbed_candidate_fails(perturbed_backend, tmp_path):
    s = run_verify(_vc(candidate="perturbed"), tmp_path, log=lambda m: None)
    assert not s["passed"]
    status = {c["name"]: c["status"] for c in s["checks"]}
    for name in ("prefill.token_diff_mean", "prefill.tv_max", "prefill.error_ratio_vs_fp64", "decode.tv_max",
                 "decode.error_ratio_vs_fp64", "chain.prefill_then_decode"):  # fmt: skip
        assert status[name] == FAIL, name
    assert status["graph.replay_vs_eager"] == NOT_RUN
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["passed"] is False and saved["n_failed"] == s["n_failed"] > 0


def test_raising_candidate_fails_and_run_goes_on(perturbed_backend, tmp_path):
    s = run_verify(_vc(candidate="broken", dtypes=["fp32", "bf16"]), tmp_path, log=lambda m: None)
    assert not s["passed"] and s["complete"]
    assert {c["dtype"] for c in s["checks"]} == {"fp32", "bf16"}  # the second dtype still ran
    assert all(c["status"] == FAIL and "head dim 32" in c["reason"] for c in s["checks"])
    assert "ValueError" in s["results"]["linear"]["bf16"]["error"]


def test_reference_candidate_passes_with_curves():
    s = run_verify(_vc(layer_types=["mlp"], dtypes=["bf16"], stream="random"), None, log=lambda m: None)
    assert s["passed"] and s["n_failed"] == 0
    res = s["results"]["mlp"]["bf16"]
    for phase, T in (("prefill", 24), ("decode", 24)):
        cr = res[phase]["cand_vs_ref"]
        assert len(cr["tv"]) == T and max(cr["tv"]) == 0 and max(cr["token_diff"]) == 0
        rf = res[phase]["ref_vs_fp64"]
        assert len(rf["tv"]) == T and min(rf["tv"]) > 0  # bf16 differs from fp64 at every step
        assert res[phase]["error"]["ratio"] == pytest.approx(1.0)
    # reference prefill of the stream vs its decode: two algorithms, so in bf16 close but not equal
    nf = res["noise_floor"]["summary"]
    assert len(res["noise_floor"]["tv"]) == 24 and 0 < nf["tv_mean"] < 0.05
    assert res["chain"]["prompt_len"] == 17 and res["chain"]["steps"] == 24
    assert res["graph"]["status"] == NOT_RUN


# --- the command line ----------------------------------------------------------------------------------------
def test_cli_pass_end_to_end(tmp_path, capsys):
    out = tmp_path / "v"
    assert main([*TINY_ARGS, "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["passed"] is True and s["n_failed"] == 0
    assert set(s["results"]) == {"linear", "mlp"} and set(s["results"]["linear"]) >= {"fp16", "bf16"}
    assert s["env"]["torch"] == torch.__version__ and s["thresholds"]["max_token_diff"] == 0.01
    assert s["decode_kernel_configs"] == {}  # the reference candidate: no decode kernels tuned
    graph = [c for c in s["checks"] if c["name"] == "graph.replay_vs_eager"]
    assert len(graph) == 4 and all(c["status"] == NOT_RUN for c in graph)  # never reported as passed on CPU
    assert all(c["status"] == PASS for c in s["checks"] if c["name"] != "graph.replay_vs_eager")
    for name in ("ttt_linear_prefill", "ttt_linear_decode", "ttt_mlp_prefill", "ttt_mlp_decode", "verify_combined"):
        assert _is_png(out / f"{name}.png")
    printed = capsys.readouterr().out
    assert "verify: PASS" in printed and "NOT RUN" in printed


def test_cli_failing_threshold_exits_1(tmp_path, capsys):
    # the candidate is the reference itself, so its error vs fp64 equals the reference's: ratio 1 > 0.5
    args = [*TINY_ARGS, "--layer-types", "linear", "--dtypes", "bf16", "--max-error-ratio", "0.5"]
    assert main([*args, "--out", str(tmp_path)]) == 1
    s = json.loads((tmp_path / "summary.json").read_text())
    failed = sorted(c["name"] for c in s["checks"] if c["status"] == FAIL)
    assert failed == ["decode.error_ratio_vs_fp64", "prefill.error_ratio_vs_fp64"]
    assert "verify: FAIL" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        ["--dtypes", "fp8"],
        ["--layer-types", "rnn"],
        ["--batch", "0"],
        ["--chain-steps", "100"],
        ["--max-tv", "-1"],
        ["--config", "2b"],
        ["--hidden-size", "65"],
        ["--checkpoint", "/nonexistent", "--num-layers", "1"],
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, extra):
    try:
        rc = main([*TINY_ARGS, "--out", str(tmp_path), *extra])
    except SystemExit as e:  # argparse rejects bad choices itself
        rc = e.code
    assert rc == 2
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answer of the kernel backend")
def test_cli_unavailable_kernels_exit_1(tmp_path, capsys):
    args = [a for a in TINY_ARGS if a not in ("--candidate-backend", "reference")]
    assert main([*args, "--out", str(tmp_path)]) == 1
    assert "cannot run" in capsys.readouterr().err


def test_cli_checkpoint_directories(tmp_path):
    """--checkpoint (twice: a TTT-Linear and a TTT-MLP directory) instead of random weights."""
    from ttt_infer.checkpoint import save_pretrained

    for layer in ("linear", "mlp"):
        save_pretrained(_tiny_model(layer, torch.float32, initializer_range=0.3), tmp_path / layer)
    args = RUN_ARGS  # no size overrides: they only apply to random init
    out = tmp_path / "v"
    ckpts = ["--checkpoint", str(tmp_path / "mlp"), "--checkpoint", str(tmp_path / "linear")]
    assert main([*args, *ckpts, "--dtypes", "bf16", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["passed"] and s["complete"] and list(s["results"]) == ["mlp", "linear"]
    assert s["results"]["mlp"]["config"]["ttt_layer_type"] == "mlp"
    assert s["settings"]["checkpoints"] == [str(tmp_path / "mlp"), str(tmp_path / "linear")]
    # two checkpoints of one layer type, or size overrides with a checkpoint: bad arguments
    assert main([*args, "--checkpoint", str(tmp_path / "mlp"), "--checkpoint", str(tmp_path / "mlp")]) == 2
    assert main([*args, "--checkpoint", str(tmp_path / "mlp"), "--vocab-size", "256"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cli_cuda_without_gpu_exits_2(tmp_path):
    assert main([*TINY_ARGS, "--device", "cuda", "--out", str(tmp_path)]) == 2


def test_summary_names_the_tuned_decode_kernels(monkeypatch):
    """summary.json says which decode kernel configurations the tuner picked for the kernel candidate."""
    from ttt_infer.kernels.decode import tune
    from ttt_infer.verify.run import _decode_kernel_configs

    monkeypatch.setattr(tune, "TUNED", {("linear", 1024, torch.float16): ("cu", 4, 8)})
    assert _decode_kernel_configs(_vc(candidate="kernels")) == {"linear 1024 pairs float16": "cu:4:8"}
    assert _decode_kernel_configs(_vc(candidate="reference")) == {}
