"""A batch's request entities are parsed once (issue 7).

The items of a batch that share request entities are one group: its slice is read and
parsed (`cedarpy.Entities.from_json_str`) once for the whole batch, then decided at most
`BATCH_SLICE` requests per cedarpy call, the deadline asked between two calls. Each answer
is the one the item gets alone, and an error names the item by its place in the batch.

The parses are counted by wrapping `Entities.from_json_str` (it still parses): a count, not a
time, that a per-slice parse (5 for 40 items) exceeds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import cedarpy
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import Bundle, load_bundle
from pdp.engine import BATCH_SLICE, Engine, Snapshot
from pdp.entity_store.sqlite import SqliteEntityStore
from pdp.errors import DeadlineExceeded, InvalidRequest
from pdp.model import CheckInput, CheckResult, Decision, EntityRef, RequestEntities

from .support import DOCS_BUNDLE

T = TypeVar("T")
ALLOW, DENY = Decision.ALLOW, Decision.DENY
ITEMS = 40  # the shape of the Cerbos race's batch: 5 slices of 8


@pytest.fixture(scope="module")
def docs() -> Bundle:
    return load_bundle(DOCS_BUNDLE)


def user(name: str, org: str, level: int) -> dict[str, Any]:
    return {
        "uid": {"type": "User", "id": name},
        "attrs": {"org": {"__entity": {"type": "Org", "id": org}}, "level": level},
        "parents": [],
    }


def entities(*users: dict[str, Any]) -> RequestEntities:
    return RequestEntities(json.dumps(list(users)))


SHARED = entities(user("newcomer", "acme", 0), user("visitor", "globex", 3))
OTHERS = [entities(user("newcomer", "acme", 7)), entities(user("newcomer", "globex", 0))]
# A document the docs bundle does not hold: stored, bob's (he may read it: `owner-all`).
BOBS_DOC3 = {
    "uid": {"type": "Document", "id": "doc3"},
    "attrs": {
        "org": {"__entity": {"type": "Org", "id": "acme"}},
        "owner": {"__entity": {"type": "User", "id": "bob"}},
        "public": False,
    },
    "parents": [],
}
CONTEXTS = [
    "{}",
    '{"mfa": true}',
    '{"mfa": true, "score": {"__extn": {"fn": "decimal", "arg": "0.9"}}}',
]


def item(i: int, ents: RequestEntities | None = SHARED, context: str | None = None) -> CheckInput:
    principal = ("newcomer", "visitor", "bob", "alice")[i % 4]
    return CheckInput(
        EntityRef("User", principal),
        EntityRef("Action", ("read", "edit")[i // 4 % 2]),
        EntityRef("Document", ("doc1", "doc2", "doc3")[i % 3]),
        context=CONTEXTS[i % 3] if context is None else context,
        entities=ents,
    )


def counted(target: Any, name: str, f: Callable[[], T]) -> tuple[T, list[Any]]:
    """`f()`, and the arguments of each call it made to `target.name` (which still runs)."""
    with mock.patch.object(target, name, wraps=getattr(target, name)) as spy:
        out = f()
    return out, [c.args for c in spy.call_args_list]


def parses(f: Callable[[], T]) -> tuple[T, int]:
    out, calls = counted(cedarpy.Entities, "from_json_str", f)
    return out, len(calls)


def answer(r: CheckResult) -> tuple[Any, ...]:
    # Cedar lists the determining policies and errors in no fixed order.
    errors = sorted((e.policy_id, e.message) for e in r.errors)
    return (r.decision, sorted(r.determining_policies), errors, r.data_version)


def alone(engine: Engine, tenant: str, batch: Sequence[CheckInput]) -> list[tuple[Any, ...]]:
    return [answer(engine.check(tenant, r)) for r in batch]


def test_a_batch_parses_its_shared_request_entities_once(docs: Bundle) -> None:
    engine = Engine(Snapshot.of({"docs": docs}))
    batch = [item(i) for i in range(ITEMS)]
    results, count = parses(lambda: engine.check_batch("docs", batch))
    assert count == 1  # one per slice of 8 before: 5
    assert [answer(r) for r in results] == alone(engine, "docs", batch)


def test_each_set_of_request_entities_is_parsed_once_and_kept_apart(docs: Bundle) -> None:
    # Items with entities of their own, interleaved with the batch's: one parse per set of
    # entities (by value), and each item decided on its own set.
    sets = [SHARED, *OTHERS, None]
    batch = [item(i, sets[i // 3 % 4]) for i in range(ITEMS)]
    results, count = parses(lambda: Engine(Snapshot.of({"docs": docs})).check_batch("docs", batch))
    assert count == 3  # None needs no parse: the bundle's own entities
    engine = Engine(Snapshot.of({"docs": docs}))
    assert [answer(r) for r in results] == alone(engine, "docs", batch)
    # The newcomer is someone else in each set: level 0 in acme (no overflow), level 7
    # (`overflow` errors on a read), in globex (across the org boundary): never mixed.
    newcomer: dict[RequestEntities | None, set[tuple[Decision, bool]]] = {}
    for r, i in zip(results, batch, strict=True):
        if i.principal.id == "newcomer":
            newcomer.setdefault(i.entities, set()).add((r.decision, bool(r.errors)))
    assert newcomer[SHARED] == {(ALLOW, False), (DENY, False)}
    assert (DENY, True) in newcomer[OTHERS[0]]
    assert {d for d, _ in newcomer[OTHERS[1]]} == {DENY}


def test_a_store_slice_is_parsed_once_per_batch(docs: Bundle, tmp_path: Path) -> None:
    # A written store sends even items without request entities through a slice.
    store = SqliteEntityStore(tmp_path / "e.sqlite3")
    version = store.write("docs", [BOBS_DOC3], [])
    try:
        engine = Engine(Snapshot.of({"docs": docs}), store=store)
        batch = [item(i, None if i % 2 else SHARED) for i in range(ITEMS)]
        results, count = parses(lambda: engine.check_batch("docs", batch))
        assert count == 2  # the shared set's slice, and the stored slice without it
        assert {r.data_version for r in results} == {version}
        assert [answer(r) for r in results] == alone(engine, "docs", batch)
        assert any(answer(r)[1] == ["owner-all"] for r in results)  # the stored doc3 decided
    finally:
        store.close()


def test_every_cedarpy_call_decides_at_most_one_slice(docs: Bundle) -> None:
    engine = Engine(Snapshot.of({"docs": docs}))
    batch = [item(i) for i in range(ITEMS)]
    _, calls = counted(cedarpy, "is_authorized_batch", lambda: engine.check_batch("docs", batch))
    sizes = [len(c[0]) for c in calls]
    assert max(sizes) == BATCH_SLICE and sum(sizes) == ITEMS


def test_the_deadline_is_asked_between_cedarpy_calls(docs: Bundle) -> None:
    engine = Engine(Snapshot.of({"docs": docs}))
    batch = [item(i) for i in range(ITEMS)]
    asked: list[int] = []

    def expired() -> bool:
        asked.append(1)
        return True

    with pytest.raises(DeadlineExceeded, match=f"after {BATCH_SLICE} of {ITEMS} items"):
        counted(
            cedarpy,
            "is_authorized_batch",
            lambda: engine.check_batch("docs", batch, expired=expired),
        )
    assert len(asked) == 1  # not before the first call, then at once
    _, calls = counted(
        cedarpy,
        "is_authorized_batch",
        lambda: engine.check_batch("docs", batch[:1], expired=expired),
    )
    assert len(calls) == 1 and len(asked) == 1  # one call: never asked


def test_an_item_error_names_its_index_in_the_whole_batch(docs: Bundle) -> None:
    engine = Engine(Snapshot.of({"docs": docs}))
    batch = [item(i) for i in range(ITEMS)]
    batch[29] = item(29, context='{"mfa": 3}')  # in the fourth slice
    with pytest.raises(InvalidRequest) as err:
        engine.check_batch("docs", batch)
    assert (err.value.index, err.value.field) == (29, "context")
    bad = entities(
        user("newcomer", "acme", 0),
        {"uid": {"type": "User", "id": "x"}, "attrs": {"level": "high"}, "parents": []},
    )
    batch = [item(i, bad if i >= 21 else SHARED) for i in range(ITEMS)]
    with pytest.raises(InvalidRequest) as err:
        engine.check_batch("docs", batch)
    assert (err.value.index, err.value.field) == (21, "entities")


def test_batch_errors_name_the_item_or_the_batch_field(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    def uid(t: str, i: str) -> vpb.EntityUid:
        return vpb.EntityUid(type=t, id=i)

    def refusal(req: pb.CheckBatchRequest) -> str:
        with pytest.raises(grpc.RpcError) as err:
            stub.CheckBatch(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return str(err.value.details())

    good = json.dumps([user("newcomer", "acme", 0)])
    bad = json.dumps(
        [
            user("newcomer", "acme", 0),
            {"uid": {"type": "User", "id": "x"}, "attrs": {"level": "high"}, "parents": []},
        ]
    )
    items = [pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1"))] * ITEMS
    req = pb.CheckBatchRequest(
        tenant="docs", principal=uid("User", "newcomer"), items=items, entities_json=good
    )
    assert len(stub.CheckBatch(req).results) == ITEMS
    req.items[29].context_json = '{"mfa": 3}'
    assert refusal(req).startswith("items[29].context")
    req.items[29].context_json = ""
    req.items[21].entities_json = bad
    assert refusal(req).startswith("items[21].entities")
    req.items[21].entities_json = ""
    req.entities_json = bad
    assert refusal(req).startswith("entities")


def batches() -> st.SearchStrategy[list[CheckInput]]:
    sets = st.sampled_from([SHARED, *OTHERS, None])
    one = st.builds(item, st.integers(0, 23), sets)
    return st.lists(one, min_size=1, max_size=3 * BATCH_SLICE)


def test_a_batch_answers_as_each_item_alone(docs: Bundle) -> None:
    engine = Engine(Snapshot.of({"docs": docs}))
    kinds: Counter[str] = Counter()
    bad: list[Any] = []

    @settings(
        max_examples=200,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(batches())
    def check(batch: list[CheckInput]) -> None:
        results, count = parses(lambda: engine.check_batch("docs", batch))
        groups = {r.entities for r in batch} - {None}
        if count != len(groups):
            bad.append(("parses", count, len(groups)))
        got = [answer(r) for r in results]
        if got != alone(engine, "docs", batch):
            bad.append((batch, got))
        if len(batch) > BATCH_SLICE and len(groups) >= 2:
            kinds["several slices and sets"] += 1
        kinds.update(str(a[0]) for a in got)
        kinds["errors reported"] += sum(1 for a in got if a[2])

    check()
    assert bad == [], bad[:2]
    print(dict(kinds))
    assert kinds["several slices and sets"] >= 50
    assert kinds["Decision.ALLOW"] >= 100 and kinds["Decision.DENY"] >= 100
    assert kinds["errors reported"] >= 50
