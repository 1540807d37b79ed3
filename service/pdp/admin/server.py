"""Where the AdminService listens: its own small gRPC server (`admin_listen`), or the
decision server when `admin_on_decision_port` is set; loopback unless TLS is on."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import cast

import grpc

from pdp._proto.v1 import admin_pb2 as apb
from pdp.admin.audit import AuditLog
from pdp.admin.auth import Authenticator
from pdp.admin.guard import Guard, add_guarded_service
from pdp.admin.servicer import AdminServicer, Target
from pdp.config import LISTEN, Settings, is_loopback
from pdp.grpc.call_pool import CallPool
from pdp.grpc.entity_servicer import ENTITY_SERVICE, EntityServicer
from pdp.grpc.tls import peer_identity

log = logging.getLogger("pdp.admin")

SERVICE = apb.DESCRIPTOR.services_by_name["AdminService"]
THREADS = 4  # admin calls are rare; a reload holds its thread until it is done
MAX_RPCS = 16
MAX_MESSAGE_BYTES = 64 * 1024


class AdminError(RuntimeError):
    """The admin API cannot be served as configured (refused before any port opens)."""


def refuse_plaintext(setting: str, listen: str, credentials: grpc.ServerCredentials | None) -> None:
    m = LISTEN.fullmatch(listen)
    if credentials is None and not (m is not None and is_loopback(m["host"])):
        raise AdminError(
            f"{setting} {listen} is not a loopback address and TLS is not configured: "
            "refusing to serve the admin API in plaintext over the network"
        )


def guard_of(settings: Settings) -> Guard:
    if not settings.admin_identities:
        log.warning("admin API: no admin_identities configured; every admin call is refused")
    return Guard(
        Authenticator(settings.admin_identities), AuditLog(settings.admin_audit_log), peer_identity
    )


def add_admin_service(
    server: grpc.Server, target: Target, guard: Guard, entities: EntityServicer | None = None
) -> None:
    add_guarded_service(server, SERVICE, AdminServicer(target), guard)
    if entities is not None:
        add_guarded_service(server, ENTITY_SERVICE, entities, guard)


class AdminServer:
    """The AdminService on its own port, with its own few threads: a flood of decisions
    cannot starve it, nor it them."""

    def __init__(
        self,
        listen: str,
        target: Target,
        guard: Guard,
        credentials: grpc.ServerCredentials | None = None,
        entities: EntityServicer | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        refuse_plaintext("admin_listen", listen, credentials)
        # Entity writes carry up to `entity_write_max_entities` entities: the decision
        # port's message cap; the admin calls alone need little.
        max_bytes = MAX_MESSAGE_BYTES if entities is None else max_message_bytes
        # A CallPool, as the decision port's, for `join`: entity writes must be out of the
        # store before it closes.
        self._pool = CallPool(max_workers=THREADS, thread_name_prefix="pdp-admin")
        self.server = grpc.server(
            cast(futures.ThreadPoolExecutor, self._pool),
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.so_reuseport", 0),  # a taken admin port fails, never shares
            ],
            maximum_concurrent_rpcs=MAX_RPCS,
        )
        add_admin_service(self.server, target, guard, entities)
        if credentials is None:
            self.port = self.server.add_insecure_port(listen)
        else:
            self.port = self.server.add_secure_port(listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on admin_listen {listen}")

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float) -> threading.Event:
        return self.server.stop(grace)

    def join(self, timeout: float) -> bool:
        """After `stop`: wait up to `timeout` seconds for the calls still running (a
        cancelled write may still be inside the store); True once none is."""
        return self._pool.shutdown(wait=True, timeout=timeout)
