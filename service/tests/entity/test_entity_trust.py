"""Stored entities are authoritative like the bundle's: request entities cannot rewrite or
graft onto them (pdp.engine `_check_against_slice`), over gRPC against a real server.

Each attack is sent beside a genuine control that is ALLOW, so a refusal cannot pass for
the wrong reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc

from .support import (
    ALLOW,
    MANIFEST,
    check,
    document,
    group,
    org,
    ref,
    refusal,
    store_server,
    uid,
    user,
    write,
    write_bundle,
)

Stubs = tuple[pb_grpc.AuthorizationServiceStub, epb_grpc.EntityServiceStub]

STORED = [
    org("acme"),
    group("readers"),
    user("alice", ref("Group", "contractors")),  # a group nobody stored (yet)
    user("mallory", suspended=True),
    user("root", ref("Role", "admin")),
    document("doc1", "root"),
]


def serve(where: Path, trusted: bool = False) -> Iterator[Stubs]:
    if trusted:
        write_bundle(where / "bundle", {**MANIFEST, "request_entities": "trusted"})
    with store_server(where) as (_, checks, entities):
        write(entities, STORED)
        yield checks, entities


@pytest.fixture()
def stubs(tmp_path: Path) -> Iterator[Stubs]:
    yield from serve(tmp_path / "plain")


@pytest.fixture()
def trusted(tmp_path: Path) -> Iterator[Stubs]:
    yield from serve(tmp_path / "trusted", trusted=True)


def test_a_request_entity_cannot_redefine_a_stored_user_with_admin_parents(
    stubs: Stubs, trusted: Stubs
) -> None:
    # mallory is stored, suspended, in no group; she sends herself unsuspended, a reader.
    checks, _ = stubs
    fake = user("mallory", ref("Group", "readers"))
    # Control: a user nobody stored may be supplied with that parent (the manifest allows it).
    newcomer = user("newcomer", ref("Group", "readers"))
    assert checks.Check(check("newcomer", "read", "doc1", entities=[newcomer])).decision == ALLOW
    code, details = refusal(checks.Check, check("mallory", "read", "doc1", entities=[fake]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        'entities[0]: User::"mallory": is a stored entity (request entities may not redefine it)'
    )
    # Even where the manifest trusts the caller with what it sends (Cedar's model): a
    # stored entity, like a base one, is never redefined. Here with admin parents.
    checks, _ = trusted
    admin = user("mallory", ref("Role", "admin"))
    code, details = refusal(checks.Check, check("mallory", "edit", "doc1", entities=[admin]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "is a stored entity" in details


def test_a_request_entity_cannot_claim_membership_for_a_stored_user(stubs: Stubs) -> None:
    # alice (stored) names Group::"contractors" as a parent, which nobody stored. A request
    # defining it inside the stored readers group would make alice a reader.
    checks, _ = stubs
    graft = group("contractors", ref("Group", "readers"))
    code, details = refusal(checks.Check, check("alice", "read", "doc1", entities=[graft]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        'entities[0]: Group::"contractors": is named by a stored entity without being defined '
        "there (a request may not define it)"
    )
    # Control: a request group nobody names, in the same stored group, is accepted...
    fresh = group("visitors", ref("Group", "readers"))
    visitor = user("visitor", ref("Group", "visitors"))
    r = checks.Check(check("visitor", "read", "doc1", entities=[fresh, visitor]))
    assert r.decision == ALLOW and list(r.determining_policies) == ["readers-read"]
    # ...and alice, without the graft, is not a reader.
    assert checks.Check(check("alice", "read", "doc1")).decision != ALLOW


def test_a_request_entity_may_not_claim_a_stored_parent_the_manifest_does_not_allow(
    stubs: Stubs,
) -> None:
    checks, _ = stubs
    # Role is the bundle's (authoritative): a request user may not be made an admin.
    fake = user("visitor", ref("Role", "admin"))
    code, details = refusal(checks.Check, check("visitor", "edit", "doc1", entities=[fake]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith('entities[0].parents[0]: Role::"admin": type Role may not be')


def test_request_entities_in_a_batch_are_checked_against_the_store(stubs: Stubs) -> None:
    checks, _ = stubs
    request = pb.CheckBatchRequest(
        principal=uid("User", "mallory"),
        entities_json=json.dumps([user("mallory", ref("Group", "readers"))]),
        items=[pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1"))],
    )
    code, details = refusal(checks.CheckBatch, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "is a stored entity" in details
