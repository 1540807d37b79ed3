"""Health per tenant over gRPC: each tenant's name is a health service of its own, beside
the server's overall status ("") and the AuthorizationService's."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..support import DOCS_BUNDLE, running_server

SERVICE = "pdp.v1.AuthorizationService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status  # type: ignore[no-any-return]


def test_each_loaded_tenant_is_serving_and_unknown_names_are_not_found() -> None:
    args = ["--bundle", f"acme={DOCS_BUNDLE}", "--bundle", f"globex={DOCS_BUNDLE}", "--no-watch"]
    with running_server(args) as srv, srv.channel() as ch:
        for name in ("", SERVICE, "acme", "globex"):
            assert status(ch, name) == SERVING, name
        for unknown in ("initech", "default", "ACME"):
            with pytest.raises(grpc.RpcError) as err:
                status(ch, unknown)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, unknown
        watch = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(service="initech"), timeout=5
        )
        assert next(watch).status == SERVICE_UNKNOWN
        watch.cancel()


def test_a_tenant_added_by_reload_appears_and_readiness_follows(tmp_path: Path) -> None:
    root = tmp_path / "tenants"
    root.mkdir()
    args = ["--bundles-dir", str(root), "--reload-debounce-ms", "50"]
    with running_server(args) as srv, srv.channel() as ch:
        srv.wait_for_log("watching")
        assert status(ch, "") == NOT_SERVING  # no tenant loaded: not ready
        assert status(ch, SERVICE) == NOT_SERVING
        stub = health_pb2_grpc.HealthStub(ch)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="acme"), timeout=20)
        assert next(watch).status == SERVICE_UNKNOWN
        shutil.copytree(DOCS_BUNDLE, root / "acme")
        assert next(watch).status == SERVING  # the watcher is told as soon as it loads
        watch.cancel()
        assert status(ch, "acme") == SERVING
        assert status(ch, "") == SERVING
        assert status(ch, SERVICE) == SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="globex"), timeout=20)
        assert next(watch).status == SERVICE_UNKNOWN
        shutil.copytree(DOCS_BUNDLE, root / "globex")
        assert next(watch).status == SERVING
        watch.cancel()
        assert status(ch, "acme") == SERVING


def test_draining_reports_every_tenant_not_serving() -> None:
    args = ["--bundle", f"acme={DOCS_BUNDLE}", "--no-watch", "--drain-seconds", "3"]
    with running_server(args) as srv, srv.channel() as ch:
        assert status(ch, "acme") == SERVING
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for_log("NOT_SERVING, still answering")
        for name in ("", SERVICE, "acme"):
            assert status(ch, name) == NOT_SERVING, name
