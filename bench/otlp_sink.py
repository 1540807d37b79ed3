#!/usr/bin/env python3
"""A listening OTLP/gRPC trace collector that counts what it receives and keeps nothing.

For the operations-cost runs: tracing measured against a collector that accepts exports,
as deployed, rather than one that refuses connections (whose exporter retries with backoff
and logs every failed export, a cost no deployment should have).

    .venv/bin/python bench/otlp_sink.py PORT      # serves until SIGTERM / Ctrl-C, then
                                                  # prints "received N spans in M exports"
    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT pdp serve
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc


class Sink(otlp_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exports = 0
        self.spans = 0

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: Any
    ) -> otlp.ExportTraceServiceResponse:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.exports += 1
            self.spans += n
        return otlp.ExportTraceServiceResponse()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{argv[0]}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"otlp sink listening on 127.0.0.1:{argv[0]}", flush=True)
    stop.wait()
    server.stop(1).wait()
    print(f"received {sink.spans} spans in {sink.exports} exports", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
