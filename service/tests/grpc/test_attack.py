"""Attacks on the merged issue-7/8 code (threaded server, cache, index, stream, logs)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from ..h2client import Connection
from ..support import DOCS_BUNDLE, running_server
from .test_limits import check


def test_unfinished_unary_messages_do_not_starve_the_worker_threads() -> None:
    # grpcio's threaded server reads a unary request *inside* the worker thread
    # (`_unary_request` runs in the pool): a client that sends HEADERS and part of a
    # message holds a thread for as long as it likes. `threads` (default 4) such streams,
    # far below max_concurrent_rpcs (100) and max_concurrent_streams (32) on one
    # connection, leave no thread for anybody else.
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]
    with running_server(args) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW
        slow = Connection(srv.port, 4, 64)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                slow.pump_all()
                time.sleep(0.05)
            assert slow.open_streams() == 4, slow.closed
            still_answered(stub, "4 unfinished Check messages")
        finally:
            slow.close()


def still_answered(stub: pb_grpc.AuthorizationServiceStub, holders: str) -> None:
    """A good Check is still decided while `holders` hold their threads."""
    try:
        answer = stub.Check(check(), timeout=10)
    except grpc.RpcError as exc:
        raise AssertionError(f"{holders} starve a good Check: {exc.code()}") from exc
    assert answer.decision == pb.DECISION_ALLOW


def test_open_reflection_streams_do_not_starve_unary_calls() -> None:
    # A reflection stream (ServerReflectionInfo, bidirectional, uncapped) holds a pool thread
    # for as long as it is open; with a pool of `threads`, that many idle streams, opened by
    # any stock gRPC client, left no thread for Check.
    import queue

    from grpc_reflection.v1alpha import reflection_pb2 as rpb
    from grpc_reflection.v1alpha import reflection_pb2_grpc as rpb_grpc

    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]
    with running_server(args) as srv, srv.channel() as ch, srv.channel() as idle_ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW
        reflect = rpb_grpc.ServerReflectionStub(idle_ch)
        stop: queue.Queue[None] = queue.Queue()
        calls = []

        def idle() -> Iterator[rpb.ServerReflectionRequest]:
            yield rpb.ServerReflectionRequest(list_services="")
            stop.get()  # then send nothing more, keeping the stream open

        for _ in range(4):
            call = reflect.ServerReflectionInfo(idle())
            next(call)  # the first answer: the stream is being served by a worker thread
            calls.append(call)
        try:
            still_answered(stub, "4 idle reflection streams")
        finally:
            for c in calls:
                c.cancel()
            for _ in calls:
                stop.put(None)
