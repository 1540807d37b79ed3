"""The one table from the core's error codes to gRPC status codes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
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
}

MAX_DETAILS = 2000  # status details travel in HTTP/2 trailers, which peers cap at 8-16 KiB

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]


def handle_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn core errors into their status; anything unexpected into INTERNAL (never a decision).

    Every call is counted and timed by the servicer's `metrics` with the status it ends in."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        start = time.perf_counter()
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise: the caller went away
        try:
            response = await method(self, request, context)
            code = grpc.StatusCode.OK
            return response
        except PdpError as exc:
            code = GRPC_STATUS[exc.code]
            details = exc.message
            if len(details) > MAX_DETAILS:
                details = details[: MAX_DETAILS - 14] + " …(truncated)"
            await context.abort(code, details)
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(code, "internal error; the request was not decided")
        finally:
            self.metrics.rpc(method.__name__, code.name, time.perf_counter() - start)
        raise AssertionError("unreachable: abort() raises")

    return wrapper
