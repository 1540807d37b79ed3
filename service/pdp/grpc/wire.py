"""Register the service with request decoding that cannot fail before the handler runs.

grpc's own deserializer raises on bytes that are not the message (or hold invalid UTF-8 in
a string field); grpc then answers UNKNOWN and logs a traceback per call. Here a failed
decode becomes an `Undecodable` marker, and the handler answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from pdp._proto.v1 import authorization_pb2 as pb
from pdp.errors import InvalidRequest

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """Bytes that did not decode as the `message` type; `reason` is protobuf's."""

    message: str
    reason: str


def decoded(request: M | Undecodable) -> M:
    """The request, or INVALID_ARGUMENT if its bytes did not decode."""
    if isinstance(request, Undecodable):
        raise InvalidRequest("request", f"not a valid {request.message}: {request.reason}")
    return request


def lenient(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def deserialize(data: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:  # also invalid UTF-8 and protobuf's nesting limit
            return Undecodable(cls.DESCRIPTOR.full_name, str(exc) or "cannot decode")

    return deserialize


Unary = dict[str, tuple[Any, type[Message], type[Message]]]  # name -> (method, req, resp)


def add_authorization_service(servicer: Any, server: grpc.Server) -> None:
    """Like the generated `add_AuthorizationServiceServicer_to_server`, decoding leniently."""
    methods: Unary = {
        "Check": (servicer.Check, pb.CheckRequest, pb.CheckResponse),
        "CheckBatch": (servicer.CheckBatch, pb.CheckBatchRequest, pb.CheckBatchResponse),
    }
    stream = grpc.stream_stream_rpc_method_handler(
        servicer.CheckStream,
        request_deserializer=lenient(pb.CheckRequest),
        response_serializer=pb.CheckStreamResponse.SerializeToString,
    )
    service = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name
    add_unary_service(server, service, methods, {"CheckStream": stream})


def add_unary_service(
    server: grpc.Server,
    service: str,
    methods: Unary,
    others: dict[str, grpc.RpcMethodHandler[Any, Any]] | None = None,
) -> None:
    """Register `service`'s unary `methods` (and any `others`), decoding leniently."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=lenient(request),
            response_serializer=response.SerializeToString,
        )
        for name, (method, request, response) in methods.items()
    }
    handlers.update(others or {})
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    # As the generated code does: registered methods skip the generic lookup per call (the
    # grpc stubs do not declare it on grpc.Server yet).
    server.add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]
