"""Distances between two models' next-token distributions, per time step.

Notation (the seed's README): for sequence i of the batch (B sequences) at time step t, p = p(x^i_t)
and p' = p'(x^i_t) are the two implementations' output probabilities over the vocabulary (V entries,
each sums to 1). Every metric is averaged over the batch and returned per time step:

  seed_tv[t]     = 1/B sum_i max_v |p_v - p'_v|                the seed's "total variation distance"
  tv[t]          = 1/B sum_i 1/2 sum_v |p_v - p'_v|            the true total variation distance
  token_diff[t]  = 1/B sum_i I[argmax_v p_v != argmax_v p'_v]   share of differing predicted tokens

All three are fractions in [0, 1] (multiply by 100 for %). Always seed_tv <= tv: the positive and the
negative parts of p - p' each sum to tv, so no single entry can exceed it.

Inputs are logits (softmax is taken here, in float64) or probabilities, shaped [B, V] (one time step)
or [B, T, V] (T time steps). argmax is taken on the logits as given (softmax preserves it).
"""

from __future__ import annotations

import torch


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() not in (2, 3):
        raise ValueError(f"expected [B, V] or [B, T, V], got shape {tuple(a.shape)}")


def probs(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis, in float64."""
    return torch.softmax(logits.to(torch.float64), dim=-1)


def seed_tv_from_probs(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """1/B sum_i max_v |p - q|: [T] for [B, T, V] inputs, a scalar for [B, V]."""
    _check_pair(p, q)
    return (p.to(torch.float64) - q.to(torch.float64)).abs().amax(-1).mean(0)


def tv_from_probs(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """1/B sum_i 1/2 sum_v |p - q| (half the L1 distance): [T] for [B, T, V] inputs, a scalar for [B, V]."""
    _check_pair(p, q)
    return 0.5 * (p.to(torch.float64) - q.to(torch.float64)).abs().sum(-1).mean(0)


def token_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1/B sum_i I[argmax a != argmax b] (logits or probabilities): [T] or a scalar, float64."""
    _check_pair(a, b)
    return (a.argmax(-1) != b.argmax(-1)).to(torch.float64).mean(0)


def compare_logits(a: torch.Tensor, b: torch.Tensor, chunk: int = 32) -> dict[str, torch.Tensor]:
    """The three curves for logits a, b [B, T, V] (or [B, V]), on a's device, float64, shape [T] (or []).

    The softmax is taken `chunk` time steps at a time so that [B, T, V] float64 copies never exist whole.
    Also returns `tv_max_seq` [T]: the largest single-sequence TV at each step (the batch's worst case).
    """
    _check_pair(a, b)
    if a.dim() == 2:
        out = compare_logits(a[:, None], b[:, None], chunk)
        return {k: v[0] for k, v in out.items()}
    b = b.to(a.device)
    parts: dict[str, list[torch.Tensor]] = {"seed_tv": [], "tv": [], "token_diff": [], "tv_max_seq": []}
    for s in range(0, a.shape[1], chunk):
        pa, pb = probs(a[:, s : s + chunk]), probs(b[:, s : s + chunk])
        d = (pa - pb).abs()
        parts["seed_tv"].append(d.amax(-1).mean(0))
        tv_seq = 0.5 * d.sum(-1)  # [B, t]
        parts["tv"].append(tv_seq.mean(0))
        parts["tv_max_seq"].append(tv_seq.amax(0))
        parts["token_diff"].append(token_diff(a[:, s : s + chunk], b[:, s : s + chunk]))
    return {k: torch.cat(v) for k, v in parts.items()}


def summarize(curves: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalars from per-step curves: mean and max over time of each curve."""
    out: dict[str, float] = {}
    for k, v in curves.items():
        v = v.reshape(-1).to(torch.float64)
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_max"] = float(v.max())
    return out
