"""Static instruction counts of a kernel's main loop from its SASS (cuobjdump -sass output).

    python scripts/sass_loop_count.py kernel.sass                      # the loop: largest backward branch
    python scripts/sass_loop_count.py kernel.sass --walk 1850:F,18d0:T  # one pass along a chosen path

The main loop is the span of the backward branch that covers the most code. --walk follows one pass
from the loop head to the back edge: conditional branches at the listed addresses (hex) are taken (T)
or not (F), unlisted ones fall through, BRA.DIV never diverges; predicated-off instructions count (they
issue). Counts are by opcode class (HMMA, LDSM, LDS, STS, SHFL, BAR, FFMA, ...). How the prefill-v4 notes
were made: nvcc -cubin for sm_90a, then `cuobjdump -sass -fun <mangled kernel>`.
"""

from __future__ import annotations

import argparse
import collections
import re

CLASSES = {
    "HMMA": ["HMMA"],
    "LDSM": ["LDSM"],
    "LDS": ["LDS"],
    "STS": ["STS"],
    "global": ["LDG", "STG", "LDGSTS", "LDGDEPBAR", "DEPBAR"],
    "SHFL": ["SHFL"],
    "MOVM": ["MOVM"],
    "BAR": ["BAR"],
    "FFMA": ["FFMA"],
    "FMUL": ["FMUL"],
    "FADD": ["FADD"],
    "F2FP": ["F2FP", "F2F", "HADD2"],
    "MUFU": ["MUFU"],
    "FSEL": ["FSEL", "FSETP", "FMNMX"],
    "MOV": ["MOV", "UMOV"],
}


def parse(path: str) -> list[tuple[int, str]]:
    out = []
    for line in open(path):
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2).strip()))
    return out


def opcode(text: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def target(text: str) -> int | None:
    if "BRA.DIV" in text:
        return None
    m = re.search(r"BRA (?:!?U?P\w+, )?0x([0-9a-f]+)", text)
    return int(m.group(1), 16) if m else None


def main_loop(ins: list[tuple[int, str]]) -> tuple[int, int]:
    best = None
    for addr, text in ins:
        t = target(text)
        if t is not None and t < addr and (best is None or addr - t > best[1] - best[0]):
            best = (t, addr)
    if best is None:
        raise SystemExit("no backward branch")
    return best


def summary(ops: list[str]) -> str:
    cnt = collections.Counter(ops)
    used: set[str] = set()
    parts = []
    for name, members in CLASSES.items():
        parts.append(f"{name} {sum(cnt[o] for o in members)}")
        used |= set(members)
    parts.append(f"int/addr/control {sum(c for o, c in cnt.items() if o not in used)}")
    return f"{len(ops)} instructions: " + ", ".join(parts)


def walk(ins: list[tuple[int, str]], lo: int, hi: int, decisions: dict[int, bool]) -> list[str]:
    index = {a: i for i, (a, _) in enumerate(ins)}
    text = dict(ins)
    ops, a = [], lo
    for _ in range(100000):
        t = text[a]
        ops.append(opcode(t))
        if a == hi:
            return ops
        nxt = ins[index[a] + 1][0]
        tgt = target(t)
        if tgt is not None and (not t.startswith("@") or decisions.get(a, False)):
            nxt = tgt
        a = nxt
    raise SystemExit("no way back to the loop's back edge")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sass")
    p.add_argument("--walk", default=None, help="addr:T|F,... branch decisions for one pass")
    args = p.parse_args()
    ins = parse(args.sass)
    lo, hi = main_loop(ins)
    body = [opcode(t) for a, t in ins if lo <= a <= hi]
    print(f"loop 0x{lo:x}..0x{hi:x}, static: {summary(body)}")
    if args.walk is not None:
        dec = {}
        for kv in filter(None, args.walk.split(",")):
            k, v = kv.split(":")
            dec[int(k, 16)] = v.upper() == "T"
        print(f"one pass: {summary(walk(ins, lo, hi, dec))}")


if __name__ == "__main__":
    main()
