"""`ttt-infer` command line: one subcommand per concern, each registered from its own module."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

# Modules (relative to this package) that add subcommands: each defines
# `add_parser(subparsers) -> None` that registers its subcommand and sets `func`.
EXTERNAL_COMMANDS: list[str] = [".bench.cli", ".verify.run"]


def _dtype(name: str):
    import torch

    table = {"fp64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise argparse.ArgumentTypeError(f"dtype must be one of {sorted(table)}")
    return table[name]


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Which model: a checkpoint directory, or a standard/random-init config."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", help="ttt-lm-pytorch checkpoint directory")
    src.add_argument("--config", metavar="SIZE", help="standard size with random weights: 125m, 350m, 760m, 1b")
    p.add_argument("--random-init", action="store_true", help="random weights (required with --config)")
    p.add_argument("--layer-type", choices=["linear", "mlp"], default="linear")
    p.add_argument("--backbone", choices=["mamba", "transformer"], default="mamba")
    p.add_argument("--num-layers", type=int, default=None, help="override the number of layers")
    p.add_argument("--dtype", type=_dtype, default="fp32", help="fp64, fp32, fp16, bf16 (default fp32)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", choices=["reference", "reference-compiled", "kernels"], default="reference")
    p.add_argument("--seed", type=int, default=0)


def build_model(args: argparse.Namespace):
    import torch

    from . import TTTConfig, TTTForCausalLM, load_pretrained

    torch.manual_seed(args.seed)
    if args.checkpoint:
        model = load_pretrained(args.checkpoint, dtype=args.dtype, device=args.device)
    else:
        if not args.random_init:
            raise SystemExit("error: --config needs --random-init (there are no built-in weights)")
        over = {} if args.num_layers is None else {"num_hidden_layers": args.num_layers}
        cfg = TTTConfig.standard(args.config, args.layer_type, args.backbone, **over)
        model = TTTForCausalLM(cfg).to(device=args.device, dtype=args.dtype)
    model.backend = args.backend
    return model


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    model = build_model(args)
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    if args.prompt_ids:
        ids = [int(t) for t in args.prompt_ids.split(",")]
        prompt = torch.tensor([ids] * args.batch_size, device=args.device)
    else:
        prompt = torch.randint(
            0, model.config.vocab_size, (args.batch_size, args.prompt_len), generator=g, device=args.device
        )
    if int(prompt.max()) >= model.config.vocab_size or int(prompt.min()) < 0:
        raise SystemExit(f"error: token ids must be in [0, {model.config.vocab_size})")
    out = model.generate(prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, generator=g)
    for row in out.tolist():
        print(" ".join(map(str, row)))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from .env import collect_env

    env = collect_env()
    if args.json:
        print(json.dumps(env, indent=2))
    else:
        width = max(map(len, env))
        for k, v in env.items():
            print(f"{k:<{width}}  {v}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttt-infer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", help="print the software and hardware environment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("generate", help="generate tokens and print their ids")
    add_model_args(p)
    p.add_argument("--prompt-ids", help="comma-separated prompt token ids (default: random prompt)")
    p.add_argument("--prompt-len", type=int, default=16, help="length of the random prompt")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.set_defaults(func=cmd_generate)

    import importlib

    for mod in EXTERNAL_COMMANDS:
        importlib.import_module(mod, __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
