#!/usr/bin/env python3
"""The side-by-side table of compare_cerbos.sh, from the two harnesses' raw results.

    python3 bench/compare_cerbos_table.py CERBOS.jsonl PDP.jsonl

CERBOS.jsonl is ../shared/bench/cerbos/bench.sh's results file, PDP.jsonl load.py's
(--scenario cerbos); both hold one JSON row per measured run with `shape` (a | b), `mode`
(c1, c16, c64, rate200), `rps`, `p50_us`, `p99_us`, `foreign_cpu0_pct` and `valid`. Each
figure is the median of that cell's valid runs; ratios are cedar-pdp / Cerbos (above 1:
cedar-pdp has more throughput, or a longer latency). Stdlib only.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

DECISIONS = {"a": 1, "b": 40}  # per call: the anchor's shapes (scenario.py)
Row = dict[str, Any]
Cell = tuple[str, str]
DISTURBED_PCT = 10  # as both harnesses flag a run: busy time on the server CPU not its own


def runs(path: Path) -> dict[Cell, list[Row]]:
    cells: dict[Cell, list[Row]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        if "shape" in r:  # load.py's first line describes the machine
            cells.setdefault((r["shape"], r["mode"]), []).append(r)
    return cells


def medians(rs: list[Row]) -> dict[str, float] | None:
    ok = [r for r in rs if r["valid"]]
    if not ok:
        return None
    keys = ("rps", "p50_us", "p99_us", "foreign_cpu0_pct")
    return {k: statistics.median(r[k] for r in ok) for k in keys}


def _order(cell: Cell) -> tuple[str, int, str]:
    shape, mode = cell
    return shape, int(mode[1:]) if mode.startswith("c") else 10**6, mode


def _fig(m: dict[str, float] | None, shape: str) -> str:
    if m is None:
        return "no valid run | | |"
    return (
        f"{m['rps']:,.0f} | {m['rps'] * DECISIONS[shape]:,.0f} "
        f"| {m['p50_us'] / 1e3:.2f} | {m['p99_us'] / 1e3:.2f}"
    )


def table(cerbos: dict[Cell, list[Row]], pdp: dict[Cell, list[Row]]) -> str:
    lines = [
        "| shape | load | Cerbos calls/s | decisions/s | p50 ms | p99 ms "
        "| cedar-pdp calls/s | decisions/s | p50 ms | p99 ms "
        "| ratio calls/s | ratio p50 | ratio p99 | valid runs Cerbos / cedar-pdp "
        "| other load on server CPU Cerbos / cedar-pdp |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in sorted(set(cerbos) | set(pdp), key=_order):
        shape, mode = cell
        c, p = cerbos.get(cell, []), pdp.get(cell, [])
        mc, mp = medians(c), medians(p)
        load = f"{mode[1:]} in flight" if mode.startswith("c") else f"fixed {mode[4:]} calls/s"
        if mc and mp:
            ratios = " | ".join(f"{mp[k] / mc[k]:.2f}" for k in ("rps", "p50_us", "p99_us"))
        else:
            ratios = "| |"
        valid = f"{sum(r['valid'] for r in c)}/{len(c)} / {sum(r['valid'] for r in p)}/{len(p)}"
        other = " / ".join(f"{m['foreign_cpu0_pct']:.0f} %" if m else "-" for m in (mc, mp))
        lines.append(
            f"| {shape} | {load} | {_fig(mc, shape)} | {_fig(mp, shape)} | {ratios} | {valid} "
            f"| {other} |"
        )
    every = [r for rs in (*cerbos.values(), *pdp.values()) for r in rs if r["valid"]]
    disturbed = sum(r["foreign_cpu0_pct"] > DISTURBED_PCT for r in every)
    if disturbed:
        lines.append(
            f"\nNot for the record: {disturbed} of {len(every)} valid runs had more than "
            f"{DISTURBED_PCT} % other load on the server's CPU (QUIET_MAX=10 waits for quiet)."
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    cerbos, pdp = runs(Path(argv[0])), runs(Path(argv[1]))
    print(table(cerbos, pdp))
    every = [r for rs in (*cerbos.values(), *pdp.values()) for r in rs]
    return 0 if every and all(r["valid"] for r in every) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
