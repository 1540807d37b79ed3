#!/usr/bin/env python3
"""Cost of tracing in process: the servicer wire-to-wire with tracing off, on at 1%, on at 100%.

    .venv/bin/python bench/tracing_cost.py                 # check and batch, 15 rounds
    .venv/bin/python bench/tracing_cost.py --rounds 30 --calls 500 --shapes check

The servicer's own code (decode, convert, engine, convert, encode, and the tracing hooks),
as `test_engine_bench.py::test_servicer_wire_to_wire` runs it, once per variant:

  off    no OTEL_* variables: the hooks are the shared no-op object
  1%     OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01
  100%   OTEL_TRACES_SAMPLER=always_on

Each traced variant is the provider `pdp serve` builds from those variables (batch span
processor, default queue and schedule), its exporter encoding every batch to OTLP
protobuf as the OTLP exporter does, then dropping it: the exporter thread's CPU and GIL
share is counted, no collector is needed. The variants run interleaved call by call (one
call of each in turn, in a rotating order, --rounds x --calls times) and the figures are
the median and mean of the per-call times (decode of the request not included), so a
machine busy with other work weighs on all variants alike.
Calls carry no `traceparent`, so the sampler's ratio decides alone. Last, the two
no-op hooks of an untraced call are timed alone (what "off" adds to the code before them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenario  # noqa: E402

from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.grpc.servicer import AuthorizationServicer  # noqa: E402
from pdp.tracing import TraceConfig, Tracing  # noqa: E402

VARIANTS = {
    "off": {},
    "1%": {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    },
    "100%": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on"},
}


class EncodingExporter(SpanExporter):
    """Encodes spans to OTLP protobuf bytes, as the OTLP exporter does, and drops them."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS


class Context:
    """What the servicer reads of a grpc context on a good call."""

    def __init__(self) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None  # no deadline

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"servicer aborted: {code} {details}")


def noop_hooks_us(ctx: Context, n: int = 200_000) -> float:
    """The hooks of one Check with tracing off, as handle_errors and the servicer run them."""
    off = Tracing.off()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            with off.rpc("Check", ctx) as call:
                with off.decision("default") as span:
                    span.check(None, None)  # type: ignore[arg-type]
                call.status(None)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=300, help="calls per variant per round")
    p.add_argument("--shapes", nargs="+", default=["check", "batch"])
    args = p.parse_args(argv)

    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    engine = Engine(Snapshot.of({"default": bundle}))
    exporters: dict[str, EncodingExporter] = {}
    tracings: dict[str, Tracing] = {}
    for name, env in VARIANTS.items():
        config = TraceConfig.from_env(env)
        if config.exporters:
            exporters[name] = EncodingExporter()
            tracings[name] = config.tracing([exporters[name]])
        else:
            tracings[name] = config.start()
    ctx = Context()
    print(
        f"{'shape':8} {'variant':8} {'median µs':>10} {'vs off':>8} {'mean µs':>10} {'vs off':>8}"
    )
    for shape_name in args.shapes:
        s = scenario.SHAPES[shape_name]
        wire = s.message.SerializeToString()
        request_type = type(s.message)
        methods = {
            name: getattr(AuthorizationServicer(engine, 100, tracing=t), s.method)
            for name, t in tracings.items()
        }
        for m in methods.values():  # warm up, and check the decisions once
            out = m(request_type.FromString(wire), ctx)
            assert s.decode_decisions(out.SerializeToString()) == s.expected
        per_call: dict[str, list[float]] = {name: [] for name in methods}
        names = list(methods)
        for i in range(args.rounds * args.calls):
            # One call of each variant in turn, the order rotating: load from elsewhere
            # falls on all of them alike.
            k = i % len(names)
            for name in names[k:] + names[:k]:
                method = methods[name]
                request = request_type.FromString(wire)
                start = time.perf_counter()
                method(request, ctx).SerializeToString()
                per_call[name].append((time.perf_counter() - start) * 1e6)
        off = statistics.median(per_call["off"])
        off_mean = statistics.fmean(per_call["off"])
        for name, values in per_call.items():
            med, mean = statistics.median(values), statistics.fmean(values)
            print(
                f"{shape_name:8} {name:8} {med:10.1f} {med / off - 1:+8.1%}"
                f" {mean:10.1f} {mean / off_mean - 1:+8.1%}"
            )
    for t in tracings.values():
        t.shutdown(timeout=10)  # so the exporters have seen every span
    for name, e in exporters.items():
        print(f"{name}: {e.spans} spans exported, {e.bytes} bytes of OTLP")
    print(f"off: the no-op hooks of one call alone: {noop_hooks_us(ctx):.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
