"""Every input has a cap (issue 6 §5): content caps are INVALID_ARGUMENT naming the field and
the limit, transport caps RESOURCE_EXHAUSTED; a refused request costs little."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import cedarpy
import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import load_bundle
from pdp.engine import Engine, Snapshot
from pdp.errors import InvalidRequest
from pdp.grpc import convert

from ..h2client import Connection
from ..support import DOCS_BUNDLE, running_server

ENTITIES, CONTEXT, BATCH_CONTEXT, DEPTH = 5, 200, 1000, 4
LIMIT_FLAGS = [
    "--max-request-entities", str(ENTITIES),
    "--max-context-bytes", str(CONTEXT),
    "--max-batch-context-bytes", str(BATCH_CONTEXT),
    "--max-context-depth", str(DEPTH),
]  # fmt: skip
ALICE = vpb.EntityUid(type="User", id="alice")
READ = vpb.EntityUid(type="Action", id="read")
DOC1 = vpb.EntityUid(type="Document", id="doc1")


@pytest.fixture(scope="module")
def limited() -> Iterator[pb_grpc.AuthorizationServiceStub]:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", *LIMIT_FLAGS]
    with running_server(args) as srv, srv.channel() as ch:
        yield pb_grpc.AuthorizationServiceStub(ch)


def check(**kw: Any) -> pb.CheckRequest:
    return pb.CheckRequest(tenant="docs", principal=ALICE, action=READ, resource=DOC1, **kw)


def user(i: int, level: Any = 1) -> dict[str, Any]:
    org = {"__entity": {"type": "Org", "id": "acme"}}
    return {
        "uid": {"type": "User", "id": f"u{i}"},
        "attrs": {"org": org, "level": level},
        "parents": [],
    }


def refused(
    call: Callable[[], Any], code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value.details()  # type: ignore[no-any-return]


def test_entities_per_request(limited: pb_grpc.AuthorizationServiceStub) -> None:
    at_cap = json.dumps([user(i) for i in range(ENTITIES)])
    assert limited.Check(check(entities_json=at_cap)).decision == pb.DECISION_ALLOW
    over = json.dumps([user(i) for i in range(ENTITIES + 1)])
    details = refused(lambda: limited.Check(check(entities_json=over)))
    assert details == f"entities_json: 6 entities (with entities) exceed the limit of {ENTITIES}"
    typed = [vpb.Entity(uid=vpb.EntityUid(type="Org", id=f"o{i}")) for i in range(ENTITIES + 1)]
    details = refused(lambda: limited.Check(check(entities=typed)))
    assert details == f"entities: 6 entities exceed the limit of {ENTITIES}"
    # Typed and JSON entities count together.
    details = refused(lambda: limited.Check(check(entities=typed[:1], entities_json=at_cap)))
    assert details.startswith("entities_json: 6 entities (with entities)")
    batch = pb.CheckBatchRequest(tenant="docs", principal=ALICE, entities_json=over)
    batch.items.add(action=READ, resource=DOC1)
    assert refused(lambda: limited.CheckBatch(batch)).startswith("entities_json: 6 entities")
    batch.entities_json = ""
    batch.items.add(action=READ, resource=DOC1, entities_json=over)
    assert refused(lambda: limited.CheckBatch(batch)).startswith("items[1].entities_json: 6")


def test_context_bytes_per_item(limited: pb_grpc.AuthorizationServiceStub) -> None:
    def tags(n: int) -> str:  # a context_json of exactly n bytes
        text = json.dumps({"tags": ["x" * (n - 14)]})
        assert len(text) == n
        return text

    assert limited.Check(check(context_json=tags(CONTEXT))).decision == pb.DECISION_ALLOW
    details = refused(lambda: limited.Check(check(context_json=tags(CONTEXT + 1))))
    assert details == f"context_json: {CONTEXT + 1} bytes exceed the limit of {CONTEXT}"
    # Counted in UTF-8 bytes, not characters.
    wide = json.dumps({"tags": ["é" * 100]}, ensure_ascii=False)
    assert len(wide) < CONTEXT < len(wide.encode())
    assert refused(lambda: limited.Check(check(context_json=wide))).startswith("context_json: ")
    long_tag = vpb.Value(string="x" * CONTEXT)
    typed = {"tags": vpb.Value(set=vpb.SetValue(values=[long_tag]))}
    details = refused(lambda: limited.Check(check(context=typed)))
    assert details.startswith("context: ") and details.endswith(f"exceed the limit of {CONTEXT}")
    batch = pb.CheckBatchRequest(tenant="docs", principal=ALICE)
    batch.items.add(action=READ, resource=DOC1, context_json=tags(CONTEXT + 1))
    assert refused(lambda: limited.CheckBatch(batch)).startswith("items[0].context_json: 201")


def test_batch_context_counts_a_shared_context_once_per_item(
    limited: pb_grpc.AuthorizationServiceStub,
) -> None:
    shared = json.dumps({"tags": ["x" * 186]})  # 200 bytes: 5 items = the batch cap exactly
    batch = pb.CheckBatchRequest(tenant="docs", principal=ALICE, context_json=shared)
    for _ in range(5):
        batch.items.add(action=READ, resource=DOC1)
    assert len(limited.CheckBatch(batch).results) == 5
    batch.items.add(action=READ, resource=DOC1)
    details = refused(lambda: limited.CheckBatch(batch))
    assert details == (
        "items: contexts of items[0..5] total 1200 bytes (a batch-level context counts once "
        f"per item using it), over the limit of {BATCH_CONTEXT}"
    )
    # Items with their own (small) contexts do not use the shared one: 4 x 200 + 2 x 2 bytes.
    batch.items[4].context_json = batch.items[5].context_json = "{}"
    assert len(limited.CheckBatch(batch).results) == 6


def test_context_depth(limited: pb_grpc.AuthorizationServiceStub) -> None:
    at_cap = '{"x": {"y": {"z": [1]}}}'  # 4 levels: passes the cap, then the schema refuses x
    details = refused(lambda: limited.Check(check(context_json=at_cap)))
    assert "nested deeper" not in details
    deeper = '{"x": {"y": {"z": [[1]]}}}'
    details = refused(lambda: limited.Check(check(context_json=deeper)))
    assert details == f"context_json: nested deeper than {DEPTH} levels"
    leaf = vpb.Value(long=1)
    for _ in range(4):
        leaf = vpb.Value(set=vpb.SetValue(values=[leaf]))
    details = refused(lambda: limited.Check(check(context={"tags": leaf})))
    assert details == f"context: nested deeper than {DEPTH} levels"


def test_concurrent_rpcs_and_streams_are_capped() -> None:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]
    caps = ["--max-concurrent-rpcs", "3", "--max-concurrent-streams", "2"]
    with running_server([*args, *caps]) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW
        # One connection opens 4 streams, each holding an unfinished 64 KiB message: the
        # connection may have 2 open, the others are reset by the server.
        first = Connection(srv.port, 4, 64 * 1024)
        _settle(first, open_streams=2)
        # REFUSED_STREAM (7), or ENHANCE_YOUR_CALM (11) once the client keeps trying.
        assert len(first.closed) == 2, first.closed
        assert set(first.closed.values()) <= {"RST_STREAM 7", "RST_STREAM 11"}, first.closed
        second = Connection(srv.port, 2, 64 * 1024)
        _settle(second, open_streams=1)  # the third RPC of the server; the fourth is refused
        # A trailers-only answer; its grpc-status 8 is readable unless HPACK indexed it.
        assert list(second.closed.values()) in (["grpc-status 8"], ["trailers"]), second.closed
        details = refused(
            lambda: stub.Check(check(), timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert "Concurrent RPC limit exceeded" in details
        first.close()
        second.close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closed connections and frees their RPCs
            try:
                assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.05)


def _settle(conn: Connection, open_streams: int) -> None:
    deadline = time.monotonic() + 10
    while conn.open_streams() != open_streams:
        conn.pump_all()
        assert time.monotonic() < deadline, (conn.closed, conn.open_streams())
        time.sleep(0.02)


# Cost: a refused request against a good one of the same size, in cedarpy calls.


class CedarCalls:
    """Counts every decision and every entity probe (both go through is_authorized_batch)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.entity_bytes = 0
        original = cedarpy.is_authorized_batch

        def counted(requests: Any, policies: Any, entities: Any, *rest: Any, **kw: Any) -> Any:
            self.calls += 1
            self.entity_bytes += len(entities) if isinstance(entities, str) else 0
            return original(requests, policies, entities, *rest, **kw)

        monkeypatch.setattr(cedarpy, "is_authorized_batch", counted)


N = 2001  # the size of issue 6's example request


@pytest.mark.parametrize("bad_at", [0, N // 3, N - 1])
def test_a_refused_entity_list_costs_log_n_cedar_calls(
    monkeypatch: pytest.MonkeyPatch, bad_at: int
) -> None:
    engine = Engine(Snapshot.of({"docs": load_bundle(DOCS_BUNDLE)}))
    limits = replace(convert.DEFAULT_LIMITS, max_request_entities=N)

    def request(bad: int | None) -> pb.CheckRequest:
        ents = [user(i, "high" if i == bad else 1) for i in range(N)]
        return check(entities_json=json.dumps(ents, indent=1))

    good, bad = request(None), request(bad_at)
    assert abs(len(good.entities_json) - len(bad.entities_json)) < 10  # the same size
    counts = CedarCalls(monkeypatch)
    engine.check("docs", convert.check_input(good, limits))
    assert counts.calls == 1
    counts.calls = 0
    with pytest.raises(InvalidRequest) as err:
        engine.check("docs", convert.check_input(bad, limits))
    assert err.value.field == "entities" and f'"u{bad_at}"' in err.value.reason
    assert f"(line {2 + 16 * bad_at})" in err.value.reason  # located in the text sent
    # Before: one probe per entity up to the bad one (2001 for the last). Now a bisection:
    # at most 2 log2(n) probes, over at most ~2x the entity bytes of the request.
    assert counts.calls <= 2 * math.ceil(math.log2(N)), counts.calls
    assert counts.entity_bytes <= 2 * len(bad.entities_json), counts.entity_bytes


def test_a_repeated_uid_is_located_with_few_cedar_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(Snapshot.of({"docs": load_bundle(DOCS_BUNDLE)}))
    ents = [user(i) for i in range(N)]
    ents[N - 1] = user(7, 2)  # each entity is fine alone; the list defines u7 twice
    counts = CedarCalls(monkeypatch)
    req = check(entities_json=json.dumps(ents, indent=1))
    with pytest.raises(InvalidRequest) as err:
        engine.check(
            "docs",
            convert.check_input(req, replace(convert.DEFAULT_LIMITS, max_request_entities=N)),
        )
    assert '"u7"' in err.value.reason and "duplicate" in err.value.reason
    assert counts.calls <= 2 * math.ceil(math.log2(N)) + 2, counts.calls


def test_a_batch_over_its_context_cap_costs_no_cedar_call(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(Snapshot.of({"docs": load_bundle(DOCS_BUNDLE)}))
    big = json.dumps({"tags": [f"t{i:06d}" for i in range(5_000)]})  # 55 KB, under the item cap
    batch = pb.CheckBatchRequest(tenant="docs", principal=ALICE, context_json=big)
    for _ in range(100):
        batch.items.add(action=READ, resource=DOC1)
    counts = CedarCalls(monkeypatch)
    with pytest.raises(InvalidRequest) as err:
        engine.check_batch("docs", convert.batch_inputs(batch))
    assert err.value.field == "items" and f"over the limit of {512 * 1024}" in err.value.reason
    assert counts.calls == 0  # before: one cedarpy call parsing the 55 KB context 100 times
