"""The seed's four verification figures (TTT-Linear/TTT-MLP x prefill/decode) and a combined PNG.

Each figure has the seed's two per-time-step metrics, in %: the total variation (top panel) and the
share of differing predicted tokens (bottom panel). One colour per dtype; the line style says which
pair is compared:
  solid    candidate vs the PyTorch reference in the same dtype (what the thresholds gate)
  dashdot  the same pair, the seed's "TV" (mean over the batch of max |p - p'|), top panel only
  dashed   candidate vs the float64 reference
  dotted   the same-dtype reference vs the float64 reference
  faint    (decode only) the reference's dual-form prefill of the decode stream vs its primal-form decode,
           same dtype: how far apart two correct implementations in that precision are

Input: `results[layer][dtype][phase][pair]` with `pair` in PAIRS and each a dict holding the curves
"tv", "seed_tv", "token_diff" (lists of fractions, one per time step), as run.py writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAIRS = ("cand_vs_ref", "cand_vs_fp64", "ref_vs_fp64")
PHASES = ("prefill", "decode")
LAYER_TITLES = {"linear": "TTT-Linear", "mlp": "TTT-MLP"}
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
STYLES = {"cand_vs_ref": "-", "cand_vs_fp64": "--", "ref_vs_fp64": ":"}


def figure_name(layer: str, phase: str) -> str:
    """ttt_linear_prefill.png etc.: the seed's file names."""
    return f"ttt_{layer}_{phase}.png"


LABELS = {"cand_vs_ref": "cand vs ref", "cand_vs_fp64": "cand vs fp64", "ref_vs_fp64": "ref vs fp64"}


def _legend_note(candidate: str, reference: str) -> str:
    return f"cand = {candidate} backend, ref = PyTorch {reference} in the same dtype, fp64 = PyTorch {reference} in float64"


def _draw(ax_tv, ax_tok, by_dtype: Mapping[str, Mapping], phase: str, candidate: str, reference: str) -> None:
    for ci, (dtype, phases) in enumerate(by_dtype.items()):
        pairs = phases.get(phase)
        if not pairs:
            continue
        color = COLORS[ci % len(COLORS)]
        for pair in PAIRS:
            cur = pairs.get(pair)
            if not cur:
                continue
            steps = range(len(cur["tv"]))
            lab = f"{dtype}: {LABELS[pair]}"
            ax_tv.plot(steps, [100 * v for v in cur["tv"]], STYLES[pair], color=color, lw=1.2, label=lab)
            ax_tok.plot(steps, [100 * v for v in cur["token_diff"]], STYLES[pair], color=color, lw=1.2, label=lab)
            if pair == "cand_vs_ref" and "seed_tv" in cur:
                ax_tv.plot(
                    steps, [100 * v for v in cur["seed_tv"]], "-.", color=color, lw=0.8, label=f"{lab} (seed TV)"
                )
        nf = phases.get("noise_floor") if phase == "decode" else None
        if nf:  # the reference's dual-form prefill vs its primal decode, same dtype (informational)
            steps = range(len(nf["tv"]))
            lab = f"{dtype}: ref prefill vs ref decode (noise floor)"
            ax_tv.plot(steps, [100 * v for v in nf["tv"]], "-", color=color, lw=0.6, alpha=0.35, label=lab)
            ax_tok.plot(steps, [100 * v for v in nf["token_diff"]], "-", color=color, lw=0.6, alpha=0.35, label=lab)
    ax_tv.set_ylabel("total variation (%)")
    ax_tok.set_ylabel("differing tokens (%)")
    ax_tok.set_xlabel("time step" if phase == "prefill" else "decode step")
    for ax in (ax_tv, ax_tok):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)


def phase_figure(
    by_dtype: Mapping[str, Mapping], layer: str, phase: str, path: str | Path, candidate: str, reference: str
) -> Path:
    """One of the four figures: `by_dtype[dtype][phase][pair]` curves -> PNG at `path`."""
    fig, (ax_tv, ax_tok) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    _draw(ax_tv, ax_tok, by_dtype, phase, candidate, reference)
    ax_tv.set_title(f"{LAYER_TITLES.get(layer, layer)} {phase}")
    handles, labels = ax_tv.get_legend_handles_labels()
    if handles:  # below the panels, so that it hides no curve
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, bbox_to_anchor=(0.5, 0.025))
    else:  # nothing ran for this layer type (e.g. the candidate raised): say so on the figure
        ax_tv.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax_tv.transAxes)
    fig.text(0.5, 0.005, _legend_note(candidate, reference), ha="center", va="bottom", fontsize=7)
    rows = (len(labels) + 1) // 2
    fig.tight_layout(rect=(0, 0.03 + 0.022 * rows, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def combined_figure(results: Mapping[str, Mapping], path: str | Path, candidate: str, reference: str) -> Path:
    """All layer types x {prefill, decode} in one PNG: per cell the TV panel above the token panel."""
    layers = list(results)
    fig, axes = plt.subplots(2 * len(layers), 2, figsize=(13, 5 * len(layers)), squeeze=False, sharex="col")
    for li, layer in enumerate(layers):
        for pi, phase in enumerate(PHASES):
            ax_tv, ax_tok = axes[2 * li, pi], axes[2 * li + 1, pi]
            _draw(ax_tv, ax_tok, results[layer], phase, candidate, reference)
            ax_tv.set_title(f"{LAYER_TITLES.get(layer, layer)} {phase}")
    seen: dict = {}  # every label once, from all panels (the noise floor is drawn in decode panels only)
    for ax in axes[0::2].flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    handles, labels = list(seen.values()), list(seen)
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, 0.02)
        )
    fig.text(0.5, 0.003, _legend_note(candidate, reference), ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.09 if handles else 0.02, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_figures(
    results: Mapping[str, Mapping], out_dir: str | Path, candidate: str = "kernels", reference: str = "reference"
) -> list[Path]:
    """The four figures (fewer when fewer layer types ran) and verify_combined.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        phase_figure(results[layer], layer, phase, out / figure_name(layer, phase), candidate, reference)
        for layer in results
        for phase in PHASES
    ]
    paths.append(combined_figure(results, out / "verify_combined.png", candidate, reference))
    return paths
