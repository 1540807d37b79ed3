"""OpenTelemetry traces: a span per RPC and one per decision (or per batch).

Spans follow OpenTelemetry's RPC semantic conventions: a SERVER span named
`pdp.v1.AuthorizationService/Check` with `rpc.system`, `rpc.service`, `rpc.method` and
`rpc.grpc.status_code`, continuing the caller's W3C trace context (`traceparent`
metadata); inside it an INTERNAL span `pdp.check` (or `pdp.check_batch`) with the
tenant, action, decision, bundle version and cache hit. Spans never carry principal,
resource or context values: those are the decision log's, masked there.

The hooks are plain synchronous context managers, called from `pdp.grpc.status` and the
servicer, so they sit the same under grpc.aio and the threaded `grpc.server`. The gRPC
instrumentation package's interceptors are not used: their span name keeps the leading
slash of the gRPC path (`/pdp.v1.AuthorizationService/Check`, against the conventions),
they parse peer and metadata into deprecated `net.peer.*` attributes and wrap the
servicer context in a proxy on every call even when the sampler drops the span, and
they would trace health checks too.

Tracing is off unless `OTEL_TRACES_EXPORTER` names an exporter; then it is configured by
the standard `OTEL_*` variables (sampler, service name, OTLP endpoint, batch processor).
Off, every hook is a shared no-op object: no span, no metadata read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from pdp.errors import PdpError
from pdp.masking import mask_text
from pdp.model import DEFAULT_TENANT, CheckInput, CheckResult, Decision

log = logging.getLogger(__name__)

SERVICE = "pdp.v1.AuthorizationService"
DEFAULT_SERVICE_NAME = "cedar-pdp"
# How long stopping may wait for queued spans to reach the collector: a collector that is
# down must not hold a shutdown for the exporter's own timeouts and retries (~20 s).
FLUSH_SECONDS = 2.0
MAX_ACTION_CHARS = 256  # a caller's action id, decided with validation off, may be long

# gRPC status codes that mark a SERVER span as failed (semantic conventions for gRPC);
# the others (INVALID_ARGUMENT, NOT_FOUND, ...) are the caller's error, recorded in
# `rpc.grpc.status_code` with the span status left unset.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

EXPORTERS = ("otlp", "console")
SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "always_on": lambda _: ALWAYS_ON,
    "always_off": lambda _: ALWAYS_OFF,
    "traceidratio": TraceIdRatioBased,
    "parentbased_always_on": lambda _: ParentBased(ALWAYS_ON),
    "parentbased_always_off": lambda _: ParentBased(ALWAYS_OFF),
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


class TraceConfigError(ValueError):
    """An `OTEL_*` variable with a value the PDP refuses; `name` is the variable."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class HasMetadata(Protocol):
    """What the RPC hook reads of a servicer context (aio or threaded)."""

    def invocation_metadata(self) -> Any: ...


class RpcSpan(Protocol):
    def __enter__(self) -> RpcSpan: ...
    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def status(self, code: grpc.StatusCode) -> None:
        """The call ends with `code` (set before `context.abort`, which raises)."""


class DecisionSpan(Protocol):
    def __enter__(self) -> DecisionSpan: ...
    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def check(self, request: CheckInput, result: CheckResult) -> None: ...
    def batch(self, requests: Sequence[CheckInput], results: Sequence[CheckResult]) -> None: ...


class _NoSpan:
    """Every hook when tracing is off: one shared object, nothing recorded."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def status(self, code: grpc.StatusCode) -> None:
        return None

    def check(self, request: CheckInput, result: CheckResult) -> None:
        return None

    def batch(self, requests: Sequence[CheckInput], results: Sequence[CheckResult]) -> None:
        return None


NO_SPAN = _NoSpan()


class _InSampled(threading.local):
    on = False  # per thread: a sampled `_RpcSpan` is current


class Tracing:
    """The hooks' entry points; `Tracing.off()` when no exporter is configured."""

    def __init__(self, provider: TracerProvider | None, *, root_ratio: float | None = None) -> None:
        """`root_ratio`: the ratio the provider's sampler samples calls without a parent at,
        when it is one of the SDK's trace-id-ratio samplers (`TraceConfig` knows); such a
        call is then dropped by comparing its new trace id with the SDK's own bound, the
        test `TraceIdRatioBased` makes, without asking the sampler for a verdict object."""
        self._provider = provider
        self._tracer = provider.get_tracer("pdp") if provider is not None else None
        # The SDK's own sampler, asked before any span is built (`rpc`); None when the
        # tracer is not the SDK's (a disabled SDK hands out a no-op tracer).
        self._sampler: Sampler | None = None
        self._ids: _HandedIds | None = None
        if isinstance(self._tracer, SdkTracer):
            self._sampler = self._tracer.sampler
            self._ids = _HandedIds(self._tracer.id_generator)
            self._tracer.id_generator = self._ids
        self._root_bound = (
            None
            if root_ratio is None or self._ids is None
            else TraceIdRatioBased.get_bound_for_rate(root_ratio)
        )
        self._rpc_attributes: dict[str, tuple[str, dict[str, str]]] = {}
        # Whether this thread is inside a sampled RPC span (`_RpcSpan` sets it while
        # current): the decision hook asks it instead of OpenTelemetry's context, six
        # Python calls per decision, almost always to learn that the call was dropped.
        self._in_sampled = _InSampled()
        # The metadata keys the propagators read (OTEL_PROPAGATORS; by default traceparent,
        # tracestate, baggage): a call with none of them starts a new trace unparsed.
        self._fields = frozenset(propagate.get_global_textmap().fields)

    @staticmethod
    def off() -> Tracing:
        return Tracing(None)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def rpc(self, method: str, context: HasMetadata) -> RpcSpan:
        """The SERVER span of one call of `method` (e.g. "Check"), current while open if
        sampled. A call the sampler drops gets the shared no-op span: the sampler is asked
        first, with the trace id `start_span` would use, so nothing is built for it."""
        tracer = self._tracer
        if tracer is None:
            return NO_SPAN
        named = self._rpc_attributes.get(method)
        if named is None:
            named = self._rpc_attributes.setdefault(
                method,
                (
                    f"{SERVICE}/{method}",
                    {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method},
                ),
            )
        name, attributes = named
        metadata = context.invocation_metadata() or ()
        parent = None  # a new trace, unless the caller sent its context (W3C traceparent)
        carried = False  # a loop, not any(): no generator built per call
        for key, _ in metadata:
            if key in self._fields:
                carried = True
                break
        if carried:
            parent = propagate.extract(tuple(metadata), getter=_GETTER)
        elif self._root_bound is not None and self._ids is not None:
            # A root call (nothing current: an unsampled call is never made current): the
            # ratio samplers' verdict is `TraceIdRatioBased`'s test on the new trace id.
            root_id = self._ids.new_trace_id()
            if root_id & TraceIdRatioBased.TRACE_ID_LIMIT >= self._root_bound:
                return NO_SPAN
            return _RpcSpan(tracer, self._ids, name, attributes, None, root_id, self._in_sampled)
        handed = None
        if self._sampler is not None and self._ids is not None:
            # What `start_span` does before it builds anything: the parent's trace id, or
            # a new one (handed on to `start_span` if sampled), then the sampler's verdict.
            parent_span = trace.get_current_span(parent).get_span_context()
            if parent_span.is_valid:
                trace_id = parent_span.trace_id
            else:
                trace_id = handed = self._ids.new_trace_id()
            verdict = self._sampler.should_sample(
                parent, trace_id, name, SpanKind.SERVER, attributes, ()
            )
            if not verdict.decision.is_recording():  # type: ignore[no-untyped-call]
                return NO_SPAN
        return _RpcSpan(tracer, self._ids, name, attributes, parent, handed, self._in_sampled)

    def decision(self, tenant: str, *, batch: bool = False) -> DecisionSpan:
        """The INTERNAL span of one decision (or one batch), a child of the current span."""
        # Not inside a sampled RPC span (tracing off, or the sampler dropped the call):
        # nothing to record, and no second sampling decision to pay for.
        if self._tracer is None or not self._in_sampled.on:
            return NO_SPAN
        return _DecisionSpan(self._tracer, tenant or DEFAULT_TENANT, batch)

    def shutdown(self, timeout: float = FLUSH_SECONDS) -> None:
        """Export what is queued, waiting at most `timeout` seconds."""
        provider = self._provider
        if provider is None:
            return
        done = threading.Thread(target=provider.shutdown, name="pdp-trace-flush", daemon=True)
        done.start()
        done.join(timeout)
        if done.is_alive():
            log.warning("trace export did not finish within %.1fs; queued spans dropped", timeout)


NO_TRACING = Tracing.off()


class _MetadataGetter(Getter[Iterable[tuple[str, Any]]]):
    """Reads propagation headers (`traceparent`, `tracestate`, ...) from gRPC metadata."""

    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


class _HandedIds(IdGenerator):
    """The tracer's id generator, able to hand `start_span` the trace id the sampler was
    already asked about (`Tracing.rpc`), so the SDK's second verdict is on the same id."""

    def __init__(self, ids: IdGenerator) -> None:
        self._ids = ids
        self._handed = threading.local()  # a call's hook runs on one thread, no await

    def new_trace_id(self) -> int:
        return self._ids.generate_trace_id()

    @contextmanager
    def handing(self, trace_id: int | None) -> Iterator[None]:
        self._handed.trace_id = trace_id
        try:
            yield
        finally:
            self._handed.trace_id = None

    def generate_trace_id(self) -> int:
        handed: int | None = getattr(self._handed, "trace_id", None)
        if handed is None:
            return self._ids.generate_trace_id()
        self._handed.trace_id = None
        return handed

    def generate_span_id(self) -> int:
        return self._ids.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return self._ids.is_trace_id_random()


class _RpcSpan:
    __slots__ = ("_tracer", "_ids", "_name", "_attributes", "_parent", "_handed", "_span",
                 "_token", "_code", "_in_sampled", "_was_in")  # fmt: skip
    _token: Token[Context] | None

    def __init__(
        self,
        tracer: trace.Tracer,
        ids: _HandedIds | None,
        name: str,
        attributes: Mapping[str, str],
        parent: Context | None,
        handed: int | None,
        in_sampled: _InSampled,
    ) -> None:
        self._in_sampled = in_sampled
        self._was_in = False
        self._tracer = tracer
        self._ids = ids
        self._name = name
        self._attributes = attributes
        self._parent = parent
        self._handed = handed
        self._code = grpc.StatusCode.OK

    def __enter__(self) -> _RpcSpan:
        parent = self._parent
        if self._ids is None:
            span = self._start()
        else:
            with self._ids.handing(self._handed):
                span = self._start()
        self._span = span
        # A dropped span is not made current: the decision hook then knows at once that
        # there is nothing to record (the PDP makes no outgoing call to propagate it to).
        self._token = (
            otel_context.attach(trace.set_span_in_context(span, parent))
            if span.is_recording()
            else None
        )
        if self._token is not None:
            self._was_in, self._in_sampled.on = self._in_sampled.on, True
        return self

    def _start(self) -> trace.Span:
        return self._tracer.start_span(self._name, self._parent, SpanKind.SERVER, self._attributes)

    def status(self, code: grpc.StatusCode) -> None:
        self._code = code

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is None:  # sampled out
            return
        span = self._span
        try:
            code = self._code
            if e is not None and code is grpc.StatusCode.OK:
                # Not an abort with a status (which sets one first): the call failed in
                # grpc or was cancelled.
                code = grpc.StatusCode.UNKNOWN
                span.record_exception(e)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        finally:
            self._in_sampled.on = self._was_in
            otel_context.detach(self._token)


def _action(request: CheckInput) -> str:
    """The action as a span attribute: a caller chose it (with `validate_requests` off any
    id is decided), so it is cut and masked as the decision log masks caller values."""
    return mask_text(str(request.action)[:MAX_ACTION_CHARS], [])


class _DecisionSpan:
    __slots__ = ("_tracer", "_tenant", "_batch", "_span")

    def __init__(self, tracer: trace.Tracer, tenant: str, batch: bool) -> None:
        self._tracer = tracer
        self._tenant = tenant
        self._batch = batch

    def __enter__(self) -> _DecisionSpan:
        name = "pdp.check_batch" if self._batch else "pdp.check"
        self._span = self._tracer.start_span(
            name, record_exception=False, set_status_on_exception=False
        )
        return self

    def check(self, request: CheckInput, result: CheckResult) -> None:
        span = self._span
        if not span.is_recording():  # sampled out: no attribute work
            return
        span.set_attributes(
            {
                "pdp.tenant": self._tenant,
                "pdp.action": _action(request),
                "pdp.decision": result.decision.value,
                "pdp.decision_id": result.decision_id,
                "pdp.determining_policies": list(result.determining_policies),
                "pdp.errors": len(result.errors),
                "pdp.cache_hit": result.cache_hit,
                **_version(result),
            }
        )

    def batch(self, requests: Sequence[CheckInput], results: Sequence[CheckResult]) -> None:
        span = self._span
        if not span.is_recording():
            return
        allowed = sum(r.decision is Decision.ALLOW for r in results)
        actions = sorted({_action(r) for r in requests})
        span.set_attributes(
            {
                "pdp.tenant": self._tenant,
                "pdp.batch.items": len(results),
                "pdp.batch.allowed": allowed,
                "pdp.batch.denied": len(results) - allowed,
                "pdp.batch.errors": sum(bool(r.errors) for r in results),
                "pdp.batch.cache_hits": sum(r.cache_hit for r in results),
                "pdp.actions": actions,
                **(_version(results[0]) if results else {}),
            }
        )

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        if e is not None:
            # The type only: a request error's message may quote the caller's values.
            span.set_attribute("error.type", type(e).__name__)
            if not isinstance(e, PdpError):  # not the caller's error: a failure of ours
                span.set_status(Status(StatusCode.ERROR, type(e).__name__))
        span.end()


def _check_batch_processor(env: Mapping[str, str]) -> None:
    """The batch span processor's variables: the SDK would refuse them once serving."""
    sizes = {}
    for var, default in (
        ("OTEL_BSP_SCHEDULE_DELAY", 5000),
        ("OTEL_BSP_EXPORT_TIMEOUT", 30000),
        ("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
    ):
        text = env.get(var, "").strip()
        try:
            sizes[var] = int(text) if text else default
        except ValueError:
            sizes[var] = 0
        if sizes[var] <= 0:
            raise TraceConfigError(var, f"{text!r} is not a positive integer")
    if sizes["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > sizes["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise TraceConfigError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must not exceed OTEL_BSP_MAX_QUEUE_SIZE"
        )


def _version(result: CheckResult) -> dict[str, str]:
    v = result.version
    return {
        "pdp.bundle.name": v.name,
        "pdp.bundle.version": v.version,
        "pdp.bundle.digest": v.digest,
    }


@dataclass(frozen=True)
class TraceConfig:
    """What the `OTEL_*` variables ask for, validated before the server starts."""

    exporters: tuple[str, ...] = ()  # none: tracing is off
    sampler: Sampler = ParentBased(ALWAYS_ON)
    root_ratio: float | None = None  # a ratio sampler's ratio (`Tracing`'s fast path)

    @staticmethod
    def from_env(env: Mapping[str, str]) -> TraceConfig:
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return TraceConfig()
        names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
        exporters = tuple(n for n in names if n and n != "none")
        for name in exporters:
            if name not in EXPORTERS:
                raise TraceConfigError(
                    "OTEL_TRACES_EXPORTER",
                    f"unknown exporter {name!r}; use otlp, console or none",
                )
        if not exporters:
            return TraceConfig()
        for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(var, "").strip()
            if "otlp" in exporters and protocol and protocol != "grpc":
                raise TraceConfigError(var, f"{protocol!r}: only grpc is supported")
        _check_batch_processor(env)
        sampler_name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        make = SAMPLERS.get(sampler_name)
        if make is None:
            raise TraceConfigError(
                "OTEL_TRACES_SAMPLER",
                f"unknown sampler {sampler_name!r}; use one of {sorted(SAMPLERS)}",
            )
        ratio = 1.0
        if sampler_name in RATIO_SAMPLERS and env.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
            # The SDK would fall back to sampling everything on a typo: refuse instead.
            arg = env["OTEL_TRACES_SAMPLER_ARG"].strip()
            try:
                ratio = float(arg)
            except ValueError:
                ratio = -1.0
            if not 0.0 <= ratio <= 1.0:
                raise TraceConfigError(
                    "OTEL_TRACES_SAMPLER_ARG", f"{arg!r} is not a ratio from 0 to 1"
                )
        return TraceConfig(
            exporters, make(ratio), ratio if sampler_name in RATIO_SAMPLERS else None
        )

    def start(self) -> Tracing:
        """The tracing the config asks for: exporters behind a batch span processor."""
        if not self.exporters:
            return Tracing.off()
        return self.tracing([_exporter(name) for name in self.exporters])

    def tracing(self, exporters: Sequence[SpanExporter]) -> Tracing:
        """The hooks over `exporters`, as `start` builds them (benchmarks call this too, so
        they time the path the server runs)."""
        return Tracing(self.provider(exporters), root_ratio=self.root_ratio)

    def provider(self, exporters: Sequence[SpanExporter]) -> TracerProvider:
        # The service is named cedar-pdp unless OTEL_SERVICE_NAME or
        # OTEL_RESOURCE_ATTRIBUTES says otherwise.
        named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
        resource = Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
        # shutdown_on_exit=False: the app flushes within FLUSH_SECONDS; the SDK's atexit
        # hook would wait out the exporter's retries.
        provider = TracerProvider(sampler=self.sampler, resource=resource, shutdown_on_exit=False)
        for exporter in exporters:
            # Spans wait in a bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048) drained by the
            # processor's thread: a slow or absent collector drops spans, never delays a
            # decision.
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return provider


def _exporter(name: str) -> SpanExporter:
    # Imported only when asked for: tracing off costs no import of the exporters.
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, ...
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter()
