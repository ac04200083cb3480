"""Where a kernel's warps wait, from Nsight Compute's per-SASS-line samples (`ncu -i X.ncu-rep --page source --csv
--print-source sass > X_sass.csv`, plain or gzipped):

    python scripts/ncu_stalls.py results/h200/ncu/decode_step_s10/*_sass.csv.gz --top 12

For each file: the share of all warp-state samples by stall reason (stall_long_sb: waiting on global or local
memory; stall_barrier: at __syncthreads; ...), then the SASS lines with the most samples, each with its main
reason. Spill traffic shows as STL / LDL lines. `--phases`: the samples of each stretch of code between two
block barriers (BAR.SYNC), i.e. each phase of a kernel that works in barrier-separated phases; a barrier's wait
shows on the first lines after it (the warps that arrive early wait there), so a phase's stall_barrier share is
the wait for the slowest warp of the phase before.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path


def _num(text: str) -> float:
    return float(text.replace(",", "")) if text not in ("", "-") else 0.0


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the SASS table (the lines before it name the kernel)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if start is None:
        raise ValueError(f"{path}: no 'Address' header row: not an ncu --page source --csv export")
    header = rows[start]
    return header, [r for r in rows[start + 1 :] if len(r) == len(header)]


def samples(path: Path) -> tuple[list[str], list[dict[str, float]], float]:
    """Each SASS line's source text and its samples by stall reason, and the total of all samples."""
    header, rows = read(path)
    reasons = [c for c in header if c.startswith("stall_") and "(Not Issued)" not in c]
    if not reasons:
        raise ValueError(f"{path}: no stall_* columns (profile with --set full or the WarpStateStats section)")
    idx = {c: header.index(c) for c in reasons}
    per_line = [{c: _num(r[i]) for c, i in idx.items()} for r in rows]
    total = sum(sum(d.values()) for d in per_line)
    if total == 0:
        raise ValueError(f"{path}: no warp-state samples")
    src = header.index("Source")
    return [r[src].strip() for r in rows], per_line, total


def summarize(path: Path, top: int = 10) -> dict:
    """Stall reasons' shares of the samples and the `top` lines by samples."""
    sass, per_line, total = samples(path)
    reasons = list(per_line[0]) if per_line else []
    shares = {c: sum(d[c] for d in per_line) / total for c in reasons}
    order = sorted(range(len(sass)), key=lambda i: -sum(per_line[i].values()))[:top]
    lines = [
        {
            "index": i,
            "share": sum(per_line[i].values()) / total,
            "sass": sass[i],
            "reason": max(per_line[i], key=per_line[i].get),
        }
        for i in order
    ]
    return {
        "file": str(path),
        "samples": total,
        "reasons": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        "lines": lines,
    }


def phases(path: Path) -> list[dict]:
    """The samples of each stretch of SASS lines up to and including a BAR.SYNC (the last stretch: to the end):
    its first and last line, its share of all samples and of them the share stalled at a barrier."""
    sass, per_line, total = samples(path)
    out, first = [], 0
    for i, text in enumerate(sass):
        if "BAR.SYNC" in text or i == len(sass) - 1:
            span = per_line[first : i + 1]
            out.append({
                "first": first,
                "last": i,
                "share": sum(sum(d.values()) for d in span) / total,
                "barrier_share": sum(d.get("stall_barrier", 0.0) for d in span) / total,
            })  # fmt: skip
            first = i + 1
    return out


def render_phases(path: Path, ps: list[dict], min_share: float = 0.005) -> str:
    out = [f"== {path}: phases between block barriers (SASS lines, share of samples, of it at a barrier)"]
    out += [
        f"  [{p['first']:5d}-{p['last']:5d}] {p['share']:6.3f}  barrier {p['barrier_share']:6.3f}"
        for p in ps
        if p["share"] >= min_share
    ]
    return "\n".join(out)


def render(s: dict, n_reasons: int = 8) -> str:
    out = [f"== {s['file']}: {s['samples']:.0f} samples"]
    out += [f"  {c:24s} {v:6.3f}" for c, v in list(s["reasons"].items())[:n_reasons]]
    out.append("  top lines (SASS index, share, instruction, main reason):")
    out += [f"  {x['index']:5d} {x['share']:6.3f}  {x['sass'][:60]:60s} {x['reason']}" for x in s["lines"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=10, help="how many SASS lines to list")
    ap.add_argument("--phases", action="store_true", help="also the samples between block barriers")
    args = ap.parse_args(argv)
    for f in args.files:
        print(render(summarize(f, args.top)))
        if args.phases:
            print(render_phases(f, phases(f)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
