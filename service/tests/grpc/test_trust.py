"""Request entities cannot fabricate authority (issue 6 §1), over gRPC against a real server.

Each attack was ALLOW before the rule existed. Each attack test also sends the same
request with a genuine bundle entity and gets ALLOW, so a refusal cannot pass for
the wrong reason (a typo in the request, a policy that denies anyway).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..support import REPO, running_server

ALLOW = pb.DECISION_ALLOW


def ref(t: str, i: str) -> dict[str, str]:
    return {"type": t, "id": i}


def entity(t: str, i: str, attrs: dict[str, Any] | None = None, *parents: dict[str, str]) -> Any:
    return {"uid": ref(t, i), "attrs": attrs or {}, "parents": list(parents)}


def person(i: str, *parents: dict[str, str]) -> Any:
    """A made-up active acme user: every attribute the default bundle's policies look at."""
    attrs = {
        "org": {"__entity": ref("Org", "acme")},
        "department": "finance",
        "region": "eu",
        "suspended": False,
    }
    return entity("User", i, attrs, *parents)


# A bundle whose base names a group it does not define: alice is in Group::"team".
TEAM = {
    "schema.cedarschema": "entity Tag;\nentity Group in [Group, Tag];\nentity User in [Group];\n"
    "entity Doc;\naction view appliesTo { principal: User, resource: Doc };\n",
    "policies.cedar": '@id("admins-view")\n'
    'permit (principal in Group::"admins", action == Action::"view", resource);\n',
    "entities.json": json.dumps(
        [
            entity("Group", "admins"),
            entity("User", "alice", None, ref("Group", "team")),
            entity("User", "root", None, ref("Group", "admins")),
            entity("Doc", "d1"),
        ]
    ),
}
# The same, letting requests supply groups (in groups): the rules then show one by one.
TEAM_OPEN = {
    "authoritative_types": ["User", "Doc"],
    "request_entities": {"Group": {"parents": ["Group"]}},
}


def write_bundle(root: Path, files: dict[str, str], manifest: dict[str, Any]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "manifest.json").write_text(json.dumps({"version": "1", **manifest}))
    return root


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    tmp = tmp_path_factory.mktemp("trust")
    trusted = tmp / "trusted"
    shutil.copytree(REPO / "policies", trusted)
    manifest = json.loads((trusted / "manifest.json").read_text())
    manifest.pop("authoritative_types", None)
    (trusted / "manifest.json").write_text(json.dumps({**manifest, "request_entities": "trusted"}))
    team = write_bundle(tmp / "team", TEAM, {"name": "team"})
    team_open = write_bundle(tmp / "team-open", TEAM, {"name": "team-open", **TEAM_OPEN})
    bundles = {"default": REPO / "policies", "trusted": trusted, "team": team, "open": team_open}
    args = [a for t, p in bundles.items() for a in ("--bundle", f"{t}={p}")]
    with running_server([*args, "--no-watch"]) as srv, srv.channel() as ch:
        yield pb_grpc.AuthorizationServiceStub(ch)


def check(
    principal: tuple[str, str],
    action: str,
    resource: tuple[str, str],
    context: dict[str, Any] | None = None,
    entities: list[Any] | None = None,
    tenant: str = "default",
) -> pb.CheckRequest:
    return pb.CheckRequest(
        tenant=tenant,
        principal=vpb.EntityUid(type=principal[0], id=principal[1]),
        action=vpb.EntityUid(type="Action", id=action),
        resource=vpb.EntityUid(type=resource[0], id=resource[1]),
        context_json=json.dumps(context or {}),
        entities_json=json.dumps(entities) if entities is not None else "",
    )


def refusal(stub: pb_grpc.AuthorizationServiceStub, request: Any, batch: bool = False) -> str:
    """The INVALID_ARGUMENT details of a refused request."""
    with pytest.raises(grpc.RpcError) as err:
        (stub.CheckBatch if batch else stub.Check)(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return str(err.value.details())


OWNED = "may not be supplied by a request (the bundle owns it: authoritative_types)"


def test_dual_control_cannot_be_met_by_a_made_up_approver(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    def refund(approver: str, entities: list[Any] | None = None) -> pb.CheckRequest:
        context = {"amount_cents": 150000, "approver": {"__entity": ref("User", approver)}}
        return check(("User", "dave"), "refund", ("Invoice", "inv-1001"), context, entities)

    # Control: a genuine second billing admin.
    assert stub.Check(refund("erin")).decision == ALLOW
    sock = person("sock", ref("Role", "billing-admin"))
    assert refusal(stub, refund("sock", [sock])) == f'entities[0]: User::"sock": type User {OWNED}'


def test_human_approval_cannot_be_given_by_a_made_up_user(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    def invoke(approver: str, entities: list[Any] | None = None) -> pb.CheckRequest:
        context = {
            "human_approval": {"approver": {"__entity": ref("User", approver)}, "ticket": "T-1"}
        }
        return check(
            ("Agent", "acme-copilot"), "invoke_tool", ("Tool", "bulk-delete"), context, entities
        )

    assert stub.Check(invoke("erin")).decision == ALLOW
    # No parents at all: its attributes alone would pass the approval forbid.
    details = refusal(stub, invoke("rubber", [person("rubber")]))
    assert details == f'entities[0]: User::"rubber": type User {OWNED}'


def test_a_made_up_user_cannot_join_org_admin(stub: pb_grpc.AuthorizationServiceStub) -> None:
    assert stub.Check(check(("User", "alice"), "delete", ("Document", "doc-3"))).decision == ALLOW
    eve = person("eve", ref("Role", "org-admin"))
    request = check(("User", "eve"), "delete", ("Document", "doc-3"), entities=[eve])
    assert refusal(stub, request) == f'entities[0]: User::"eve": type User {OWNED}'


def test_a_group_the_base_names_cannot_be_defined_into_admins(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    def view(user: str, entities: list[Any] | None = None, tenant: str = "team") -> Any:
        return check(("User", user), "view", ("Doc", "d1"), None, entities, tenant)

    assert stub.Check(view("root")).decision == ALLOW  # a genuine admin
    team = entity("Group", "team", None, ref("Group", "admins"))
    details = refusal(stub, view("alice", [team]))  # Group has base entities: authoritative
    assert details == f'entities[0]: Group::"team": type Group {OWNED}'
    # Even where requests may supply groups in groups, not one the base names (rule d).
    details = refusal(stub, view("alice", [team], "open"))
    assert details == (
        'entities[0]: Group::"team": is named by the bundle\'s base entities without being '
        "defined there (a request may not define it)"
    )


def test_rule_a_only_declared_types(stub: pb_grpc.AuthorizationServiceStub) -> None:
    request = check(("User", "alice"), "view", ("Doc", "d1"), None, [entity("Tag", "t")], "open")
    assert refusal(stub, request) == (
        'entities[0]: Tag::"t": type Tag may not be supplied by a request '
        "(the bundle does not declare it in request_entities)"
    )


def test_rule_b_never_authoritative_types(stub: pb_grpc.AuthorizationServiceStub) -> None:
    request = check(("User", "x"), "view", ("Doc", "d1"), None, [entity("User", "x")], "open")
    assert refusal(stub, request) == f'entities[0]: User::"x": type User {OWNED}'


def test_rule_c_only_declared_parent_types(stub: pb_grpc.AuthorizationServiceStub) -> None:
    # The schema allows Tag as a parent of Group; the manifest does not.
    ents = [entity("Group", "g1"), entity("Group", "g2", None, ref("Group", "g1"), ref("Tag", "t"))]
    request = check(("User", "alice"), "view", ("Doc", "d1"), None, ents, "open")
    assert refusal(stub, request) == (
        'entities[1].parents[1]: Tag::"t": type Tag may not be a parent of a request entity of '
        "type Group (request_entities.Group.parents allows: Group)"
    )


def test_rule_d_never_a_base_entity(stub: pb_grpc.AuthorizationServiceStub) -> None:
    admins = entity("Group", "admins")  # identical to the base's own: still refused
    request = check(("User", "alice"), "view", ("Doc", "d1"), None, [admins], "open")
    assert refusal(stub, request) == (
        'entities[0]: Group::"admins": is a base entity (request entities may not redefine it)'
    )


def test_an_allowed_entity_is_accepted_and_grants_only_what_the_bundle_lets_it(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    # A fresh group in admins is accepted, but no base user is in it: alice gains nothing.
    fresh = entity("Group", "fresh", None, ref("Group", "admins"))
    r = stub.Check(check(("User", "alice"), "view", ("Doc", "d1"), None, [fresh], "open"))
    assert r.decision == pb.DECISION_DENY


def test_batch_errors_name_the_item_or_the_batch_default(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    sock = json.dumps([person("sock", ref("Role", "billing-admin"))])
    item = pb.BatchItem(
        action=vpb.EntityUid(type="Action", id="read"),
        resource=vpb.EntityUid(type="Document", id="doc-1"),
    )
    own = pb.BatchItem()
    own.CopyFrom(item)
    own.entities_json = sock
    batch = pb.CheckBatchRequest(
        principal=vpb.EntityUid(type="User", id="alice"), items=[item, item, item, own]
    )
    assert (
        refusal(stub, batch, batch=True) == f'items[3].entities[0]: User::"sock": type User {OWNED}'
    )
    batch = pb.CheckBatchRequest(
        principal=vpb.EntityUid(type="User", id="alice"), items=[item, item], entities_json=sock
    )
    assert refusal(stub, batch, batch=True) == f'entities[0]: User::"sock": type User {OWNED}'


def test_trusted_keeps_cedars_behaviour(stub: pb_grpc.AuthorizationServiceStub) -> None:
    context = {"amount_cents": 150000, "approver": {"__entity": ref("User", "sock")}}
    sock = person("sock", ref("Role", "billing-admin"))
    request = check(("User", "dave"), "refund", ("Invoice", "inv-1001"), context, [sock], "trusted")
    r = stub.Check(request)
    # What Cedar decides: the caller is trusted with every entity it sends...
    assert r.decision == ALLOW and list(r.determining_policies) == ["billing-admin-refund"]
    # ...except that a base entity is never redefined.
    dave = person("dave", ref("Role", "billing-admin"), ref("Role", "org-admin"))
    request = check(("User", "dave"), "read", ("Invoice", "inv-1001"), None, [dave], "trusted")
    assert "redefine" in refusal(stub, request)
