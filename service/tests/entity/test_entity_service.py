"""EntityService over gRPC against a real `pdp serve` with its SQLite store, and the
decisions that read what it wrote (read-your-writes, data_version, the decision cache)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import entity_pb2 as epb
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.entity_slice import MAX_SLICE_UIDS
from pdp.entity_store import sql

from .support import (
    ALLOW,
    DENY,
    check,
    document,
    folder,
    group,
    org,
    ref,
    refusal,
    store_server,
    uid,
    user,
    write,
)

Stubs = tuple[pb_grpc.AuthorizationServiceStub, epb_grpc.EntityServiceStub]


@pytest.fixture()
def stubs(tmp_path: Path) -> Iterator[Stubs]:
    with store_server(tmp_path) as (_, checks, entities):
        yield checks, entities


GRAPH = [
    org("acme"),
    org("ice", frozen=True),
    group("readers"),
    user("alice", ref("Role", "admin")),
    user("bob"),
    user("carol", ref("Group", "readers")),
    folder("shared"),
    folder("team", ref("Folder", "shared")),
    document("doc1", "bob", ref("Folder", "team")),
    document("cold", "bob", org="ice"),
]


def test_writes_are_read_by_the_next_check_and_each_response_says_the_version(
    stubs: Stubs,
) -> None:
    checks, entities = stubs
    assert entities.GetDataVersion(epb.GetDataVersionRequest()).data_version == 0
    before = checks.Check(check("carol", "edit", "doc1"))
    assert before.decision == DENY and before.data_version == 0
    version = write(entities, GRAPH)
    assert version >= 1
    # Read-your-writes: decided on the stored graph, the write's version reported.
    alice = checks.Check(check("alice", "edit", "doc1"))  # Role::"admin" from the bundle
    assert alice.decision == ALLOW and list(alice.determining_policies) == ["org-admin"]
    assert alice.data_version == version
    carol = checks.Check(check("carol", "read", "doc1"))
    assert carol.decision == ALLOW and carol.data_version == version
    assert set(carol.determining_policies) == {"readers-read", "shared-folder-read"}
    # Through an attribute (doc1.owner = bob) and two folder levels.
    assert checks.Check(check("bob", "edit", "doc1")).decision == ALLOW
    # Two hops: cold.org.frozen.
    frozen = checks.Check(check("bob", "edit", "cold"))
    assert frozen.decision == DENY and list(frozen.determining_policies) == ["frozen-org"]


def test_a_cached_decision_is_not_served_after_a_write(stubs: Stubs) -> None:
    checks, entities = stubs
    write(entities, GRAPH)
    request = check("carol", "read", "cold")
    first = checks.Check(request)
    assert first.decision == ALLOW and not first.cache_hit
    assert checks.Check(request).cache_hit  # the same data: a hit
    # Now also under the request's exact bytes, which answer the next one unconverted.
    assert checks.Check(request).cache_hit
    # carol leaves the readers group: the next check must not answer from the cache.
    later = write(entities, [user("carol")])
    after = checks.Check(request)
    assert after.decision == DENY and not after.cache_hit and after.data_version == later


def test_stored_parents_and_attributes_are_replaced_and_deleted(stubs: Stubs) -> None:
    checks, entities = stubs
    write(entities, GRAPH)
    write(entities, [user("bob", suspended=True)])
    denied = checks.Check(check("bob", "edit", "doc1"))
    assert denied.decision == DENY and list(denied.determining_policies) == ["suspended"]
    write(entities, deletes=[("Folder", "team")])
    # doc1 still names Folder::"team" as a parent, which no longer exists: not in shared.
    assert checks.Check(check("carol", "read", "doc1")).decision == ALLOW  # readers still
    write(entities, [user("carol")])
    assert checks.Check(check("carol", "read", "doc1")).decision == DENY


def test_get_list_and_paging(stubs: Stubs) -> None:
    _, entities = stubs
    version = write(entities, GRAPH)
    got = entities.Get(epb.GetEntityRequest(uid=uid("User", "alice")))
    assert json.loads(got.entity_json) == user("alice", ref("Role", "admin"))
    assert got.data_version == version
    code, details = refusal(entities.Get, epb.GetEntityRequest(uid=uid("User", "nobody")))
    assert code == grpc.StatusCode.NOT_FOUND and 'User::"nobody"' in details
    seen: list[dict[str, str]] = []
    token = ""
    pages = 0
    while True:
        page = entities.List(epb.ListEntitiesRequest(page_size=3, page_token=token))
        seen += [e["uid"] for e in json.loads(page.entities_json)]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 4 and sorted(map(json.dumps, seen)) == sorted(
        json.dumps(e["uid"]) for e in GRAPH
    )
    users = entities.List(epb.ListEntitiesRequest(entity_type="User"))
    assert [e["uid"]["id"] for e in json.loads(users.entities_json)] == ["alice", "bob", "carol"]
    code, details = refusal(entities.List, epb.ListEntitiesRequest(page_size=5000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_size:")


def test_a_write_the_schema_refuses_is_refused_whole_naming_the_entity(stubs: Stubs) -> None:
    checks, entities = stubs
    version = write(entities, GRAPH)
    bad = {"uid": ref("User", "dave"), "attrs": {"org": {"__entity": ref("Org", "acme")}}}
    code, details = refusal(
        entities.Write,
        epb.WriteEntitiesRequest(upserts_json=json.dumps([user("erin"), {**bad, "parents": []}])),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("upserts[1]") and 'User::"dave"' in details
    assert "suspended" in details  # Cedar's reason: the missing attribute
    # Nothing of it was written.
    assert entities.GetDataVersion(epb.GetDataVersionRequest()).data_version == version
    code, _ = refusal(entities.Get, epb.GetEntityRequest(uid=uid("User", "erin")))
    assert code == grpc.StatusCode.NOT_FOUND
    assert checks.Check(check("alice", "read", "doc1")).data_version == version


def test_the_bundles_entities_and_actions_stay_the_bundles(stubs: Stubs) -> None:
    _, entities = stubs
    code, details = refusal(
        entities.Write,
        epb.WriteEntitiesRequest(upserts=[vpb.Entity(uid=uid("Role", "admin"))]),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith('upserts[0]: Role::"admin": is an entity of the bundle')
    code, details = refusal(
        entities.Write,
        epb.WriteEntitiesRequest(
            upserts_json=json.dumps(
                [group("x"), {"uid": ref("Action", "read"), "attrs": {}, "parents": []}]
            )
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith('upserts[1]: Action::"read": is an action')
    assert entities.GetDataVersion(epb.GetDataVersionRequest()).data_version == 0


def test_unknown_tenant_and_malformed_requests(stubs: Stubs) -> None:
    _, entities = stubs
    code, details = refusal(entities.GetDataVersion, epb.GetDataVersionRequest(tenant="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, details = refusal(
        entities.Write, epb.WriteEntitiesRequest(tenant="nope", upserts_json="[]")
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = refusal(entities.Write, epb.WriteEntitiesRequest(upserts_json='{"a": 1}'))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("upserts_json:")
    code, details = refusal(entities.Write, epb.WriteEntitiesRequest(upserts_json='[{"uid": 1}]'))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("upserts[0].uid")
    code, details = refusal(entities.Get, epb.GetEntityRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("uid:")


def test_a_check_naming_more_uids_than_one_store_read_takes(tmp_path: Path) -> None:
    # 1,200 request entities (each a seed of the slice): the store answers at most
    # MAX_SLICE_UIDS uids a read, so the slice reads them in parts, of one data version.
    visitors = [user(f"v{i}") for i in range(1200)]
    visitors[7] = user("v7", ref("Group", "readers"))
    assert MAX_SLICE_UIDS == sql.MAX_SLICE_UIDS < len(visitors)
    with store_server(tmp_path, "--max-request-entities", "2000") as (_, checks, entities):
        version = write(entities, GRAPH)
        r = checks.Check(check("v7", "read", "doc1", entities=visitors))
        assert r.decision == ALLOW and r.data_version == version
