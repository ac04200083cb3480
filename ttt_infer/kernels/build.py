"""Build the ThunderKittens prefill extension: `python -m ttt_infer.kernels.build`.

torch.utils.cpp_extension + ninja, `-std=c++20`, architectures from TORCH_CUDA_ARCH_LIST (default
"8.0;9.0a": Ampere warp-level code and Hopper sm_90a), ThunderKittens from `ttt_infer.env.tk_root()`
(setting TTT_INFER_TK_ROOT, default the pinned submodule). The module lands in
ttt_infer/kernels/_build/<name>/ (gitignored), where `prefill.py` finds it.

`--variant sm80` builds a second module, `_tk_prefill_sm80`, from the same sources for "8.0+PTX"
only: on a Hopper GPU its kernels run from the compute_80 PTX (the sm_80 code path, JIT-compiled by
the driver), which is how the Ampere path is tested on the H200.

`ttt_linear_prefill.cu` is the default TTT-Linear kernel (v6); the previous default (v4: the same kernel with
v4's shared-memory layouts, a template flag) is kept as the opt-in `impl="v4"` so that both can be timed in one run.

`ttt_linear_prefill_wgmma.cu` (the opt-in Hopper TTT-Linear kernel, `impl="wgmma"`) is compiled for every
architecture in the list, but its kernel body exists only in the sm_90a pass (9.0a in the list; plain
"9.0" does not have wgmma): the other images carry an empty stub, and the extension raises a clear
error when the wgmma kernel is asked for on a build or GPU without the sm_90a image.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ttt_infer.env import REPO_ROOT, tk_root

CSRC = REPO_ROOT / "csrc"
BUILD_ROOT = Path(__file__).resolve().parent / "_build"
SOURCES = [
    "bindings.cpp",
    "ttt_linear_prefill.cu",
    "ttt_linear_prefill_wgmma.cu",
    "ttt_mlp_prefill.cu",
    "ttt_mlp_decode.cu",
    "ttt_linear_decode.cu",
]
VARIANTS = {"native": ("_tk_prefill", None), "sm80": ("_tk_prefill_sm80", "8.0+PTX")}
DEFAULT_ARCH_LIST = "8.0;9.0a"

CUDA_FLAGS = [
    "-O3",
    "-std=c++20",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "-Xptxas=-v",
    "-lineinfo",
    # torch adds these; ThunderKittens needs the half/bf16 operators
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
]


def module_dir(variant: str = "native") -> Path:
    return BUILD_ROOT / VARIANTS[variant][0]


def build(variant: str = "native", verbose: bool = True):
    """Compile (ninja, incremental) and import the extension; returns the module."""
    from torch.utils import cpp_extension

    name, arch = VARIANTS[variant]
    tk_inc = tk_root() / "include"
    if not (tk_inc / "kittens.cuh").exists():
        raise FileNotFoundError(
            f"ThunderKittens headers not found at {tk_inc}: run `git submodule update --init "
            f"third_party/ThunderKittens` or set TTT_INFER_TK_ROOT"
        )
    if arch is not None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    else:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    out = module_dir(variant)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    mod = cpp_extension.load(
        name=name,
        sources=[str(CSRC / s) for s in SOURCES],
        extra_include_paths=[str(CSRC), str(tk_inc)],
        extra_cflags=["-O3", "-std=c++20"],
        extra_cuda_cflags=CUDA_FLAGS,
        build_directory=str(out),
        verbose=verbose,
    )
    print(
        f"built {name} for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} in {time.time() - t0:.0f} s: "
        f"{out / (name + '.so')}",
        file=sys.stderr,
    )
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="native")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    build(args.variant, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
