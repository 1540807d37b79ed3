"""Register a service so that every one of its methods is authenticated, authorized and
audited before (and whatever) it runs: the admin API's one gate, applied at registration.

`add_guarded_service` takes a service descriptor and a servicer; each unary method is
wrapped in `Guard.call`, which identifies the caller (`pdp.admin.auth`), checks the role
the method needs (`METHOD_ROLES`: a method missing there is refused to all), runs it,
writes the audit line with the status the call ends with, and ends the call with it.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from pdp.admin.audit import AuditLog
from pdp.admin.auth import METHOD_ROLES, Authenticator, role_of
from pdp.admin.identities import Role
from pdp.grpc.status import error_status
from pdp.grpc.wire import Undecodable, decoded, lenient

log = logging.getLogger(__name__)

# The identity of the admin call being handled, for a servicer that records who did what.
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("admin_caller", default="")

CertIdentity = Callable[[grpc.ServicerContext], "str | None"]


def no_certificate(context: grpc.ServicerContext) -> str | None:
    return None


class Guard:
    def __init__(
        self,
        auth: Authenticator,
        audit: AuditLog,
        cert_identity: CertIdentity = no_certificate,
        roles: Mapping[str, Mapping[str, Role]] = METHOD_ROLES,
    ) -> None:
        self._auth = auth
        self.audit = audit
        self._cert_identity = cert_identity
        self._roles = roles

    def wrap(
        self, service: str, method: str, handler: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        needed = role_of(service, method, self._roles)
        full = f"/{service}/{method}"

        def call(request: Message | Undecodable, context: grpc.ServicerContext) -> Any:
            caller = self._auth.identify(
                context.invocation_metadata() or (), self._cert_identity(context)
            )
            code, details = grpc.StatusCode.OK, ""
            token = CALLER.set(caller.identity)
            try:
                self._auth.authorize(caller, needed)
                return handler(decoded(request), context)
            except Exception as exc:
                # grpcio's context has code() and details() (since 1.38); its stubs do not.
                aborted = context.code()  # type: ignore[attr-defined]
                if aborted is not None and aborted != grpc.StatusCode.OK:
                    # The handler ended the call itself (`pdp.grpc.status.handle_errors`, as
                    # the EntityService does): keep its status, not INTERNAL for the abort.
                    raw = context.details()  # type: ignore[attr-defined]
                    code = aborted
                    details = raw.decode() if isinstance(raw, bytes) else str(raw or "")
                else:
                    code, details = error_status(exc, full)
            finally:
                CALLER.reset(token)
                self.audit.record(
                    identity=caller.identity,
                    peer=context.peer(),
                    method=full,
                    request=request,
                    code=code.name,
                    message=details,
                )
            context.abort(code, details)
            raise AssertionError("unreachable: abort() raises")

        return call


def add_guarded_service(
    server: grpc.Server, descriptor: ServiceDescriptor, servicer: Any, guard: Guard
) -> None:
    """Register every (unary) method of `descriptor`, implemented by `servicer`, guarded."""
    handlers = {}
    for m in descriptor.methods:
        if m.client_streaming or m.server_streaming:
            raise TypeError(f"{m.full_name}: only unary admin methods are guarded")
        response: type[Message] = GetMessageClass(m.output_type)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            guard.wrap(descriptor.full_name, m.name, getattr(servicer, m.name)),
            request_deserializer=lenient(GetMessageClass(m.input_type)),
            response_serializer=response.SerializeToString,
        )
    name = descriptor.full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)  # type: ignore[attr-defined]
