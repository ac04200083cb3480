"""The decode state: TTT weights at the start of the current mini-batch, the rows of the mini-batch
seen so far, the convolution histories and the position.

Inside a mini-batch every gradient is taken at the mini-batch's starting weights, so instead of
running gradient sums the state keeps the mini-batch's rows (k_j, g_j, lr_j; for TTT-MLP also
x2_j = gelu(z1_j) and g2_j). Any position i then gets

    q_i W_i = q_i W - tau_i * sum_{j<=i} lr_j (q_i . k_j) g_j,

which reads W once per token; W itself is written once per mini-batch (MATH.md, "Decode traffic").
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Inner-loop state and accumulation dtype for activations of `dtype`: at least fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass
class TTTState:
    """Inner-loop state of one TTT layer for B sequences. All tensors fp32 (fp64 for fp64 models).

    W1 [B, nh, f, h]  b1 [B, nh, h]          h = f (TTT-Linear) or 4f (TTT-MLP)
    W2 [B, nh, h, f]  b2 [B, nh, f]          TTT-MLP only
    k  [B, nh, b, f]  g1 [B, nh, b, h]  lr [B, nh, b]     rows of the current mini-batch
    x2 [B, nh, b, h]  g2 [B, nh, b, f]       TTT-MLP only
    """

    W1: torch.Tensor
    b1: torch.Tensor
    k: torch.Tensor
    g1: torch.Tensor
    lr: torch.Tensor
    W2: torch.Tensor | None = None
    b2: torch.Tensor | None = None
    x2: torch.Tensor | None = None
    g2: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return "linear" if self.W2 is None else "mlp"

    @property
    def mini_batch_size(self) -> int:
        return self.k.shape[2]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def copy_(self, other: TTTState) -> TTTState:
        for name, t in self.tensors().items():
            t.copy_(getattr(other, name))
        return self

    def clone(self) -> TTTState:
        return TTTState(**{k: v.clone() for k, v in self.tensors().items()})

    @classmethod
    def from_params(
        cls,
        batch_size: int,
        W1: torch.Tensor,
        b1: torch.Tensor,
        W2: torch.Tensor | None = None,
        b2: torch.Tensor | None = None,
        mini_batch_size: int = 16,
        dtype: torch.dtype = torch.float32,
    ) -> TTTState:
        """Initial state: the layer's learned W, b tiled over the batch; empty mini-batch rows.

        W1 [nh, f, h], b1 [nh, 1, h] (checkpoint shapes), W2 [nh, h, f], b2 [nh, 1, f].
        """
        nh, f, h = W1.shape
        dev = W1.device

        def tile(t: torch.Tensor) -> torch.Tensor:
            # a fresh copy: with batch_size 1 an expand().contiguous() would alias the parameter
            return t.detach().to(dtype).unsqueeze(0).repeat(batch_size, *(1,) * t.dim())

        def rows(width: int) -> torch.Tensor:
            return torch.zeros(batch_size, nh, mini_batch_size, width, device=dev, dtype=dtype)

        st = cls(
            W1=tile(W1),
            b1=tile(b1.reshape(nh, h)),
            k=rows(f),
            g1=rows(h),
            lr=torch.zeros(batch_size, nh, mini_batch_size, device=dev, dtype=dtype),
        )
        if W2 is not None:
            assert b2 is not None
            st.W2, st.b2 = tile(W2), tile(b2.reshape(nh, f))
            st.x2, st.g2 = rows(h), rows(f)
        return st


@dataclass
class ConvState:
    """The last (kernel - 1) inputs of a causal depthwise convolution, in time order: [B, kernel - 1, C] (a tap's
    channels contiguous, so that the kernels read and write them coalesced)."""

    history: torch.Tensor


class ModelCache:
    """Everything a model needs to continue a batch of sequences token by token.

    `seqlen` (python int) drives the reference backend; `position` ([1] int64 on the model's device)
    holds the same number for kernels and CUDA graphs, which must never bake it in as a constant.
    """

    def __init__(
        self,
        ttt: list[TTTState],
        pre_conv: list[ConvState] | None,
        qk_conv: list[ConvState] | None,
        device: torch.device,
    ) -> None:
        self.ttt = ttt
        self.pre_conv = pre_conv
        self.qk_conv = qk_conv
        self.seqlen = 0
        self.position = torch.zeros(1, dtype=torch.int64, device=device)

    @property
    def batch_size(self) -> int:
        return self.ttt[0].W1.shape[0]

    def advance(self, n: int) -> None:
        self.seqlen += n
        self.position.add_(n)

    def tensors(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [self.position]
        for st in self.ttt:
            out += list(st.tensors().values())
        for convs in (self.pre_conv, self.qk_conv):
            out += [c.history for c in convs or []]
        return out

    def copy_(self, other: ModelCache) -> ModelCache:
        for a, b in zip(self.tensors(), other.tensors(), strict=True):
            a.copy_(b)
        self.seqlen = other.seqlen
        return self
