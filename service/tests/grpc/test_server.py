"""Health checking, reflection and graceful shutdown of the real server."""

from __future__ import annotations

import json
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb

from ..support import DOCS_BUNDLE, running_server

SERVICE = "pdp.v1.AuthorizationService"
SLOW_ENTITIES = 1000  # per batch item: makes the batch take about a second
# Room for that batch: its message and its entities per item; and a grace far longer than
# it takes even on a loaded machine (15-30 s seen on a shared 2-vCPU VM), since past the
# grace the threaded server cancels the calls still running, as it should.
BIG = [
    "--max-message-bytes",
    str(32 * 1024 * 1024),
    "--max-request-entities",
    "2000",
    "--shutdown-grace-seconds",
    "120",
]


def health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status  # type: ignore[no-any-return]


def test_health_is_serving_for_server_and_service(channel: grpc.Channel) -> None:
    assert health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert health(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [listed] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names
    [desc] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)])
    )
    assert desc.file_descriptor_response.file_descriptor_proto  # the .proto is served


def _slow_batch() -> pb.CheckBatchRequest:
    """100 items each parsing its own request entities: an RPC that takes about a second."""
    ents = [
        {
            "uid": {"type": "User", "id": f"u{i}"},
            "attrs": {"org": {"type": "Org", "id": "acme"}, "level": 1},
            "parents": [],
        }
        for i in range(SLOW_ENTITIES)
    ]
    items = [
        pb.BatchItem(
            action=vpb.EntityUid(type="Action", id="read"),
            resource=vpb.EntityUid(type="Document", id="doc1"),
            entities_json=json.dumps(
                ents + [{"uid": {"type": "Org", "id": f"x{n}"}, "attrs": {}, "parents": []}]
            ),
        )
        for n in range(100)
    ]
    return pb.CheckBatchRequest(
        tenant="docs", principal=vpb.EntityUid(type="User", id="u1"), items=items
    )


def test_sigterm_goes_not_serving_drains_and_finishes_in_flight_calls() -> None:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--drain-seconds", "1.5", *BIG]
    with running_server(args) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        req = pb.CheckRequest(
            tenant="docs",
            principal=vpb.EntityUid(type="User", id="alice"),
            action=vpb.EntityUid(type="Action", id="read"),
            resource=vpb.EntityUid(type="Document", id="doc1"),
        )
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
        slow_batch = _slow_batch()  # built now: under load, building it outlasts the drain
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for_log("NOT_SERVING, still answering")
        # Draining: health says NOT_SERVING, yet decisions are still answered.
        assert health(ch) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert stub.Check(req, timeout=5).decision == pb.DECISION_ALLOW
        # A slow call started during the drain completes although the listener closes under it.
        slow = stub.CheckBatch.future(slow_batch, timeout=30)
        results = slow.result().results
        assert len(results) == 100 and {r.decision for r in results} == {pb.DECISION_ALLOW}
        assert srv.proc.wait(timeout=20) == 0
    srv.wait_for_log("stopped")


def test_in_flight_call_survives_sigterm() -> None:
    with (
        running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", *BIG]) as srv,
        srv.channel() as ch,
    ):
        stub = srv.stub(ch)
        slow = stub.CheckBatch.future(_slow_batch(), timeout=30)
        time.sleep(0.3)  # the call is in flight: it takes several times longer than this
        srv.proc.send_signal(signal.SIGTERM)
        results = slow.result().results
        assert len(results) == 100 and {r.decision for r in results} == {pb.DECISION_ALLOW}
        assert srv.proc.wait(timeout=20) == 0
