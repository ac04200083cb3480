"""Why is the benchmark's decode step slower than bench_decode.py's at large batch? Time the same
model's CUDA-graph decode step four ways in one process (docs/perf-notes.md, "Open discrepancy"):

  empty+replay   bench_decode.py: empty cache, capture, replay the captured step on a fixed token buffer
  empty+step     the same cache, but `step(tokens)` with the argmax of the last logits (what the bench does)
  prompt+step    the bench's TTTBench: prefill a 1-token prompt, then decode() steps
  prompt+replay  the bench's cache and graph, replayed without the token feedback

    python scripts/probe_decode_gap.py --batch 512 --layer-type linear --dtype fp16
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ttt_infer.bench.limits import events_ms  # noqa: E402
from ttt_infer.bench.models import TTTBench  # noqa: E402
from ttt_infer.kernels.graphs import CUDAGraphDecoder  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def per_step(fn, steps: int) -> float:
    fn()  # warm
    return statistics.median(events_ms(fn, 5)) / steps


def empty_cache_runs(model, B: int, n: int) -> dict[str, float]:
    dec = CUDAGraphDecoder(model, model.new_cache(B))
    state = {"tok": torch.randint(1, 32000, (B,), device="cuda")}
    dec.step(state["tok"])

    def feed() -> None:
        for _ in range(n):
            state["tok"] = dec.step(state["tok"]).argmax(-1)

    return {"empty+replay": per_step(lambda: dec.replay(n), n), "empty+step": per_step(feed, n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--layer-type", choices=["linear", "mlp"], default="linear")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    B, n = args.batch, args.steps
    bm = TTTBench(args.layer_type, DTYPES[args.dtype], "cuda", "kernels")
    model = bm.model
    res = {}

    res.update(empty_cache_runs(model, B, n))
    torch.cuda.empty_cache()

    ids = torch.randint(1, 32000, (B, 1), device="cuda")
    bm.prefill(ids, max_new_tokens=4 * n)
    bm.decode()

    def bench_steps() -> None:
        for _ in range(n):
            bm.decode()

    res["prompt+step"] = per_step(bench_steps, n)
    res["prompt+replay"] = per_step(lambda: bm._decoder.replay(n), n)
    print(f"{args.layer_type} {args.dtype} B={B}: " + ", ".join(f"{k} {v:.3f} ms/step" for k, v in res.items()))


if __name__ == "__main__":
    main()
