"""The TK prefill wrapper fails clearly without CUDA / without the built extension (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from ttt_infer.kernels import KernelsUnavailable, prefill
from ttt_infer.ttt.cache import TTTState


def _args(dtype=torch.bfloat16, f=64, device="cpu", T=5):
    B, nh = 1, 2
    xs = [torch.randn(B, nh, T, f, dtype=dtype, device=device) for _ in range(3)]
    st = TTTState.from_params(B, torch.randn(nh, f, f) * 0.02, torch.zeros(nh, 1, f))
    lr = torch.rand(B, nh, T, device=device)
    tau = torch.ones(16, device=device)
    return st, (*xs, lr, torch.ones(nh, f), torch.zeros(nh, f), tau, 0)


def test_check_available_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KernelsUnavailable, match=r"python -m ttt_infer\.kernels\.build"):
        prefill.check_available()


def test_check_available_without_extension(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(prefill, "_MODULES", {})
    from ttt_infer.kernels import build

    monkeypatch.setattr(build, "BUILD_ROOT", tmp_path)
    with pytest.raises(KernelsUnavailable, match=r"not built.*python -m ttt_infer\.kernels\.build"):
        prefill.check_available()


def test_rejects_cpu_tensors():
    st, args = _args()
    with pytest.raises(ValueError, match="CUDA device"):
        prefill.ttt_prefill(st, *args)


def test_rejects_bad_dtype():
    st, args = _args(dtype=torch.float32)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        prefill.ttt_prefill(st, *args)


def test_rejects_head_dim():
    st, args = _args(f=32)
    with pytest.raises(ValueError, match="head dim 64"):
        prefill.ttt_prefill(st, *args)


def test_rejects_bad_start():
    st, args = _args()
    args = (*args[:-1], 16)
    with pytest.raises(ValueError, match="start"):
        prefill.ttt_prefill(st, *args)


def test_rejects_unknown_impl():
    st, args = _args()
    with pytest.raises(ValueError, match="impl"):
        prefill.ttt_prefill(st, *args, impl="tma")


def test_wgmma_unavailable_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prefill.wgmma_available() is False
