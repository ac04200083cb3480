"""Automation: `nox -s tests` runs the CPU test suite (the default session).

Sessions reuse the interpreter's site-packages (torch, triton) so that a GPU host or the container
does not download a second torch build.
"""

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"

VENV = {"venv_params": ["--system-site-packages"]}


@nox.session(**VENV)
def tests(session: nox.Session) -> None:
    """CPU suite: reference model, checkpoints, CLI, Triton kernels under TRITON_INTERPRET=1."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "not gpu", *session.posargs, env={"TRITON_INTERPRET": "1"})
