"""Register the service with request decoding that cannot fail before the handler runs.

grpc's own deserializer raises on bytes that are not the message (or hold invalid UTF-8 in
a string field); grpc then answers UNKNOWN and logs a traceback per call. Here a failed
decode becomes an `Undecodable` marker, and the handler answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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


@dataclass(frozen=True, slots=True)
class Kept(Generic[M]):
    """A decoded request with the exact bytes it came in: equal bytes are the same
    request, which the decision cache can answer without converting it again."""

    message: M
    data: bytes


def decoded(request: M | Kept[M] | Undecodable) -> M:
    """The request, or INVALID_ARGUMENT if its bytes did not decode."""
    if isinstance(request, Undecodable):
        raise InvalidRequest("request", f"not a valid {request.message}: {request.reason}")
    if isinstance(request, Kept):
        return request.message
    return request


def exact_bytes(request: Any) -> bytes | None:
    """The bytes a request came in, when its deserializer kept them."""
    return request.data if isinstance(request, Kept) else None


def lenient(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def deserialize(data: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:  # also invalid UTF-8 and protobuf's nesting limit
            return Undecodable(cls.DESCRIPTOR.full_name, str(exc) or "cannot decode")

    return deserialize


def keeping(cls: type[Message]) -> Callable[[bytes], Kept[Message] | Undecodable]:
    """`lenient`, keeping the request's bytes beside the decoded message."""
    decode = lenient(cls)

    def deserialize(data: bytes) -> Kept[Message] | Undecodable:
        message = decode(data)
        return message if isinstance(message, Undecodable) else Kept(message, data)

    return deserialize


Unary = dict[str, tuple[Any, type[Message], type[Message]]]  # name -> (method, req, resp)


def add_authorization_service(servicer: Any, server: grpc.Server) -> None:
    """Like the generated `add_AuthorizationServiceServicer_to_server`, decoding leniently."""
    methods: Unary = {
        "CheckBatch": (servicer.CheckBatch, pb.CheckBatchRequest, pb.CheckBatchResponse),
    }
    stream = grpc.stream_stream_rpc_method_handler(
        servicer.CheckStream,
        request_deserializer=keeping(pb.CheckRequest),
        response_serializer=pb.CheckStreamResponse.SerializeToString,
    )
    check = grpc.unary_unary_rpc_method_handler(
        servicer.Check,
        request_deserializer=keeping(pb.CheckRequest),
        response_serializer=pb.CheckResponse.SerializeToString,
    )
    service = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name
    add_unary_service(server, service, methods, {"CheckStream": stream, "Check": check})


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
