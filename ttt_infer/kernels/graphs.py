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
"""

from __future__ import annotations

import torch


class CUDAGraphDecoder:
    def __init__(self, model, cache) -> None:
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

    def capture(self) -> None:
        """Capture one decode step (call after at least one eager step for this batch size)."""
        g = torch.cuda.CUDAGraph()
        seqlen = self.cache.seqlen
        with torch.cuda.graph(g):
            logits = self.model.decode_step(self.tokens, self.cache)
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
                logits = self.model.decode_step(self.tokens, self.cache)
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
