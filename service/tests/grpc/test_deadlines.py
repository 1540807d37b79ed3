"""Deadlines honoured (issue 10): a call whose caller has stopped waiting is not decided.

The server decides one call at a time (`--threads 1`) and is kept busy by a slow batch
(10,000 items, no cache: seconds of work); what is asserted is the server's own record of
each call (its status code in `pdp_grpc_server_handled_total`, and what it decided), never
a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..metrics_support import metrics_port, scrape, value
from ..support import ServerProcess, running_server

BOB = vpb.EntityUid(type="User", id="bob")
READ = vpb.EntityUid(type="Action", id="read")
DOC = vpb.EntityUid(type="Document", id="doc-1")
SLOW_ITEMS = 10_000
CHECK = pb.CheckRequest(principal=BOB, action=READ, resource=DOC)
SLOW_BATCH = pb.CheckBatchRequest(
    principal=BOB, items=[pb.BatchItem(action=READ, resource=DOC)] * SLOW_ITEMS
)


@pytest.fixture
def busy() -> Iterator[ServerProcess]:
    args = ["--no-watch", "--threads", "1", "--no-decision-cache"]
    with running_server([*args, "--max-batch-items", str(SLOW_ITEMS)]) as srv:
        yield srv


def slow_batch_seconds(stub: pb_grpc.AuthorizationServiceStub) -> float:
    """How long the slow batch takes here, so the deadlines below are a fraction of it on
    a fast machine as on a loaded one."""
    start = time.perf_counter()
    assert len(stub.CheckBatch(SLOW_BATCH, timeout=120).results) == SLOW_ITEMS
    return time.perf_counter() - start


def handled(srv: ServerProcess, method: str, code: str) -> float:
    families = scrape(metrics_port(srv))
    return value(families, "pdp_grpc_server_handled_total", method=method, code=code)


def decisions(srv: ServerProcess) -> float:
    family = scrape(metrics_port(srv)).get("pdp_decisions")
    return sum(s.value for s in family.samples if s.name.endswith("_total")) if family else 0


def test_a_call_whose_deadline_passed_while_waiting_is_not_decided(busy: ServerProcess) -> None:
    srv = busy
    with srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        stub.Check(CHECK, timeout=10)  # connected and warm
        short = slow_batch_seconds(stub) / 5
        slow = stub.CheckBatch.future(SLOW_BATCH, timeout=120)
        timed_out = 0
        # Checks with a short deadline until one has waited past it behind the batch: a
        # check that arrived before the batch took the slot is simply answered.
        while not slow.done():
            try:
                stub.Check(CHECK, timeout=short)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
                timed_out += 1
                break
        assert len(slow.result().results) == SLOW_ITEMS
        assert timed_out == 1, "the batch ended before any check waited behind it"
        # The server records the check once it gets the slot, after the batch.
        done = threading.Event()
        for _ in range(200):
            if handled(srv, "Check", "DEADLINE_EXCEEDED") == 1:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set(), srv.log()
        answered = handled(srv, "Check", "OK")
    # Only what was answered was decided: the late check was not.
    assert decisions(srv) == 2 * SLOW_ITEMS + answered


def test_a_batch_stops_between_slices_once_its_deadline_passed(busy: ServerProcess) -> None:
    srv = busy
    with srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        stub.Check(CHECK, timeout=10)
        short = slow_batch_seconds(stub) / 4
        with pytest.raises(grpc.RpcError) as info:
            stub.CheckBatch(SLOW_BATCH, timeout=short)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        waited = threading.Event()
        for _ in range(200):  # until the server has ended the batch its own way
            if handled(srv, "CheckBatch", "DEADLINE_EXCEEDED") == 1:
                break
            waited.wait(0.05)
        assert handled(srv, "CheckBatch", "DEADLINE_EXCEEDED") == 1, srv.log()
        assert handled(srv, "CheckBatch", "OK") == 1  # the measuring one
        # The server is free again at once (it stopped deciding), and nothing of the batch
        # was counted as decided.
        stub.Check(CHECK, timeout=10)
    assert decisions(srv) == SLOW_ITEMS + 2
