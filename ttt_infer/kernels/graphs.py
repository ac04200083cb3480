"""CUDA-graph decoding: the whole model's decode step captured once, replayed per token.

The graph is bound to one ModelCache (its tensors are the graph's static state buffers) and to a
static token buffer of the cache's batch size. Everything position-dependent is read from the
cache's device tensor `position` (RoPE index, tau_p, the row of the mini-batch, the end-of-mini-batch
update), and the graph itself advances it, so replay k computes token k correctly. The host mirror
`cache.seqlen` is kept in sync here.

Usage:
    dec = CUDAGraphDecoder(model, cache)   # model.backend == "kernels", cache on the GPU
    logits = dec.step(tokens)              # first call: one eager step (compiles, tunes), then capture
    logits = dec.step(tokens)              # replay

`step` returns a view of the graph's static logits buffer: it is overwritten by the next step.

Split steps (`split` > 1, large batches): the batch's sequences are cut into `split` micro-batches, each
decoded through all layers on a stream of its own (captured as independent branches of the one graph) and
sharing the cache's position, which advances once after they join. The branches drift apart, so one
micro-batch's compute-bound projections can run beside another's memory-bound TTT step instead of after it;
the price is the weights read once a micro-batch.
"""

from __future__ import annotations

import os
from itertools import pairwise

import torch

from ..ttt.cache import state_dtype

SPLIT_ENV = "TTT_INFER_DECODE_SPLIT"


def default_split(batch_size: int) -> int:
    """Micro-batches of a decode step for `batch_size` sequences: $TTT_INFER_DECODE_SPLIT if set (at most one a
    sequence), else 1."""
    text = os.environ.get(SPLIT_ENV)
    if text is None:
        return 1
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{SPLIT_ENV} must be a positive integer (micro-batches a decode step), got {text!r}")
    return min(n, batch_size)


def split_ranges(batch_size: int, split: int) -> list[tuple[int, int]]:
    """The micro-batches of a split step: `split` ranges (lo, hi) of sequences lo..hi - 1, as even as possible."""
    if not (isinstance(split, int) and 1 <= split <= batch_size):
        raise ValueError(f"split must be an int in 1..{batch_size} (the batch), got {split!r}")
    q, r = divmod(batch_size, split)
    return list(pairwise(i * q + min(i, r) for i in range(split + 1)))


class CUDAGraphDecoder:
    def __init__(self, model, cache, split: int | None = None) -> None:
        if model.backend != "kernels":
            raise ValueError(
                f"CUDA-graph decoding needs backend='kernels' (the reference backend reads the position "
                f"as a python int, which a graph would freeze), got {model.backend!r}"
            )
        if model.device.type != "cuda":
            raise ValueError(f"CUDA-graph decoding needs the model on a CUDA device, it is on {model.device}")
        for t in cache.tensors():
            if t.device != model.device:
                raise ValueError(f"the cache has a tensor on {t.device}, the model is on {model.device}")
        self.model = model
        self.cache = cache
        self.batch_size = cache.batch_size
        self.split = default_split(self.batch_size) if split is None else split
        self.ranges = split_ranges(self.batch_size, self.split)
        self.parts = [cache.rows(lo, hi) for lo, hi in self.ranges] if self.split > 1 else []
        self.streams = [torch.cuda.Stream(device=model.device) for _ in self.parts]
        self.tokens = torch.zeros(self.batch_size, dtype=torch.int64, device=model.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _load_tokens(self, tokens: torch.Tensor) -> int:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
            raise ValueError("tokens must be a 1-D tensor [batch] of token ids")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be int64 or int32, got {tokens.dtype}")
        n = tokens.shape[0]
        if n > self.batch_size:
            raise ValueError(
                f"batch of {n} sequences is larger than the captured graph's batch of {self.batch_size}; "
                "make a decoder (and cache) for the larger batch"
            )
        if n == 0:
            raise ValueError("tokens is empty")
        # rows n.. of a smaller batch decode padding (token 0) in their own, independent cache rows
        self.tokens[:n].copy_(tokens)
        return n

    def _decode(self, serial: bool = False) -> torch.Tensor:
        """One decode step of the whole batch on the current stream; a split step forks a stream a micro-batch
        and joins them (serial: each micro-batch waits for the one before, as in the eager step that tunes)."""
        if not self.parts:
            return self.model.decode_step(self.tokens, self.cache)
        main = torch.cuda.current_stream()
        # made on the main stream before the fork: every micro-batch writes its rows after waiting for it
        logits = torch.empty(self.batch_size, self.model.config.vocab_size, dtype=state_dtype(self.model.dtype),
                             device=self.model.device)  # fmt: skip
        before = main
        for (lo, hi), part, stream in zip(self.ranges, self.parts, self.streams, strict=True):
            stream.wait_stream(before if serial else main)
            with torch.cuda.stream(stream):
                part.seqlen = self.cache.seqlen
                logits[lo:hi].copy_(self.model.decode_step(self.tokens[lo:hi], part, advance=False))
            before = stream
        for stream in self.streams:
            main.wait_stream(stream)
        self.cache.advance(1)
        return logits

    def capture(self) -> None:
        """Capture one decode step (call after at least one eager step for this batch size)."""
        g = torch.cuda.CUDAGraph()
        seqlen = self.cache.seqlen
        with torch.cuda.graph(g):
            logits = self._decode()
        # capture records the step without running it: only the host mirror moved; put it back
        self.cache.seqlen = seqlen
        self.graph, self.logits = g, logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decode one token per sequence: tokens [n <= batch] -> logits [n, vocab] (static buffer view)."""
        n = self._load_tokens(tokens)
        if self.graph is None:
            # a real eager step, on a side stream as capture will be: compiles and tunes the kernels and
            # creates lazily-made library handles before capture
            side = torch.cuda.Stream(device=self.model.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                logits = self._decode(serial=True)
            torch.cuda.current_stream().wait_stream(side)
            self.capture()
            return logits[:n]
        self.graph.replay()
        self.cache.seqlen += 1
        return self.logits[:n]

    def replay(self, steps: int = 1) -> None:
        """Replay `steps` steps on the tokens already in `self.tokens` (benchmarks)."""
        if self.graph is None:
            raise RuntimeError("nothing captured yet: call step() once first")
        for _ in range(steps):
            self.graph.replay()
        self.cache.seqlen += steps
