"""AuthorizationService: convert the request, ask the engine, convert the result."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.engine import Engine, evaluate
from pdp.errors import InvalidRequest
from pdp.grpc import convert
from pdp.grpc.status import handle_errors
from pdp.grpc.wire import Undecodable, decoded
from pdp.metrics import Metrics, NoMetrics
from pdp.model import CheckResult, RequestEntities

SLICE = 8  # batch items decided between two yields to the event loop


class AuthorizationServicer(pb_grpc.AuthorizationServiceServicer):
    def __init__(
        self,
        engine: Engine,
        max_batch_items: int,
        limits: convert.Limits = convert.DEFAULT_LIMITS,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self.metrics = metrics or NoMetrics()  # `handle_errors` times every call with it
        self._max_batch_items = max_batch_items
        self._limits = limits

    @handle_errors
    async def Check(
        self,
        request: pb.CheckRequest | Undecodable,
        context: grpc.aio.ServicerContext[pb.CheckRequest, pb.CheckResponse],
    ) -> pb.CheckResponse:
        request = decoded(request)
        check = convert.check_input(request, self._limits)
        result = self._engine.check(request.tenant, check)
        self.metrics.decided(request.tenant, check, result)
        return convert.check_response(result)

    @handle_errors
    async def CheckBatch(
        self,
        request: pb.CheckBatchRequest | Undecodable,
        context: grpc.aio.ServicerContext[pb.CheckBatchRequest, pb.CheckBatchResponse],
    ) -> pb.CheckBatchResponse:
        request = decoded(request)
        if len(request.items) > self._max_batch_items:
            raise InvalidRequest(
                "items", f"{len(request.items)} items exceed the limit of {self._max_batch_items}"
            )
        inputs = convert.batch_inputs(request, self._limits)
        bundle = self._engine.bundle(request.tenant)  # every item on the same snapshot
        parsed: dict[RequestEntities, Any] = {}
        results: list[CheckResult] = []
        try:
            for start in range(0, len(inputs), SLICE):
                if start:
                    # Let other calls run between slices: a large batch holds the event
                    # loop (and the GIL) for milliseconds otherwise.
                    await asyncio.sleep(0)
                chunk = inputs[start : start + SLICE]
                results += evaluate(bundle, chunk, parsed=parsed, first_index=start)
        except InvalidRequest as exc:
            raise convert.batch_error_field(request, exc) from exc
        self.metrics.decided_batch(request.tenant, inputs, results)
        return pb.CheckBatchResponse(results=[convert.check_response(r) for r in results])
