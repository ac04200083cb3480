"""Kernel selection: the structural variants, the tuner's candidates, TTT_DECODE_CONFIG, the launch and the
timing of candidates on the first GPU call of each shape."""

from __future__ import annotations

import torch

from .common import triton

if triton is not None:
    from .linear import _ttt_linear_decode, _ttt_linear_decode_mh, _ttt_linear_decode_ps, _ttt_linear_decode_v3
    from .mlp import _ttt_mlp_decode, _ttt_mlp_decode_chunked, _ttt_mlp_decode_v3

    _KERNELS = {
        ("linear", "v1"): _ttt_linear_decode,
        ("linear", "mh"): _ttt_linear_decode_mh,
        ("linear", "v3"): _ttt_linear_decode_v3,
        ("linear", "ps"): _ttt_linear_decode_ps,
        ("linear", "cu"): None,  # CUDA, in the compiled extension (decode/cuda.py)
        ("mlp", "v1"): _ttt_mlp_decode,
        ("mlp", "chunk"): _ttt_mlp_decode_chunked,
        ("mlp", "v3"): _ttt_mlp_decode_v3,
        ("mlp", "cu"): None,  # CUDA, in the compiled extension (decode/cuda.py)
    }

# A configuration: (variant, num_warps, n): n = heads per program (linear "mh"), hidden chunk (mlp "chunk"),
# flags for linear "v3" (bit 0: rows loaded after the matvecs, bit 1: cache hints), NS * 10 + programs per
# SM for linear "ps", EV * 10000 + NS * 1000 + hidden chunk for mlp "v3" (NS: pipelining stages), CTAs an SM
# for the "cu" variants (the CUDA kernels; candidates only where the compiled extension loads: `candidates`;
# TTT-Linear's is compiled for 4 warps and 8 CTAs an SM only).
# The tuner's candidates. "mh" and "chunk" were slower on the H200 at every batch measured
# (docs/perf-notes.md, "Decode (Triton)"); they stay selectable through TTT_DECODE_CONFIG and tested.
# Linear "v3" at 2 warps: rows loaded up front (n = 0) take 154 registers (6 programs an SM), loaded after the
# matvecs (n = 1, 3) 128 (8 an SM; ptxas for sm_90). Nsight Compute at 512 rows (session 10) found n = 0's time
# waiting on each program's first loads; the 8 programs an SM hid little of it (H200 tuning, session 11: -10% at
# 64 rows, -0.6% at 512; the tuner keeps n = 0 at 16).
# The "ps" programs per SM are what fits beside each other (ptxas for sm_90: 124-128 registers, 27 KB
# (NS=2) / 53 KB (NS=3) shared memory at 4 warps); more would start a second wave.
CANDIDATES = {
    "linear": [
        ("v1", 2, 1),
        ("v1", 4, 1),
        ("v3", 4, 0),
        ("v3", 4, 1),
        ("v3", 4, 3),
        ("v3", 8, 1),
        ("v3", 2, 0),
        ("v3", 2, 1),
        ("v3", 2, 3),
        ("ps", 4, 23),
        ("ps", 4, 24),
        ("ps", 4, 33),
        ("ps", 4, 34),
        ("ps", 8, 32),
        ("cu", 4, 8),
    ],
    "mlp": [
        ("v1", 8, 0),
        ("v1", 16, 0),
        ("v3", 4, 1064),
        ("v3", 4, 2032),
        ("v3", 4, 2064),
        ("v3", 4, 3032),
        ("v3", 4, 12032),
        ("v3", 4, 12064),
        ("v3", 8, 2032),
        ("v3", 8, 3032),
        ("cu", 8, 2),
        ("cu", 8, 3),
    ],
}
DEFAULT = {"linear": ("v1", 4, 1), "mlp": ("v1", 8, 0)}
# (kind, B * nh, activation dtype) -> configuration, filled by _tune on the first GPU call of each shape
TUNED: dict[tuple[str, int, torch.dtype], tuple[str, int, int]] = {}
# the same key -> {configuration: median ms} of the last tuning (benchmark reports)
TIMINGS: dict[tuple[str, int, torch.dtype], dict] = {}


def config_text(cfg: tuple[str, int, int]) -> str:
    """A configuration as reports and TTT_DECODE_CONFIG write it: "variant:warps:n"."""
    return ":".join(map(str, cfg))


def tuned_configs() -> dict[str, str]:
    """What the tuner has picked in this process, for reports: {"<kind> <pairs> pairs <dtype>": "variant:warps:n"}."""
    return {
        f"{kind} {pairs} pairs {str(dtype).removeprefix('torch.')}": config_text(cfg)
        for (kind, pairs, dtype), cfg in sorted(TUNED.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2])))
    }


def _parse_config(text: str, kind: str) -> tuple[str, int, int] | None:
    """TTT_DECODE_CONFIG="linear=mh:4:4,mlp=chunk:4:64": variant:num_warps[:n] per layer type."""
    for entry in text.split(","):
        k, _, spec = entry.strip().rpartition("=")
        if k != kind:
            continue
        parts = spec.split(":")
        variant, warps = parts[0], int(parts[1])
        extra = (
            int(parts[2])
            if len(parts) > 2
            else {
                "v1": 1 if kind == "linear" else 0,
                "mh": 4,
                "chunk": 64,
                "v3": 0 if kind == "linear" else 2064,
                "ps": 34,
                "cu": 3 if kind == "mlp" else 8,
            }[variant]
        )
        if (kind, variant) not in _KERNELS:
            raise ValueError(f"TTT_DECODE_CONFIG: no variant {variant!r} for TTT-{kind}")
        return variant, warps, extra
    return None


def _fits(cfg: tuple[str, int, int], nprog: int) -> bool:
    variant, _, n = cfg
    return variant != "mh" or nprog % n == 0


_SMS: dict = {}


def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of the device (1 under the interpreter: a small persistent grid)."""
    if device.type != "cuda":
        return 1
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS[device]


def candidates(kind: str) -> list[tuple[str, int, int]]:
    """The tuner's candidates for this layer type here: the CUDA ones only where the extension loads."""
    from . import cuda

    have_cuda = cuda.available(kind)
    return [c for c in CANDIDATES[kind] if c[0] != "cu" or have_cuda]


def _launch(kind: str, nprog: int, args: list, cfg: tuple[str, int, int], consts: dict) -> None:
    variant, warps, n = cfg
    if variant == "cu":
        from . import cuda

        return cuda.launch_mlp(args, n) if kind == "mlp" else cuda.launch_linear(args, warps, n)
    kern = _KERNELS[(kind, variant)]
    if variant == "mh":
        kern[(nprog // n,)](*args, num_warps=warps, HPP=n, **consts)
    elif variant == "chunk":
        kern[(nprog,)](*args, num_warps=warps, HC=n, **consts)
    elif kind == "linear" and variant == "v3":  # n: bit 0 LATE, bit 1 EV
        kern[(nprog,)](*args, num_warps=warps, LATE=n & 1, EV=(n >> 1) & 1, RC=16, **consts)
    elif variant == "ps":  # n = NS * 10 + programs per SM; as few turns as that allows, the grid evened out
        turns = triton.cdiv(nprog, _num_sms(args[0].device) * (n % 10))
        grid = triton.cdiv(nprog, turns)
        kern[(grid,)](*args, grid, num_warps=warps, NS=n // 10, RC=16, TURNS=triton.cdiv(nprog, grid), **consts)
    elif kind == "mlp" and variant == "v3":  # n = EV * 10000 + NS * 1000 + HC
        kern[(nprog,)](*args, num_warps=warps, HC=n % 1000, NS=n // 1000 % 10, EV=n // 10000, UC=32, **consts)
    else:
        kern[(nprog,)](*args, num_warps=warps, **consts)


def _tune(kind: str, nprog: int, args: list, names: list[str], consts: dict) -> tuple[str, int, int]:
    """Time each candidate configuration and keep the one fastest on average over a mini-batch: at a middle
    position (p = b/2: W only read) and at its last position (p = b-1: the W update, which some variants
    pay for with a second pass), weighted (b-1) : 1. Everything a timed launch writes is scratch (rows,
    output, position, and a copy of W, b for the last position): the live state is only read, so this is
    safe on a live cache."""
    from triton.testing import do_bench

    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "ttt_decode_step: first call for this batch size is inside a CUDA graph capture; "
            "run one eager step first (it picks the kernel configuration)"
        )
    mb = consts["MB"]
    dev = args[names.index("pos_ptr")].device
    mid = dict(zip(names, args, strict=True))
    for name in ("K_ptr", "G_ptr", "G1_ptr", "X2_ptr", "G2_ptr", "LR_ptr", "out_ptr"):
        if name in mid:
            mid[name] = mid[name].clone()
    mid["pos_ptr"] = torch.full((1,), mb // 2, dtype=torch.int64, device=dev)
    end = dict(mid)
    for name in ("W_ptr", "b_ptr", "W1_ptr", "b1_ptr", "W2_ptr", "b2_ptr"):
        if name in end:
            end[name] = end[name].clone()
    end["pos_ptr"] = torch.full((1,), mb - 1, dtype=torch.int64, device=dev)
    positions = [([mid[n] for n in names], mb - 1), ([end[n] for n in names], 1)]
    times, err = {}, None
    for cfg in candidates(kind):
        if not _fits(cfg, nprog):
            continue
        try:
            t = [
                do_bench(lambda c=cfg, a=a: _launch(kind, nprog, a, c, consts), warmup=5, rep=25, return_mode="median")
                for a, _ in positions
            ]
            times[cfg] = sum(ti * w for ti, (_, w) in zip(t, positions, strict=True)) / mb
        except Exception as e:  # a configuration that does not compile or fit is skipped, not fatal
            times[cfg] = float("inf")
            err = e
    del mid, end, positions
    if not times or all(t == float("inf") for t in times.values()):
        raise RuntimeError(f"ttt_decode_step: no configuration in {candidates(kind)} ran for TTT-{kind}") from err
    return min(times, key=times.get), times
