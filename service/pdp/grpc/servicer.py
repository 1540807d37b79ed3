"""AuthorizationService: convert the request, ask the engine, convert the result.

Methods run on the server's worker threads (a synchronous `grpc.server`): each call is
one engine entry point, `Engine.check` or `Engine.check_batch`, between two conversions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.decision_log import DecisionLogger
from pdp.engine import Engine
from pdp.errors import InvalidRequest, TokenRejected
from pdp.grpc import convert
from pdp.grpc.status import error_status, handle_errors
from pdp.grpc.wire import Undecodable, decoded
from pdp.jwt_identity import TokenVerifier
from pdp.metrics import Metrics, NoMetrics
from pdp.model import TokenPrincipal
from pdp.tracing import NO_TRACING, Tracing


class AuthorizationServicer(pb_grpc.AuthorizationServiceServicer):
    def __init__(
        self,
        engine: Engine,
        max_batch_items: int,
        limits: convert.Limits = convert.DEFAULT_LIMITS,
        max_check_streams: int = 1,
        tracing: Tracing = NO_TRACING,
        decision_log: DecisionLogger | None = None,
        metrics: Metrics | None = None,
        *,
        deciding: int = 4,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._engine = engine
        self._tokens = tokens  # validates a request's `token`; None: tokens are refused
        # Calls deciding at once (`threads`): cedarpy holds the GIL, so more runnable
        # threads only contend for it; a call waiting for its message holds no slot.
        self._slots = threading.BoundedSemaphore(deciding)
        self._decision_log = decision_log
        self.metrics = metrics or NoMetrics()  # `handle_errors` times every call with it
        self._max_batch_items = max_batch_items
        self._limits = limits
        self.tracing = tracing  # read by `handle_errors` too: the span of each call
        # An open stream holds a worker thread for as long as it lasts: capped below the
        # thread count, so unary calls always have threads left.
        self._max_check_streams = max_check_streams
        self._streams = threading.BoundedSemaphore(max_check_streams)

    def _check(
        self, request: pb.CheckRequest | Undecodable, metadata: Sequence[tuple[str, Any]] | None
    ) -> pb.CheckResponse:
        with self._slots:
            return self._decide(request, metadata)

    def _decide(
        self, request: pb.CheckRequest | Undecodable, metadata: Sequence[tuple[str, Any]] | None
    ) -> pb.CheckResponse:
        started = time.perf_counter()
        request = decoded(request)
        check = convert.check_input(request, self._limits, self._token(request))
        bypass = convert.bypass_cache(request)
        with self.tracing.decision(request.tenant) as span:
            result = self._engine.check(request.tenant, check, bypass_cache=bypass)
            span.check(check, result)
        if self._decision_log is not None:
            self._decision_log.check(request.tenant, check, result, started, metadata)
        self.metrics.decided(request.tenant, check, result)
        return convert.check_response(result)

    def _token(self, request: pb.CheckRequest | pb.CheckBatchRequest) -> TokenPrincipal | None:
        """The principal the request's bearer token names, validated; None without one."""
        token = request.token
        if not token:
            return None
        if request.HasField("principal"):
            raise InvalidRequest("principal", "set with token: name the principal by one of them")
        if self._tokens is None:
            raise TokenRejected(
                "this server accepts no tokens (no jwt_jwks_file or jwt_jwks_url is configured)"
            )
        return self._tokens.principal(token)

    @handle_errors
    def Check(
        self, request: pb.CheckRequest | Undecodable, context: grpc.ServicerContext
    ) -> pb.CheckResponse:
        return self._check(request, context.invocation_metadata())

    @handle_errors
    def CheckBatch(
        self, request: pb.CheckBatchRequest | Undecodable, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        with self._slots:
            return self._batch(request, context)

    def _batch(
        self, request: pb.CheckBatchRequest | Undecodable, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        started = time.perf_counter()
        request = decoded(request)
        if len(request.items) > self._max_batch_items:
            raise InvalidRequest(
                "items", f"{len(request.items)} items exceed the limit of {self._max_batch_items}"
            )
        inputs = convert.batch_inputs(request, self._limits, self._token(request))
        bypass = convert.bypass_cache(request)
        with self.tracing.decision(request.tenant, batch=True) as span:
            try:
                results = self._engine.check_batch(request.tenant, inputs, bypass_cache=bypass)
            except InvalidRequest as exc:
                raise convert.batch_error_field(request, exc) from exc
            span.batch(inputs, results)
        if self._decision_log is not None:
            self._decision_log.batch(
                request.tenant, inputs, results, started, context.invocation_metadata()
            )
        self.metrics.decided_batch(request.tenant, inputs, results)
        return pb.CheckBatchResponse(results=[convert.check_response(r) for r in results])

    def CheckStream(
        self,
        request_iterator: Iterable[pb.CheckRequest | Undecodable],
        context: grpc.ServicerContext,
    ) -> Iterator[pb.CheckStreamResponse]:
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._max_check_streams} CheckStream streams are open, the limit "
                "(max_check_streams); use Check or retry later",
            )
        metadata = context.invocation_metadata()  # the stream's, for every record
        try:
            for request in request_iterator:
                yield self._stream_answer(request, metadata)
        finally:
            self._streams.release()

    def _stream_answer(
        self, request: pb.CheckRequest | Undecodable, metadata: Sequence[tuple[str, Any]] | None
    ) -> pb.CheckStreamResponse:
        """One request of a stream decided, or the status Check would have ended with;
        counted and timed in the call metrics as one `CheckStream` call each, so the error
        rate sees in-band errors too."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return pb.CheckStreamResponse(result=self._check(request, metadata))
        except Exception as exc:
            code, details = error_status(exc, "CheckStream")
            return pb.CheckStreamResponse(error=pb.CheckError(code=code.value[0], message=details))
        finally:
            self.metrics.rpc("CheckStream", code.name, time.perf_counter() - start)
