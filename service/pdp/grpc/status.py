"""The one table from the core's error codes to gRPC status codes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from pdp.errors import Code, PdpError

log = logging.getLogger(__name__)

GRPC_STATUS: dict[Code, grpc.StatusCode] = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}

MAX_DETAILS = 2000  # status details travel in HTTP/2 trailers, which peers cap at 8-16 KiB

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.ServicerContext], Resp]


def error_status(exc: Exception, where: str) -> tuple[grpc.StatusCode, str]:
    """The status of a failed call: a core error's own, anything unexpected INTERNAL (never
    a decision; logged with its traceback, so call this in the `except` block)."""
    if isinstance(exc, PdpError):
        details = exc.message
        if len(details) > MAX_DETAILS:
            details = details[: MAX_DETAILS - 14] + " …(truncated)"
        return GRPC_STATUS[exc.code], details
    log.exception("unexpected error in %s", where)
    return grpc.StatusCode.INTERNAL, "internal error; the request was not decided"


def handle_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """End a call that raised with its status (`error_status`).

    The call is traced by the servicer's `tracing` (`pdp.tracing`) and counted and timed by
    its `metrics`, each with the status the call ends in.
    """

    @functools.wraps(method)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        start = time.perf_counter()
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise: the caller went away
        try:
            # The call's span ends before the status is sent, as it does before a response.
            with self.tracing.rpc(method.__name__, context) as span:
                try:
                    response = method(self, request, context)
                    code = grpc.StatusCode.OK
                    return response
                except Exception as exc:
                    code, details = error_status(exc, method.__name__)
                span.status(code)
            context.abort(code, details)
        finally:
            self.metrics.rpc(method.__name__, code.name, time.perf_counter() - start)
        raise AssertionError("unreachable: abort() raises")

    return wrapper
