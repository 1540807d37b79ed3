#!/usr/bin/env python3
"""What decision logs cost, in process: the servicer with and without a DecisionLogger.

    .venv/bin/python bench/decision_log_cost.py [--rounds 15] [--calls 400]

Two servicers on one engine (the bench bundle: default policies, BENCH_TRUST), one logging every
decision to a file (the default settings otherwise: masking, 4 KiB records, context on),
one with logs off. Rounds alternate the order (A/B, B/A, ...) and each "on" round ends only
when the writer thread has written all its records. Throughput is calls per CPU second of
the whole process (`time.process_time`): the writer's work (building, masking, writing) is
counted, it shares the GIL with the decisions, so this is what a saturated one-core server
loses; and CPU time is less disturbed than wall time by other processes on a busy machine.
Figures: the median of the rounds per shape, and the per-call wall-clock p99 over all
rounds; a relative A/B measure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenario  # noqa: E402

from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.decision_log import DecisionLogger, FileSink  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.grpc.servicer import AuthorizationServicer  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Context:
    """The two things the servicer asks of grpc's context on a good call."""

    def time_remaining(self) -> float | None:
        return None  # no deadline

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("traceparent", TRACEPARENT),)

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"servicer aborted: {code} {details}")


def run_round(
    servicer: AuthorizationServicer, shape: Any, calls: int, logger: DecisionLogger | None
) -> tuple[float, list[float]]:
    method = getattr(servicer, shape.method)
    wire = shape.message.SerializeToString()
    request_type = type(shape.message)
    ctx = Context()
    lat: list[float] = []
    start = time.process_time()
    for _ in range(calls):
        t = time.perf_counter()
        request = request_type.FromString(wire)
        method(request, ctx).SerializeToString()
        lat.append(time.perf_counter() - t)
    while logger is not None and logger.queued:
        time.sleep(0.01)  # the writer drains on its own schedule; sleeping costs no CPU
    return calls / (time.process_time() - start), lat


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=400, help="calls per round (batch: a tenth)")
    p.add_argument("--shapes", nargs="+", default=["check", "batch", "check-ent", "batch-ent"])
    args = p.parse_args()
    files = scenario.bench_bundle_files(read_bundle_files(default_bundle()))
    engine = Engine(Snapshot.of({"default": compile_bundle(files)}))
    with tempfile.TemporaryDirectory() as tmp:
        logger = DecisionLogger(FileSink(Path(tmp) / "d.jsonl", 1 << 30, 1))
        on = AuthorizationServicer(engine, 100, decision_log=logger)
        off = AuthorizationServicer(engine, 100)
        print(f"{'shape':10} {'off calls/cpu-s':>16} {'on calls/cpu-s':>15} {'cost':>7} "
              f"{'off p99 us':>11} {'on p99 us':>10}")  # fmt: skip
        for name in args.shapes:
            shape = scenario.SHAPES[name]
            calls = args.calls if shape.method == "Check" else max(10, args.calls // 10)
            rates: dict[str, list[float]] = {"off": [], "on": []}
            lats: dict[str, list[float]] = {"off": [], "on": []}
            run_round(off, shape, calls, None)  # warm-up
            run_round(on, shape, calls, logger)
            for r in range(args.rounds):
                order = [("off", off, None), ("on", on, logger)]
                for label, servicer, lg in order if r % 2 == 0 else order[::-1]:
                    rate, lat = run_round(servicer, shape, calls, lg)
                    rates[label].append(rate)
                    lats[label] += lat
            med = {k: statistics.median(v) for k, v in rates.items()}
            p99 = {k: statistics.quantiles(v, n=100)[98] * 1e6 for k, v in lats.items()}
            print(
                f"{name:10} {med['off']:16.0f} {med['on']:15.0f} "
                f"{1 - med['on'] / med['off']:7.1%} {p99['off']:11.0f} {p99['on']:10.0f}"
            )
        logger.close()
        print(f"records written {logger.written}, dropped {logger.dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
