"""Figures and tables from a benchmark results file (JSONL), in the paper's style:
latency per token vs context length (prefill; decode after a prompt) and throughput vs batch."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from .sweep import read_results

README_START, README_END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def ok_rows(rows: list[dict], kind: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("kind") == kind]


def _series(rows: list[dict], x: str, y) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        out[r["label"]].append((r[x], y(r)))
    return {k: sorted(v) for k, v in sorted(out.items())}


def _plot(ax, series: dict, xlabel: str, ylabel: str, title: str, logy: bool = True) -> None:
    for label, pts in series.items():
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", label=label, linestyle="--" if "reference" in label else "-")
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7)


def _gpu(rows: list[dict]) -> str:
    for r in rows:
        gpu = (r.get("env") or {}).get("gpu")
        if gpu:
            return gpu
    return "CPU"


def make_figures(rows: list[dict], out_dir: Path) -> list[Path]:
    """prefill_latency.png, decode_throughput.png, decode_latency_vs_context.png (those with data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    gpu, written = _gpu(rows), []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    pre = ok_rows(rows, "prefill")
    batches = sorted({r["batch"] for r in pre})
    if pre:
        fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
        for ax, B in zip(axes[0], batches, strict=True):
            sel = [r for r in pre if r["batch"] == B]
            s = _series(sel, "prompt_len", lambda r: r["ms"] * 1e3 / (r["batch"] * r["prompt_len"]))
            _plot(ax, s, "context length (tokens)", "prefill latency per token (us)", f"Prefill, batch {B} - {gpu}")
        save(fig, "prefill_latency.png")
    dec = ok_rows(rows, "decode")
    if dec:
        fig, ax = plt.subplots(figsize=(6, 4))
        s = _series(dec, "batch", lambda r: r["tokens_per_s"])
        _plot(ax, s, "batch size", "decode tokens/s", f"Decode throughput - {gpu}")
        save(fig, "decode_throughput.png")
    pd = ok_rows(rows, "prefill_decode")
    if pd:
        fig, ax = plt.subplots(figsize=(6, 4))
        s = _series(pd, "prompt_len", lambda r: r["decode_ms_per_step"])
        B = sorted({r["batch"] for r in pd})
        _plot(
            ax,
            s,
            "context length (tokens)",
            "decode latency per step (ms)",
            f"Decode after a prompt, batch {B} - {gpu}",
        )
        save(fig, "decode_latency_vs_context.png")
    return written


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _sha(r: dict) -> str:
    return str((r.get("env") or {}).get("git_sha"))[:12]


def markdown_table(rows: list[dict]) -> str:
    """One table per kind; failed and skipped points listed with their reasons."""
    lines = [f"GPU: {_gpu(rows)}"]
    env = next((r.get("env") for r in rows if r.get("env")), {}) or {}
    ceil = next((r.get("ceilings") for r in rows if r.get("ceilings")), None)
    shas = Counter(_sha(r) for r in rows if r.get("env"))
    mixed = len(shas) > 1  # points from several runs (a partial rerun merged in): a git column says which
    lines.append(
        f"torch {env.get('torch')}, triton {env.get('triton')}, CUDA {env.get('torch_cuda')}, driver {env.get('driver')}, "
        f"ThunderKittens {str(env.get('tk_commit'))[:12]}, git "
        + (", ".join(f"{s} ({n} points)" for s, n in shas.most_common()) if mixed else str(env.get("git_sha"))[:12])
    )
    if mixed:  # each point's fraction uses its own run's ceilings
        ceils = {_sha(r): r["ceilings"] for r in rows if r.get("ceilings")}
    else:
        ceils = {"": ceil} if ceil else {}
    for sha, c in ceils.items():
        lines.append(
            f"Measured ceilings{f' (run {sha})' if sha else ''}: copy {c['copy_tb_s']:.2f} TB/s, "
            f"bf16 matmul {c['matmul_tflop_s']:.0f} TFLOP/s"
        )
    heads = {
        "prefill": ("model", "B", "T", "ms", "tokens/s", "% of compute limit"),
        "decode": ("model", "B", "steps", "ms/step", "tokens/s", "% of memory limit"),
        "prefill_decode": ("model", "B", "T", "prefill ms", "decode ms/step", "total tokens/s", "% decode limit"),
    }
    for kind, cols in heads.items():
        sel = ok_rows(rows, kind)
        if not sel:
            continue
        cols = cols + ("git",) if mixed else cols
        lines += ["", f"**{kind}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in sorted(sel, key=lambda r: (r["label"], r["batch"], r["prompt_len"])):
            pct = lambda k: _fmt(None if r.get(k) is None else 100 * r[k], ".0f")  # noqa: B023
            if kind == "prefill":
                cells = (
                    r["label"],
                    r["batch"],
                    r["prompt_len"],
                    _fmt(r["ms"], ".4g"),
                    _fmt(r["tokens_per_s"], ".3g"),
                    pct("prefill_fraction_of_limit"),
                )
            elif kind == "decode":
                cells = (
                    r["label"],
                    r["batch"],
                    r["gen_len"],
                    _fmt(r["decode_ms_per_step"], ".3g"),
                    _fmt(r["tokens_per_s"], ".3g"),
                    pct("decode_fraction_of_limit"),
                )
            else:
                cells = (
                    r["label"],
                    r["batch"],
                    r["prompt_len"],
                    _fmt(r["prefill_ms"], ".4g"),
                    _fmt(r["decode_ms_per_step"], ".3g"),
                    _fmt(r["tokens_per_s"], ".3g"),
                    pct("decode_fraction_of_limit"),
                )
            cells = cells + (_sha(r),) if mixed else cells
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    bad = [r for r in rows if r.get("status") in ("oom", "error", "skipped")]
    if bad:
        lines += ["", "Not measured:", ""]
        for r in bad:
            lines.append(f"- `{r['key']}`: {r['status']} ({r.get('reason', '')})")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str, figures: list[Path]) -> None:
    """Replace the README's results block (between the markers) with `table` and figure links."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    links = "\n".join(f"![{p.stem}]({p.relative_to(readme.parent).as_posix()})" for p in figures)
    block = f"{README_START}\n<!-- generated by `ttt-infer figures`; do not edit by hand -->\n\n{table}\n{links}\n{README_END}"
    pattern = re.escape(README_START) + r".*?" + re.escape(README_END)
    readme.write_text(re.sub(pattern, lambda _: block, text, flags=re.S))


def figures_from_file(results: Path, out_dir: Path, readme: Path | None = None) -> list[Path]:
    rows = read_results(results)
    if not rows:
        raise ValueError(f"{results}: no results")
    written = make_figures(rows, out_dir)
    table = markdown_table(rows)
    (out_dir / "bench.md").write_text(table)
    if readme is not None:
        update_readme(readme, table, written)
    return [*written, out_dir / "bench.md"]
