# syntax=docker/dockerfile:1
#
# ttt-infer GPU image: CUDA 12.5.1 toolkit, gcc-13 host compiler, Python 3.12, torch 2.11.0 (CUDA 12
# wheel), Triton 3.6.0, the ThunderKittens prefill extension compiled at image build, the test suite
# and nox. One image for every compose service (bench, verify, figures, test); results go to the
# volume mounted on /opt/ttt-infer/results. docs/container.md says what was and was not exercised:
# this image has never been built by the team (no Docker engine on its machines).
#
# Where this differs from the project's own GPU runs (H200, torch 2.11.0+cu130, triton 3.6.0,
# nvcc 13.0, gcc 13, Python 3.12):
#   * CUDA toolkit 12.5.1 (design card, as in the upstream ttt-lm-kernels setup) instead of 13.0:
#     the extension here is compiled by nvcc 12.5, never tried by the team.
#   * torch 2.11.0+cu126 instead of +cu130: the same torch release, but PyPI's 2.11.0 wheel is a
#     CUDA 13.0.2 build (seen in its metadata: cuda-toolkit==13.0.2) and torch refuses to build an
#     extension whose nvcc major version (12) differs from its own (13). cu126 is the CUDA 12 build
#     of 2.11.0 nearest to 12.5 (minor versions may differ, torch only warns), and it carries sm_80
#     and sm_90 kernels. It ships its own CUDA 12.6 runtime libraries, so the image needs a driver
#     that runs CUDA 12.6 code (>= 560, or an older 5xx driver through minor-version compatibility).
#   * triton 3.6.0: identical to the H200 runs (and the exact version torch 2.11.0 requires).
#   * gcc 13.1 from the ubuntu-toolchain-r PPA (Ubuntu 22.04's own gcc stops at 12); the H200 runs
#     used a gcc 13 too. nvcc 12.5 accepts gcc up to 13.
#   * Python 3.12 from the deadsnakes PPA (22.04 ships 3.10): the runs' minor version (they used 3.12.3);
#     the PPA carries only its newest 3.12 patch release.
FROM nvidia/cuda:12.5.1-devel-ubuntu22.04

# GPU architectures the extension is compiled for: sm_80 (A100, the design card's CI runner) and
# sm_90a (H100/H200: ThunderKittens' Hopper path needs the "a" features: wgmma, TMA).
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0a"
# The ThunderKittens commit the project pins as its submodule (third_party/ThunderKittens); the
# image clones it instead of copying the submodule, so the build context needs no submodule.
ARG TK_REPO=https://github.com/HazyResearch/ThunderKittens.git
ARG TK_COMMIT=dbb4ecda5f9a0bd3de67e032a61ba413750c4e4d
# torch: 2.11.0, the release the H200 runs used, as its CUDA 12.6 build (see the header).
ARG TORCH_VERSION=2.11.0
ARG TORCH_CUDA=cu126
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
# triton: 3.6.0, the version of the H200 runs and the one torch 2.11.0 pins.
ARG TRITON_VERSION=3.6.0
# Parallel nvcc jobs for the extension build (each TK translation unit takes GBs of host memory).
ARG MAX_JOBS=4
# The non-root user; match the host's uid/gid so the results bind mount stays writable
# (docker-compose.yml passes TTT_UID/TTT_GID).
ARG TTT_UID=1000
ARG TTT_GID=1000
# Recorded in every result's environment stamp (the image has no .git).
ARG GIT_SHA=unknown

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gcc-13 and Python 3.12 come from two Launchpad PPAs (the only honest routes on 22.04 short of
# compiling them); the package names carry the pinned major/minor versions, and the PPAs do not keep
# old patch releases, so exact apt versions would break the build as soon as a PPA moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates \
 && add-apt-repository -y ppa:ubuntu-toolchain-r/test \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc-13 g++-13 git python3.12 python3.12-dev python3.12-venv \
 && update-alternatives --install /usr/bin/gcc gcc /usr/bin/gcc-13 130 --slave /usr/bin/g++ g++ /usr/bin/g++-13 \
 && update-alternatives --set gcc /usr/bin/gcc-13 \
 && rm -rf /var/lib/apt/lists/* \
 && test "$(gcc -dumpfullversion | cut -d. -f1)" = 13 \
 && test -n "$(nvcc --version | sed -n '/release 12\.5/p')"

# torch.utils.cpp_extension passes $CC to nvcc as -ccbin: the host compiler is gcc-13 everywhere.
ENV CC=/usr/bin/gcc-13 \
    CXX=/usr/bin/g++-13 \
    CUDAHOSTCXX=/usr/bin/g++-13 \
    CUDA_HOME=/usr/local/cuda \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH}

# ThunderKittens at the pinned commit (a shallow fetch of that one commit), checked afterwards.
RUN git init -q /opt/ThunderKittens \
 && git -C /opt/ThunderKittens remote add origin "${TK_REPO}" \
 && git -C /opt/ThunderKittens fetch -q --depth 1 origin "${TK_COMMIT}" \
 && git -C /opt/ThunderKittens checkout -q FETCH_HEAD \
 && test "$(git -C /opt/ThunderKittens rev-parse HEAD)" = "${TK_COMMIT}"
ENV TTT_INFER_TK_ROOT=/opt/ThunderKittens \
    TTT_INFER_TK_COMMIT=${TK_COMMIT} \
    TTT_INFER_GIT_SHA=${GIT_SHA}

# Python 3.12 venv with torch/triton first (the big, slow layer), then every other pinned package:
# docker/requirements.txt (direct dependencies, each pin with its reason) under
# docker/constraints.txt (everything they pull in). torch 2.11.0+cu126 exists only on PyTorch's
# CUDA 12.6 index; its dependencies come from PyPI under the same constraints. pip itself: the
# release current when this file was written.
COPY docker/requirements.txt docker/constraints.txt /tmp/pins/
RUN python3.12 -m venv /opt/venv \
 && pip install --no-cache-dir pip==26.3 \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple \
      -c /tmp/pins/requirements.txt -c /tmp/pins/constraints.txt \
      "torch==${TORCH_VERSION}+${TORCH_CUDA}" "triton==${TRITON_VERSION}" \
 && pip install --no-cache-dir -r /tmp/pins/requirements.txt -c /tmp/pins/constraints.txt \
 && python -c "import torch, triton; assert torch.version.cuda.startswith('12.'), torch.version.cuda; print(torch.__version__, torch.version.cuda, triton.__version__)"

# The non-root user that owns the source tree (the extension is built in it) and writes results.
# uid 0 is refused: a root-run host uses the default 1000 (see .github/workflows/gpu.yml).
RUN test "${TTT_UID}" != 0 \
 && { getent group "${TTT_GID}" >/dev/null || groupadd -g "${TTT_GID}" ttt; } \
 && useradd -l -m -u "${TTT_UID}" -g "${TTT_GID}" -s /bin/bash ttt \
 && mkdir -p /opt/ttt-infer/results \
 && chown -R "${TTT_UID}:${TTT_GID}" /opt/ttt-infer
WORKDIR /opt/ttt-infer
USER ${TTT_UID}:${TTT_GID}

# The package and its CUDA sources first, so that editing tests or docs does not rebuild the extension.
COPY --chown=${TTT_UID}:${TTT_GID} pyproject.toml README.md ./
COPY --chown=${TTT_UID}:${TTT_GID} csrc/ csrc/
COPY --chown=${TTT_UID}:${TTT_GID} ttt_infer/ ttt_infer/
# Editable install with no dependency resolution: every dependency is already pinned above, and
# `pip check` proves the set is consistent. Then the TK extension, for TORCH_CUDA_ARCH_LIST. No GPU
# and no driver are visible during `docker build`: the build only compiles, but torch imports the
# module it built, and ThunderKittens' TMA code calls the driver API (libcuda.so.1), so that import
# sees the toolkit's stub libcuda for this one command; at run time the real driver is mounted.
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
 && pip check \
 && mkdir -p /tmp/cuda-stubs \
 && ln -s /usr/local/cuda/lib64/stubs/libcuda.so /tmp/cuda-stubs/libcuda.so.1 \
 && LD_LIBRARY_PATH="/tmp/cuda-stubs:${LD_LIBRARY_PATH:-}" python -m ttt_infer.kernels.build \
 && rm -rf /tmp/cuda-stubs

# Tests, nox sessions, lint configuration and the container files themselves (the test service runs
# tests/test_container.py too).
COPY --chown=${TTT_UID}:${TTT_GID} . .

COPY --chown=root:root --chmod=755 docker/entrypoint.sh /usr/local/bin/ttt-entrypoint
# nox runs its sessions in this image's Python (everything is installed) instead of making venvs;
# Triton's cache lives outside the bind mount.
ENV TTT_INFER_NOX_BACKEND=none \
    TTT_INFER_RESULTS=/opt/ttt-infer/results \
    TRITON_CACHE_DIR=/home/ttt/.triton/cache
VOLUME ["/opt/ttt-infer/results"]
ENTRYPOINT ["/usr/local/bin/ttt-entrypoint"]
CMD ["nox", "-s", "bench"]
