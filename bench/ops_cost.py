#!/usr/bin/env python3
"""Each operations hook alone, in process: what one call pays for metrics, tracing at 1 %
and the decision log (its request-path hook and the writer's work per record).

    .venv/bin/python bench/ops_cost.py [--reps 7]
    PYTHONPATH=/tmp/old/service .venv/bin/python bench/ops_cost.py   # another revision

Shapes are scenario.py's (check, batch of 40, check-ent) decided once by the engine; then
each hook is called in a loop and timed (best and median of --reps loops):

  writer     DecisionLogger's record building for one call (masking, JSON), per record,
             sink dropped (what the writer thread costs the server's core per record)
  log hook   DecisionLogger.check / .batch on the request path (sample, enqueue), with a
             `traceparent` in the metadata; the writer drains between loops
  metrics    Metrics.decided(_batch) + Metrics.rpc, the tenant's bundle loaded
  tracing    Tracing.rpc + Tracing.decision entered and left, sampler
             parentbased_traceidratio 0.01, spans exported to nowhere, no traceparent

The writer's figure reaches into DecisionLogger's private `_lines` (the record builder);
revisions compared this way must have it. For a before/after pair, run the two
revisions alternately several times on the same machine state and compare medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenario  # noqa: E402

import pdp  # noqa: E402
from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.decision_log import DecisionLogger, _Call  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.metrics import Metrics  # noqa: E402
from pdp.tracing import TraceConfig, Tracing  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class NullSink:
    def write(self, line: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NoMetadata:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def timed(fn: Callable[[], Any], n: int, reps: int) -> tuple[float, float]:
    """Best and median microseconds per call over `reps` loops of `n` calls."""
    loops = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        loops.append((time.perf_counter() - start) / n * 1e6)
    return min(loops), statistics.median(loops)


def row(
    name: str, engine: Engine, logger: DecisionLogger, metrics: Metrics, tracing: Tracing, reps: int
) -> str:
    shape = scenario.SHAPES[name]
    inputs = scenario.check_inputs(shape)
    results = engine.check_batch("", inputs)
    single = shape.method == "Check"
    if single:
        inputs, results = inputs[:1], results[:1]
    kept = None if single else list(range(len(results)))
    call = _Call(time.time(), "default", inputs, results, kept, 321, [TRACEPARENT])
    metadata = (("traceparent", TRACEPARENT),)
    writer = timed(lambda: list(logger._lines(call)), 300 if single else 20, reps)
    if single:
        hook = timed(
            lambda: logger.check("", inputs[0], results[0], time.perf_counter(), metadata),
            2000,
            reps,
        )
        hooks = timed(
            lambda: (
                metrics.decided("", inputs[0], results[0]),
                metrics.rpc("Check", "OK", 0.0009),
            ),
            5000,
            reps,
        )
    else:
        hook = timed(
            lambda: logger.batch("", inputs, results, time.perf_counter(), metadata), 200, reps
        )
        hooks = timed(
            lambda: (
                metrics.decided_batch("", inputs, results),
                metrics.rpc("CheckBatch", "OK", 0.02),
            ),
            1000,
            reps,
        )
    while logger.queued:  # the hooks' records, drained before the next figure
        time.sleep(0.01)
    context = NoMetadata()

    def traced() -> None:
        with tracing.rpc(shape.method, context), tracing.decision("", batch=not single):
            pass

    spans = timed(traced, 5000, reps)
    per = len(results)
    return (
        f"{name:10} {writer[0] / per:14.1f} {hook[0]:9.1f} {hooks[0]:8.1f} {spans[0]:8.1f}"
        f"   ({writer[1] / per:.1f} {hook[1]:.1f} {hooks[1]:.1f} {spans[1]:.1f})"
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    print(f"pdp from {Path(pdp.__file__).parent}")
    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    engine = Engine(Snapshot.of({"default": bundle}))
    logger = DecisionLogger(NullSink())
    metrics = Metrics()
    metrics.bundle_loaded("default", bundle)
    env = {
        "OTEL_TRACES_EXPORTER": "console",  # replaced by Drop below
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }
    tracing = TraceConfig.from_env(env).tracing([Drop()])
    print(f"{'shape':10} {'writer/record':>14} {'log hook':>9} {'metrics':>8} {'tracing':>8}"
          "   (us per call, best of reps; medians in brackets)")  # fmt: skip
    for name in ("check", "batch", "check-ent"):
        print(row(name, engine, logger, metrics, tracing, args.reps))
    logger.close()
    tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
