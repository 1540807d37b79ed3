"""Request entities cannot fabricate authority (issue 6 §1), over gRPC against a real server.

Each attack was ALLOW before the rule existed. Each attack test also sends the same
request with a genuine bundle entity and gets ALLOW, so a refusal cannot pass for
the wrong reason (a typo in the request, a policy that denies anyway).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..support import pdp_command
from .trust_support import ALLOW, REFUND_INV_1001, STEPPED_UP, check, entity, person, ref, stub

__all__ = ["stub"]  # the module's server fixture


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
        context = {
            **REFUND_INV_1001,
            "amount_cents": 150000,
            "approver": {"__entity": ref("User", approver)},
        }
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
            "human_approval": {"approver": {"__entity": ref("User", approver)}, "ticket": "T-1"},
            "tokens": 100,  # within the agent's ceiling and the org's budget
        }
        return check(
            ("Agent", "acme-copilot"), "invoke_tool", ("Tool", "bulk-delete"), context, entities
        )

    assert stub.Check(invoke("erin")).decision == ALLOW
    # No parents at all: its attributes alone would pass the approval forbid.
    details = refusal(stub, invoke("rubber", [person("rubber")]))
    assert details == f'entities[0]: User::"rubber": type User {OWNED}'


def test_a_made_up_user_cannot_join_org_admin(stub: pb_grpc.AuthorizationServiceStub) -> None:
    delete = check(("User", "alice"), "delete", ("Document", "doc-3"), STEPPED_UP)
    assert stub.Check(delete).decision == ALLOW
    eve = person("eve", ref("Role", "org-admin"))
    request = check(("User", "eve"), "delete", ("Document", "doc-3"), STEPPED_UP, [eve])
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
    context = {
        **REFUND_INV_1001,
        "amount_cents": 150000,
        "approver": {"__entity": ref("User", "sock")},
    }
    sock = person("sock", ref("Role", "billing-admin"))
    request = check(("User", "dave"), "refund", ("Invoice", "inv-1001"), context, [sock], "trusted")
    r = stub.Check(request)
    # What Cedar decides: the caller is trusted with every entity it sends...
    assert r.decision == ALLOW and list(r.determining_policies) == ["billing-admin-refund"]
    # ...except that a base entity is never redefined.
    dave = person("dave", ref("Role", "billing-admin"), ref("Role", "org-admin"))
    request = check(("User", "dave"), "read", ("Invoice", "inv-1001"), None, [dave], "trusted")
    assert "redefine" in refusal(stub, request)


def test_pdp_check_in_process_applies_the_servers_rule(tmp_path: Path) -> None:
    sock = tmp_path / "sock.json"
    sock.write_text(json.dumps([person("sock", ref("Role", "billing-admin"))]))

    def pdp_check(approver: str, *extra: str) -> subprocess.CompletedProcess[str]:
        context = {
            **REFUND_INV_1001,
            "amount_cents": 150000,
            "approver": {"__entity": ref("User", approver)},
        }
        args = ["--principal", 'User::"dave"', "--action", 'Action::"refund"']
        args += ["--resource", 'Invoice::"inv-1001"', "--context", json.dumps(context)]
        command = [*pdp_command(), "check", *args, *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert pdp_check("erin").returncode == 0  # ALLOW
    refused = pdp_check("sock", "--entities", f"@{sock}")
    assert refused.returncode == 2, refused.stdout
    assert f'entities[0]: User::"sock": type User {OWNED}' in refused.stderr


def test_a_repeated_key_cannot_smuggle_an_entity(stub: pb_grpc.AuthorizationServiceStub) -> None:
    # This check reads the last "uid", Cedar refuses the repetition: refused either way.
    fresh, alice = json.dumps(ref("Group", "fresh")), json.dumps(ref("User", "alice"))
    for first, last in ((alice, fresh), (fresh, alice)):
        smuggled = f'[{{"uid": {first}, "uid": {last}, "attrs": {{}}, "parents": []}}]'
        request = check(("User", "alice"), "view", ("Doc", "d1"), None, None, "open")
        request.entities_json = smuggled
        refusal(stub, request)
