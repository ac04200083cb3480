"""One TTT layer's decode step, launched a few times at one position, for Nsight Compute (or compute-sanitizer):

    ncu --set full -k regex:mlp_decode --launch-skip 2 -c 1 python scripts/profile_decode_step.py --kind mlp \
        --batch 512 --config mlp=cu:8:2

A random state of B sequences x `--heads` heads (head dim 64, fp32) at `--position` (its row inside the
mini-batch: 0..15; 15 runs the mini-batch-end update), bf16 activations. The configuration is forced
(TTT_DECODE_CONFIG), so the tuner does not launch the other candidates: the launches are `--warmup` then
`--launches` of that one kernel (ncu: skip the warm-up ones). Prints the mean time of the timed launches
(CUDA events; meaningless under a profiler). On the CPU (TRITON_INTERPRET=1) a Triton configuration runs as a
smoke test.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ttt_infer.kernels import decode  # noqa: E402
from ttt_infer.ttt.cache import TTTState  # noqa: E402

F = 64


def make_inputs(kind: str, B: int, nh: int, position: int, device: str, dtype: torch.dtype, seed: int = 0):
    """A random state (rows 0..position-1 of the mini-batch filled) and one token's inputs, realistic scales."""
    g = torch.Generator(device=device).manual_seed(seed)
    h = F if kind == "linear" else 4 * F

    def r(*shape, s=1.0, dt=torch.float32):
        return (s * torch.randn(*shape, generator=g, device=device)).to(dt)

    W2, b2 = (r(nh, h, F, s=h**-0.5), r(nh, 1, F, s=0.1)) if kind == "mlp" else (None, None)
    st = TTTState.from_params(B, r(nh, F, h, s=F**-0.5), r(nh, 1, h, s=0.1), W2, b2)
    for name, t in st.tensors().items():  # the mini-batch's rows so far: random, realistic scale
        if name in ("k", "g1", "x2", "g2"):
            t[:, :, :position] = r(*t[:, :, :position].shape, s=0.1)
        elif name == "lr":
            t[:, :, :position] = 0.1 * torch.rand(t[:, :, :position].shape, generator=g, device=device)
    xq, xk, xv = (r(B, nh, 1, F, dt=dtype) for _ in range(3))
    lr = 0.1 * torch.rand(B, nh, 1, generator=g, device=device)
    ln_w, ln_b = 1 + r(nh, F, s=0.2), r(nh, F, s=0.2)
    tau = (1 / torch.arange(1, 17, device=device)).float()
    pos = torch.tensor([position], dtype=torch.int64, device=device)
    return st, (xq, xk, xv, lr, ln_w, ln_b, tau), pos


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=["linear", "mlp"], default="mlp")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--position", type=int, default=8, help="tokens before this one; its row is position % 16")
    ap.add_argument("--config", required=True, help="forced configuration, e.g. mlp=cu:8:2 or linear=v3:2:0")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--launches", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.config.startswith(f"{args.kind}="):
        ap.error(f"--config must be for {args.kind} ({args.kind}=variant:warps:n), got {args.config!r}")
    os.environ["TTT_DECODE_CONFIG"] = args.config
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float16)  # no bf16 in the interpreter
    st, ins, pos = make_inputs(args.kind, args.batch, args.heads, args.position % 16, device, dtype)
    out = torch.empty(args.batch, args.heads, 1, F, device=device)
    for _ in range(args.warmup):
        decode.ttt_decode_step(st, *ins, pos, out=out)
    if not cuda:
        print(f"smoke run (no GPU): {args.config} at B={args.batch}, finite: {bool(torch.isfinite(out).all())}")
        return 0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.launches):
        decode.ttt_decode_step(st, *ins, pos, out=out)
    end.record()
    torch.cuda.synchronize()
    us = start.elapsed_time(end) * 1e3 / max(args.launches, 1)
    print(f"{args.config} B={args.batch} nh={args.heads} p={args.position % 16}: {us:.1f} us a launch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
