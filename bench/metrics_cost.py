"""Cost of the metrics hooks on the request path, in process, as interleaved A/B pairs.

    .venv/bin/python bench/metrics_cost.py [--rounds 30] [--calls 300]

For each shape (`check`, `batch`, `check-ent`, `batch-ent`) the servicer is driven wire to
wire (decode, convert, engine, convert, encode: `test_engine_bench.py`'s servicer group)
with metrics off (`NoMetrics`) and on (`Metrics`, the tenant's bundle loaded), in rounds
that alternate which goes first, so a busy machine slows both alike. Prints the median
per-call time of each and the difference; then the hooks alone (what one Check and one
40-item batch add), which noise barely touches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenario  # noqa: E402
from test_engine_bench import wire_caller  # noqa: E402

from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.grpc.servicer import AuthorizationServicer  # noqa: E402
from pdp.metrics import Metrics, NoMetrics  # noqa: E402
from pdp.model import CheckResult  # noqa: E402


def _per_call(call: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=300, help="calls per variant per round")
    p.add_argument("--shapes", nargs="*", default=list(scenario.SHAPES))
    args = p.parse_args(argv)

    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    engine = Engine(Snapshot.of({"default": bundle}))
    metrics = Metrics()
    metrics.bundle_loaded("default", bundle)
    print(f"{args.rounds} rounds x {args.calls} calls per variant, order alternating")
    print(f"{'shape':10} {'off us':>9} {'on us':>9} {'on-off us':>10} {'cost':>7}")
    for name in args.shapes:
        shape = scenario.SHAPES[name]
        off, _ = wire_caller(AuthorizationServicer(engine, 100, metrics=NoMetrics()), shape)
        on, _ = wire_caller(AuthorizationServicer(engine, 100, metrics=metrics), shape)
        assert shape.decode_decisions(on()) == shape.decode_decisions(off()) == shape.expected
        times: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(args.rounds):
            pair = [("off", off), ("on", on)]
            for variant, call in pair if r % 2 == 0 else pair[::-1]:
                times[variant].append(_per_call(call, args.calls))
        t_off, t_on = (statistics.median(times[v]) * 1e6 for v in ("off", "on"))
        diffs = [(b - a) * 1e6 for a, b in zip(times["off"], times["on"], strict=True)]
        print(
            f"{name:10} {t_off:9.1f} {t_on:9.1f} {statistics.median(diffs):10.2f} "
            f"{statistics.median(diffs) / t_off:7.1%}"
        )

    # The hooks alone: one Check's (decided + rpc) and one 40-item batch's.
    inputs = scenario.check_inputs(scenario.SHAPES["batch"])
    results: list[CheckResult] = engine.check_batch("", inputs)
    n = 20_000

    def check_hooks() -> None:
        metrics.decided("", inputs[0], results[0])
        metrics.rpc("Check", "OK", 0.0001)

    def batch_hooks() -> None:
        metrics.decided_batch("", inputs, results)
        metrics.rpc("CheckBatch", "OK", 0.001)

    for label, fn in (("Check", check_hooks), ("CheckBatch of 40", batch_hooks)):
        best = min(_per_call(fn, n) for _ in range(5)) * 1e6
        print(f"hooks of one {label}: {best:.2f} us (best of 5 x {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
