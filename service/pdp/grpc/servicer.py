"""AuthorizationService: convert the request, ask the engine, convert the result.

Methods run on the server's worker threads (a synchronous `grpc.server`): each call is
one engine entry point, `Engine.check` or `Engine.check_batch`, between two conversions.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.decision_log import DecisionLogger
from pdp.engine import Engine
from pdp.errors import DeadlineExceeded, InvalidRequest, RateLimited, TokenRejected
from pdp.grpc import convert
from pdp.grpc.status import error_status, handle_errors
from pdp.grpc.tls import client_identity
from pdp.grpc.wire import Kept, Undecodable, decoded, exact_bytes
from pdp.jwt_identity import TokenVerifier
from pdp.metrics import OTHER, Metrics, NoMetrics
from pdp.model import DEFAULT_TENANT, CheckInput, CheckResult, TokenPrincipal
from pdp.rate_limit import RateLimits
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
        rate_limits: RateLimits | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._engine = engine
        self._rate_limits = rate_limits  # None when off: the request path checks only that
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
        self,
        request: pb.CheckRequest | Kept[pb.CheckRequest] | Undecodable,
        context: grpc.ServicerContext,
        metadata: Sequence[tuple[str, Any]] | None,
        client: str | None,
    ) -> pb.CheckResponse:
        started = time.perf_counter()
        exact = exact_bytes(request)
        request = decoded(request)
        if self._rate_limits is not None:
            self._admit(request.tenant, context, client, 1)
        if exact is not None and (request.token or convert.bypass_cache(request)):
            exact = None  # a token is valid for a time; a bypass asks for a fresh decision
        hit = None if exact is None else self._engine.cached_exact(request.tenant, exact)
        if hit is None:
            self._take_slot(context)
            try:
                check, result = self._decide(request, exact)
            finally:
                self._slots.release()
        else:  # found by the request's bytes: no deciding slot needed, nothing converted
            check, result = hit
            with self.tracing.decision(request.tenant) as span:
                span.check(check, result)
        if self._decision_log is not None:
            self._decision_log.check(request.tenant, check, result, started, metadata)
        self.metrics.decided(request.tenant, check, result)
        return convert.check_response(result)

    def _take_slot(self, context: grpc.ServicerContext) -> None:
        """Wait for a deciding slot; a call whose deadline passed while it waited is not
        decided (DeadlineExceeded, the slot given back). A call that did not wait is not
        asked: the common path costs one non-blocking acquire."""
        if self._slots.acquire(blocking=False):
            return
        self._slots.acquire()
        if _expired(context):
            self._slots.release()
            raise DeadlineExceeded(
                "the deadline passed while the call waited for its turn to decide"
            )

    def _admit(
        self, tenant: str, context: grpc.ServicerContext, client: str | None, cost: int
    ) -> None:
        """Charge the call to its client and tenant budgets, before it waits for a slot.

        The tenant budget is keyed by a served tenant's name, and every other name shares
        one `_other` bucket: a caller's made-up names never become keys of the table (its
        size is capped, not its keys' length), and the name is capped first anyway."""
        limits = self._rate_limits
        assert limits is not None
        convert.cap_tenant(tenant)
        if client is None and limits.client is not None:
            client = client_identity(context)
        try:
            limits.admit(self._bucket(tenant), client, cost)
        except RateLimited as exc:
            self.metrics.rate_limited(tenant, exc.limit)
            raise

    def _bucket(self, tenant: str) -> str:
        name = tenant or DEFAULT_TENANT
        snapshot = self._engine.snapshot
        return name if snapshot is not None and name in snapshot.bundles else OTHER

    def _decide(
        self, request: pb.CheckRequest, exact: bytes | None
    ) -> tuple[CheckInput, CheckResult]:
        check = convert.check_input(request, self._limits, self._token(request))
        bypass = convert.bypass_cache(request)
        with self.tracing.decision(request.tenant) as span:
            result = self._engine.check(request.tenant, check, bypass_cache=bypass, exact=exact)
            span.check(check, result)
        return check, result

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
        self,
        request: pb.CheckRequest | Kept[pb.CheckRequest] | Undecodable,
        context: grpc.ServicerContext,
    ) -> pb.CheckResponse:
        return self._check(request, context, context.invocation_metadata(), None)

    @handle_errors
    def CheckBatch(
        self, request: pb.CheckBatchRequest | Undecodable, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        request = decoded(request)
        if len(request.items) > self._max_batch_items:
            raise InvalidRequest(
                "items", f"{len(request.items)} items exceed the limit of {self._max_batch_items}"
            )
        if self._rate_limits is not None:
            self._admit(request.tenant, context, None, len(request.items))
        self._take_slot(context)
        try:
            return self._batch(request, context)
        finally:
            self._slots.release()

    def _batch(
        self, request: pb.CheckBatchRequest, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        started = time.perf_counter()
        inputs = convert.batch_inputs(request, self._limits, self._token(request))
        bypass = convert.bypass_cache(request)
        with self.tracing.decision(request.tenant, batch=True) as span:
            try:
                results = self._engine.check_batch(
                    request.tenant,
                    inputs,
                    bypass_cache=bypass,
                    expired=functools.partial(_expired, context),
                )
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
        request_iterator: Iterable[pb.CheckRequest | Kept[pb.CheckRequest] | Undecodable],
        context: grpc.ServicerContext,
    ) -> Iterator[pb.CheckStreamResponse]:
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._max_check_streams} CheckStream streams are open, the limit "
                "(max_check_streams); use Check or retry later",
            )
        metadata = context.invocation_metadata()  # the stream's, for every record
        limits = self._rate_limits
        client = client_identity(context) if limits and limits.client else None  # one per stream
        try:
            for request in request_iterator:
                yield self._stream_answer(request, context, metadata, client)
        finally:
            self._streams.release()

    def _stream_answer(
        self,
        request: pb.CheckRequest | Kept[pb.CheckRequest] | Undecodable,
        context: grpc.ServicerContext,
        metadata: Sequence[tuple[str, Any]] | None,
        client: str | None,
    ) -> pb.CheckStreamResponse:
        """One request of a stream decided, or the status Check would have ended with;
        counted and timed in the call metrics as one `CheckStream` call each, so the error
        rate sees in-band errors too."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return pb.CheckStreamResponse(result=self._check(request, context, metadata, client))
        except Exception as exc:
            code, details = error_status(exc, "CheckStream")
            return pb.CheckStreamResponse(error=pb.CheckError(code=code.value[0], message=details))
        finally:
            self.metrics.rpc("CheckStream", code.name, time.perf_counter() - start)


def _expired(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()  # None: the caller set no deadline
    return remaining is not None and remaining <= 0
