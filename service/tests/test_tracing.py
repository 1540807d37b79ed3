"""Traces: spans of the real server, over loopback through the generated stubs.

The server runs in this process (the composition root `App`, on its own event-loop thread)
so that the SDK's in-memory exporter sees its spans; the `OTEL_*` configuration and the
OTLP export are tested against `pdp serve` subprocesses.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.app import App
from pdp.config import Settings
from pdp.tracing import NO_SPAN, SAMPLERS, TraceConfig, TraceConfigError, Tracing

from .grpc.test_service import docs, uid
from .support import DOCS_BUNDLE, REPO, pdp_command, running_server

CHECK = "pdp.v1.AuthorizationService/Check"
BATCH = "pdp.v1.AuthorizationService/CheckBatch"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traceparent(sampled: bool = True) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-{'01' if sampled else '00'}"),)


@contextmanager
def in_process_server(tracing: Tracing) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    """`App` as `pdp serve` builds it, serving on loopback from a thread of this process."""
    settings = Settings(
        listen="127.0.0.1:0",
        bundles={"default": REPO / "policies", "docs": DOCS_BUNDLE},
        watch=False,
        shutdown_grace_seconds=5,
    )
    app = App(settings, tracing=lambda: tracing)
    app.load()
    loop = asyncio.new_event_loop()
    port: list[int] = []
    listening = threading.Event()

    def on_listening(p: int) -> None:
        port.append(p)
        listening.set()

    def serve() -> None:
        try:
            loop.run_until_complete(app.run(on_listening))
        finally:
            listening.set()
            loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert listening.wait(30) and port, "in-process server did not start"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as channel:
            yield pb_grpc.AuthorizationServiceStub(channel)
    finally:
        loop.call_soon_threadsafe(app.request_stop)
        thread.join(30)
        assert not thread.is_alive()


def recorded(sampler: Any = ALWAYS_ON) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    # Synchronous export: a span is in the exporter when its call has been answered.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter]]:
    tracing, exporter = recorded()
    with in_process_server(tracing) as stub:
        yield stub, exporter


@pytest.fixture
def spans_of(
    traced: tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter],
) -> Iterator[tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter]]:
    traced[1].clear()
    yield traced


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    out = {s.name: s for s in spans}
    assert len(out) == len(spans), [s.name for s in spans]
    return out


def test_check_has_an_rpc_span_and_a_decision_span_inside_it(
    spans_of: tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = spans_of
    response = stub.Check(docs())
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {CHECK, "pdp.check"}
    rpc, decision = spans[CHECK], spans["pdp.check"]

    assert rpc.kind is SpanKind.SERVER
    assert dict(rpc.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "pdp.v1.AuthorizationService",
        "rpc.method": "Check",
        "rpc.grpc.status_code": 0,
    }
    assert rpc.status.status_code is StatusCode.UNSET
    assert rpc.parent is None  # no traceparent: a new trace

    assert decision.kind is SpanKind.INTERNAL
    assert decision.parent is not None and rpc.context is not None
    assert decision.context is not None
    assert decision.parent.span_id == rpc.context.span_id
    assert decision.context.trace_id == rpc.context.trace_id
    assert dict(decision.attributes or {}) == {
        "pdp.tenant": "docs",
        "pdp.action": 'Action::"read"',
        "pdp.decision": "allow",
        "pdp.decision_id": response.decision_id,
        "pdp.determining_policies": tuple(response.determining_policies),
        "pdp.errors": len(response.errors),
        "pdp.cache_hit": response.cache_hit,
        "pdp.bundle.name": "docs",
        "pdp.bundle.version": "1.0.0",
        "pdp.bundle.digest": response.policy_version.digest,
    }
    # The spans carry no principal, resource or context value.
    text = json.dumps([dict(s.attributes or {}) for s in spans.values()], default=str)
    assert "alice" not in text and "doc1" not in text


def test_a_callers_trace_context_is_continued(
    spans_of: tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = spans_of
    stub.Check(docs(), metadata=traceparent())
    spans = by_name(exporter.get_finished_spans())
    rpc, decision = spans[CHECK], spans["pdp.check"]
    assert rpc.parent is not None and rpc.parent.is_remote
    assert format(rpc.parent.span_id, "016x") == PARENT_ID
    for span in (rpc, decision):
        assert span.context is not None
        assert format(span.context.trace_id, "032x") == TRACE_ID


def test_batch_has_one_decision_span_with_the_item_count(
    spans_of: tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = spans_of
    items = [
        pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1")),
        pb.BatchItem(
            principal=uid("User", "mallory"),
            action=uid("Action", "read"),
            resource=uid("Document", "doc1"),
        ),
        pb.BatchItem(action=uid("Action", "edit"), resource=uid("Document", "doc1")),
    ]
    response = stub.CheckBatch(
        pb.CheckBatchRequest(tenant="docs", principal=uid("User", "alice"), items=items)
    )
    decisions = [r.decision for r in response.results]
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {BATCH, "pdp.check_batch"}
    assert dict(spans[BATCH].attributes or {})["rpc.method"] == "CheckBatch"
    batch = spans["pdp.check_batch"]
    assert batch.parent is not None and spans[BATCH].context is not None
    assert batch.parent.span_id == spans[BATCH].context.span_id
    attrs = dict(batch.attributes or {})
    assert attrs["pdp.batch.items"] == 3
    assert attrs["pdp.batch.allowed"] == decisions.count(pb.DECISION_ALLOW)
    assert attrs["pdp.batch.denied"] == decisions.count(pb.DECISION_DENY)
    assert attrs["pdp.batch.allowed"] >= 1 and attrs["pdp.batch.denied"] >= 1
    assert attrs["pdp.batch.cache_hits"] == sum(r.cache_hit for r in response.results)
    assert attrs["pdp.actions"] == ('Action::"edit"', 'Action::"read"')
    assert attrs["pdp.tenant"] == "docs"
    assert attrs["pdp.bundle.version"] == "1.0.0"


def test_invalid_argument_is_the_status_code_of_the_rpc_span(
    spans_of: tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = spans_of
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(docs(context_json="[1, 2"))  # refused before any decision
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {CHECK}
    assert dict(spans[CHECK].attributes or {})["rpc.grpc.status_code"] == 3
    # The caller's error, not the server's: the conventions leave the span status unset
    # for INVALID_ARGUMENT on a SERVER span (ERROR is for INTERNAL, UNAVAILABLE, ...).
    assert spans[CHECK].status.status_code is StatusCode.UNSET


def test_an_error_inside_the_decision_names_its_type_on_the_decision_span(
    spans_of: tuple[pb_grpc.AuthorizationServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = spans_of
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(docs(tenant="no-such-tenant"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    spans = by_name(exporter.get_finished_spans())
    assert dict(spans[CHECK].attributes or {})["rpc.grpc.status_code"] == 5
    decision = dict(spans["pdp.check"].attributes or {})
    # No tenant attribute for a tenant that is not served (the caller's text, any size).
    assert decision == {"error.type": "UnknownTenant"}

    exporter.clear()
    with pytest.raises(grpc.RpcError) as err:  # the schema refuses it inside the engine
        stub.Check(docs(action=uid("Action", "fly")))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    spans = by_name(exporter.get_finished_spans())
    assert dict(spans["pdp.check"].attributes or {}) == {"error.type": "InvalidRequest"}
    assert dict(spans[CHECK].attributes or {})["rpc.grpc.status_code"] == 3


class _Context:
    """The servicer context as the RPC hook sees it: only its metadata is read."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.reads = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        self.reads += 1
        return self.metadata


def test_server_failures_mark_the_rpc_span_as_an_error() -> None:
    # INTERNAL cannot be provoked through the real server (it is a bug), so the hook is
    # driven here exactly as `handle_errors` drives it.
    tracing, exporter = recorded()
    with tracing.rpc("Check", _Context()) as span:
        span.status(grpc.StatusCode.INTERNAL)
    with pytest.raises(RuntimeError), tracing.rpc("Check", _Context()):
        raise RuntimeError("grpc failed under us")
    internal, unknown = exporter.get_finished_spans()
    assert internal.status.status_code is StatusCode.ERROR
    assert dict(internal.attributes or {})["rpc.grpc.status_code"] == 13
    assert unknown.status.status_code is StatusCode.ERROR
    assert dict(unknown.attributes or {})["rpc.grpc.status_code"] == 2
    assert [e.name for e in unknown.events] == ["exception"]


def test_a_call_the_sampler_drops_costs_no_decision_span() -> None:
    tracing, exporter = recorded(ALWAYS_OFF)
    with tracing.rpc("Check", _Context(traceparent())) as span:
        assert tracing.decision("docs") is NO_SPAN  # no second sampling decision either
        span.status(grpc.StatusCode.INTERNAL)
    assert exporter.get_finished_spans() == ()


class _CountingIds(RandomIdGenerator):
    """Random ids, counting the span ids asked for: the SDK asks one per span it builds,
    recorded or not."""

    def __init__(self) -> None:
        self.span_ids = 0

    def generate_span_id(self) -> int:
        self.span_ids += 1
        return super().generate_span_id()


def test_a_call_the_sampler_drops_builds_no_span_at_all() -> None:
    config = TraceConfig.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        }
    )
    ids = _CountingIds()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=config.sampler, id_generator=ids, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with in_process_server(Tracing(provider, root_ratio=config.root_ratio)) as stub:
        for _ in range(300):
            stub.Check(docs())
        for _ in range(20):
            stub.Check(docs(), metadata=traceparent(sampled=False))  # the caller's "no"
        stub.Check(docs(), metadata=traceparent(sampled=True))
    spans = exporter.get_finished_spans()
    assert 2 <= len(spans) <= 2 * 15  # the sampled parent's 2, and ~3 of the 300 calls
    # Only the sampled calls' spans were built: a dropped call built no span object (the
    # SDK's start_span gives each of them a span id, 320 here).
    assert ids.span_ids == len(spans)


class _FirstIds(RandomIdGenerator):
    """`trace_id` first, random ids after it: a trace id asked for twice differs."""

    def __init__(self, trace_id: int) -> None:
        self.trace_id: int | None = trace_id

    def generate_trace_id(self) -> int:
        first, self.trace_id = self.trace_id, None
        return super().generate_trace_id() if first is None else first


_PARENTS = st.sampled_from(["none", "sampled", "unsampled", "malformed"])


def test_the_sdk_sampler_decides_as_if_start_span_had_asked_it() -> None:
    """For every sampler `OTEL_TRACES_SAMPLER` may name, any ratio, trace id and incoming
    context: the RPC hook records a span exactly when the SDK's own `start_span` would,
    with the same trace id."""
    seen: collections.Counter[tuple[str, bool]] = collections.Counter()

    @settings(max_examples=600, deadline=None)
    @given(
        sampler_name=st.sampled_from(sorted(SAMPLERS)),
        ratio=st.floats(0.0, 1.0),
        trace_id=st.integers(1, 2**128 - 1),
        parent=_PARENTS,
        parent_trace=st.integers(1, 2**128 - 1),
    )
    def agree(
        sampler_name: str, ratio: float, trace_id: int, parent: str, parent_trace: int
    ) -> None:
        # As `pdp serve` builds it: the sampler, and for a ratio sampler the root ratio
        # the hook decides root calls by.
        config = TraceConfig.from_env(
            {
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_TRACES_SAMPLER": sampler_name,
                "OTEL_TRACES_SAMPLER_ARG": repr(ratio),
            }
        )
        sampler = config.sampler
        metadata: tuple[tuple[str, str], ...] = ()
        if parent != "none":
            flags = "01" if parent == "sampled" else "00"
            header = f"00-{parent_trace:032x}-{PARENT_ID}-{flags}"
            metadata = (("traceparent", header if parent != "malformed" else header.upper()),)
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            sampler=sampler, id_generator=_FirstIds(trace_id), shutdown_on_exit=False
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with Tracing(provider, root_ratio=config.root_ratio).rpc(
            "Check", _Context(metadata)
        ) as span:
            pass
        # The SDK alone, same sampler and ids, given the same parent.
        reference = TracerProvider(
            sampler=sampler, id_generator=_FirstIds(trace_id), shutdown_on_exit=False
        ).get_tracer("reference")
        carrier = dict(metadata)
        expected = reference.start_span(
            CHECK,
            propagate.extract(carrier) if carrier else None,
            SpanKind.SERVER,
            {
                "rpc.system": "grpc",
                "rpc.service": "pdp.v1.AuthorizationService",
                "rpc.method": "Check",
            },
        )
        recorded = expected.is_recording()
        seen[(parent, recorded)] += 1
        assert (span is not NO_SPAN) == recorded
        finished = exporter.get_finished_spans()
        assert len(finished) == int(recorded)
        if recorded:
            ctx = finished[0].context
            assert ctx is not None
            assert ctx.trace_id == expected.get_span_context().trace_id

    agree()
    # The generator reached every kind of call, recorded and dropped (25-114 each of 600
    # in one run).
    for parent in ("none", "sampled", "unsampled", "malformed"):
        for recorded in (True, False):
            assert seen[(parent, recorded)] >= 10, seen


def test_sampling_one_in_twenty_keeps_rpc_and_decision_spans_together() -> None:
    config = TraceConfig.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.05",
        }
    )
    tracing, exporter = recorded(config.sampler)
    calls = 400
    with in_process_server(tracing) as stub:
        for _ in range(calls):
            stub.Check(docs())
        stub.Check(docs(), metadata=traceparent(sampled=True))  # the caller's choice wins
        stub.Check(docs(), metadata=traceparent(sampled=False))
    spans = exporter.get_finished_spans()
    rpcs = [s for s in spans if s.name == CHECK]
    decisions = [s for s in spans if s.name == "pdp.check"]
    assert 1 + 3 <= len(rpcs) <= 1 + 60  # 20 expected of 400; binomial tails far outside
    # Every decision span belongs to a sampled RPC span and vice versa.
    assert sorted(d.parent.span_id for d in decisions if d.parent) == sorted(
        r.context.span_id for r in rpcs if r.context
    )
    assert len(decisions) == len(rpcs)
    continued = [r for r in rpcs if r.context and format(r.context.trace_id, "032x") == TRACE_ID]
    assert len(continued) == 1


def test_tracing_off_is_a_no_op_that_reads_no_metadata() -> None:
    off = TraceConfig.from_env({}).start()
    assert not off.enabled
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert not TraceConfig.from_env(disabled).start().enabled
    context = _Context(traceparent())
    assert off.rpc("Check", context) is NO_SPAN
    assert off.decision("docs") is NO_SPAN and off.decision("docs", batch=True) is NO_SPAN
    assert context.reads == 0


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1%",
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1.5",
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "soon"},
            "OTEL_BSP_SCHEDULE_DELAY",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_MAX_QUEUE_SIZE": "100"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",  # 512 by default: more than the queue holds
        ),
    ],
)
def test_a_bad_otel_setting_is_refused_by_name(env: dict[str, str], name: str) -> None:
    with pytest.raises(TraceConfigError) as err:
        TraceConfig.from_env(env)
    assert err.value.name == name


def test_pdp_serve_refuses_a_bad_otel_setting_before_serving() -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio"}
    env["OTEL_TRACES_SAMPLER_ARG"] = "one percent"
    proc = subprocess.run(
        [*pdp_command(), "serve", "--listen", "127.0.0.1:0", "--no-watch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "invalid setting OTEL_TRACES_SAMPLER_ARG" in proc.stderr
    assert "listening" not in proc.stdout + proc.stderr


class _Collector(otlp_grpc.TraceServiceServicer):
    """An OTLP collector's trace endpoint that keeps what it receives."""

    def __init__(self) -> None:
        self.requests: list[otlp.ExportTraceServiceRequest] = []

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: Any
    ) -> otlp.ExportTraceServiceResponse:
        self.requests.append(request)
        return otlp.ExportTraceServiceResponse()


@contextmanager
def collector() -> Iterator[tuple[str, dict[str, tuple[Any, Any]]]]:
    """An OTLP collector on loopback: its endpoint, and the spans it received by name
    (filled in when the block ends)."""
    received = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    spans: dict[str, tuple[Any, Any]] = {}
    try:
        yield f"http://127.0.0.1:{port}", spans
    finally:
        server.stop(None)
    for req in received.requests:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans.update((s.name, (rs.resource, s)) for s in ss.spans)


def serve_and_check(env: dict[str, str]) -> None:
    """`pdp serve` with `env`: one traced Check, then stopped (spans are flushed on the way out)."""
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"], env=env) as srv:
        with srv.channel() as channel:
            assert srv.stub(channel).Check(docs(), metadata=traceparent()).decision_id


def test_otlp_export_from_pdp_serve_configured_by_otel_variables() -> None:
    with collector() as (endpoint, spans):
        serve_and_check(
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_SERVICE_NAME": "pdp-under-test",
            }
        )
    assert set(spans) == {CHECK, "pdp.check"}
    resource, rpc = spans[CHECK]
    assert {a.key: a.value.string_value for a in resource.attributes}[
        "service.name"
    ] == "pdp-under-test"
    assert rpc.trace_id.hex() == TRACE_ID and rpc.parent_span_id.hex() == PARENT_ID
    assert spans["pdp.check"][1].parent_span_id == rpc.span_id


def test_export_is_off_unless_an_exporter_is_named() -> None:
    # OpenTelemetry's own default exporter is otlp: a PDP sends nothing unless asked.
    with collector() as (endpoint, spans):
        serve_and_check(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "always_on"}
        )
    assert spans == {}


def test_an_absent_collector_neither_slows_decisions_nor_holds_shutdown() -> None:
    # A port that refuses connections: bound, never listening, held for the whole test.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead.getsockname()[1]}",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "20",  # export attempts (and their retries) at once
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",  # and the queue overflows: spans are dropped
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        }
        with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"], env=env) as srv:
            with srv.channel() as channel:
                stub = srv.stub(channel)
                start = time.monotonic()
                decided = sum(
                    stub.Check(docs(), timeout=10).decision == pb.DECISION_ALLOW for _ in range(300)
                )
                elapsed = time.monotonic() - start
            assert decided == 300
            # ~1 s here; an export on the request path waits out the exporter's
            # retries: the first call exceeds its 10 s deadline.
            assert elapsed < 30, elapsed
            start = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(timeout=60)
            stopping = time.monotonic() - start
        assert srv.proc.returncode == 0, srv.log()
        # ~2.4 s: the flush is bounded (2 s); unbounded, the retries held it 30 s.
        assert stopping < 12, (stopping, srv.log())
