"""The software and hardware environment, stamped on every result the project writes."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The one setting for where ThunderKittens lives (default: the pinned submodule).
TK_ROOT_ENV = "TTT_INFER_TK_ROOT"


def tk_root() -> Path:
    return Path(os.environ.get(TK_ROOT_ENV, REPO_ROOT / "third_party" / "ThunderKittens"))


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def tk_commit() -> str | None:
    """The ThunderKittens commit: from its checkout, else the submodule pin recorded in git."""
    root = tk_root()
    if (root / ".git").exists():
        return _git("rev-parse", "HEAD", cwd=root)
    pinned = _git("ls-tree", "HEAD", "third_party/ThunderKittens", cwd=REPO_ROOT)
    return pinned.split()[2] if pinned else os.environ.get("TTT_INFER_TK_COMMIT")


# Environment variables that stamp a result rather than change what runs
_STAMPS = ("TTT_INFER_GIT_SHA", "TTT_INFER_TK_COMMIT")


def settings() -> dict:
    """The project's environment settings in force (TTT_* variables that change which kernels and configurations
    run: TTT_INFER_PDL, TTT_INFER_GEMM, TTT_DECODE_CONFIG, ...); empty means every default."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("TTT_") and k not in _STAMPS}


def collect_env() -> dict:
    """GPU, driver, CUDA, torch, triton, ThunderKittens commit, package version, git sha and the TTT_* settings."""
    import torch

    from . import __version__

    env: dict = {
        "ttt_infer": __version__,
        # TTT_INFER_GIT_SHA, when set, wins: a copied tree (a remote GPU) can carry a stale .git of its own
        "git_sha": os.environ.get("TTT_INFER_GIT_SHA") or _git("rev-parse", "HEAD", cwd=REPO_ROOT),
        "git_dirty": False
        if os.environ.get("TTT_INFER_GIT_SHA")
        else bool(_git("status", "--porcelain", "--untracked-files=no", cwd=REPO_ROOT)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "tk_commit": tk_commit(),
        "settings": settings(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(
            gpu=p.name,
            gpu_count=torch.cuda.device_count(),
            sm=f"{p.major}.{p.minor}",
            sm_count=p.multi_processor_count,
            gpu_memory_gb=round(p.total_memory / 2**30, 1),
            driver=_nvidia_smi("driver_version"),
        )
    else:
        env.update(gpu=None, driver=None)
    return env


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
