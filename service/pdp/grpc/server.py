"""Build the gRPC server: decision service, health checking and reflection."""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent import futures
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pdp._proto.v1 import authorization_pb2 as pb
from pdp.decision_log import DecisionLogger
from pdp.engine import Engine
from pdp.grpc.call_pool import CallPool
from pdp.grpc.convert import Limits
from pdp.grpc.health import HealthService
from pdp.grpc.servicer import AuthorizationServicer
from pdp.grpc.wire import add_authorization_service
from pdp.jwt_identity import TokenVerifier
from pdp.metrics import Metrics
from pdp.rate_limit import RateLimits
from pdp.tracing import NO_TRACING, Tracing

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PdpServer:
    """A started-on-demand threaded gRPC server with its health servicer.

    Calls run on a pool of one thread per admitted call, `threads` of them deciding at once
    (grpcio's threaded server costs less per call than grpc.aio: bench/RESULTS.md,
    2026-12-01). The methods here are called from the asyncio thread of `pdp.app`; none of
    them blocks on a call in flight."""

    def __init__(
        self,
        engine: Engine,
        listen: str,
        *,
        max_batch_items: int,
        max_message_bytes: int,
        limits: Limits,
        max_concurrent_streams: int,
        max_concurrent_rpcs: int,
        threads: int,
        max_check_streams: int,
        reuse_port: bool = False,
        tracing: Tracing = NO_TRACING,
        decision_log: DecisionLogger | None = None,
        metrics: Metrics | None = None,
        credentials: grpc.ServerCredentials | None = None,
        rate_limits: RateLimits | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._pool = CallPool(max_workers=max_concurrent_rpcs, thread_name_prefix="pdp-rpc")
        self.server = grpc.server(
            # One thread for every call the server admits: grpcio reads a call's request on
            # its thread, so a pool of `threads` could be held by clients that never finish
            # their message (or by idle reflection streams) and starve every other call.
            # `threads` instead bounds the calls deciding at once (the servicer's slots).
            # grpcio calls only `submit` and `add_done_callback`: a CallPool does that with
            # ~38,000 fewer instructions a call than a ThreadPoolExecutor (pdp.grpc.call_pool).
            cast(futures.ThreadPoolExecutor, self._pool),
            options=[
                # A stream buffers at most one message of this size: grpc opens the HTTP/2
                # window only as far as the length prefix of the message being read.
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # So one connection buffers at most streams x message bytes...
                ("grpc.max_concurrent_streams", max_concurrent_streams),
                # A server on a taken port must fail, not share it; only `--workers`
                # siblings share one port on purpose.
                ("grpc.so_reuseport", int(reuse_port)),
            ],
            # ...and the server at most RPCs x message bytes, over all connections: calls
            # beyond it are refused with RESOURCE_EXHAUSTED before their message is read.
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        add_authorization_service(
            AuthorizationServicer(
                engine,
                max_batch_items,
                limits,
                max_check_streams,
                tracing,
                decision_log,
                metrics,
                deciding=threads,
                rate_limits=rate_limits,
                tokens=tokens,
            ),
            self.server,
        )
        # grpc_health's servicer, with Watch streams ended off grpcio's poll thread.
        self.health = HealthService()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        # None: plaintext, which `Settings` allows only on loopback unless allow_plaintext.
        self.port = (
            self.server.add_insecure_port(listen)
            if credentials is None
            else self.server.add_secure_port(listen, credentials)
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")

    def start(self) -> None:
        self.server.start()

    def set_serving(
        self,
        tenants: Collection[str],
        killed: Collection[str] = (),
        all_killed: bool = False,
        stale: Collection[str] = (),
    ) -> None:
        """Health of the tenants that have a bundle: each SERVING under its own name, and
        the server ("" and the service's name) SERVING while at least one is not stale.
        Tenants are never dropped (`pdp.reloader`), so a name once known stays so. A tenant
        that answers Deny whatever its policies say is NOT_SERVING: under a kill switch
        (`killed`, or `all_killed`: the whole PDP, which takes the server with it), or
        `stale` (`max_bundle_age`)."""
        down = set(killed) | set(stale)
        fresh = [t for t in tenants if t not in stale]
        status = SERVING if fresh and not all_killed else NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)
        for name in sorted(tenants):
            self.health.set(name, NOT_SERVING if all_killed or name in down else SERVING)

    def enter_shutdown(self) -> None:
        """Report NOT_SERVING for good, for every name; calls are still answered until `stop`."""
        self.health.enter_graceful_shutdown()

    def stop(self, grace: float) -> threading.Event:
        """Refuse new calls and let in-flight ones finish within `grace` seconds; the event
        is set once the server has stopped."""
        return self.server.stop(grace)

    def join(self, timeout: float) -> bool:
        """After `stop`: wait up to `timeout` seconds for the calls still running to return.
        grpcio cancels a call at the end of the grace period but cannot stop its Python
        code, which may still be inside the entity store; True once none is running."""
        return self._pool.shutdown(wait=True, timeout=timeout)
