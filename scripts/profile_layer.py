"""Where does a TTT model's time go outside the TTT op? torch.profiler over one block's prefill and
one decode step, top ops by device (or CPU) time.

    python scripts/profile_layer.py --batch 16 --seq 8192 --layer-type linear --backend kernels
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from ttt_infer import TTTConfig, TTTForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--layer-type", choices=["linear", "mlp"], default="linear")
    ap.add_argument("--backend", choices=["kernels", "reference"], default="kernels")
    ap.add_argument("--size", default="1b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    cfg = TTTConfig.standard(args.size, args.layer_type, "mamba", num_hidden_layers=1)
    with torch.device(args.device):
        model = TTTForCausalLM(cfg).to(dtype).eval()
    model.backend = args.backend
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=args.device)
    model(ids[:, :32], last_only=True)  # warm-up: compiles, tunes
    model.decode_step(ids[:, 0], model.new_cache(args.batch))  # the decode kernels tune on their first step
    cuda = args.device == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    key = "cuda_time_total" if cuda else "cpu_time_total"
    for name in ("prefill", "decode"):
        cache = model.new_cache(args.batch)
        model(ids[:, :17], cache, last_only=True)  # decode continues inside a mini-batch
        with profile(activities=acts) as prof:
            if name == "prefill":
                model(ids, last_only=True)
            else:
                model.decode_step(ids[:, 0], cache)
            if cuda:
                torch.cuda.synchronize()
        print(f"== {name}: B={args.batch} T={args.seq if name == 'prefill' else 1}, 1 layer, {args.backend}")
        print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
