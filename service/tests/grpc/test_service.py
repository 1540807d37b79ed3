"""AuthorizationService end to end: the real server over loopback, the generated stubs."""

from __future__ import annotations

import json

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY


def uid(t: str, i: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=t, id=i)


def docs(**kw: object) -> pb.CheckRequest:
    base: dict[str, object] = {
        "tenant": "docs",
        "principal": uid("User", "alice"),
        "action": uid("Action", "read"),
        "resource": uid("Document", "doc1"),
    }
    base.update(kw)
    return pb.CheckRequest(**base)  # type: ignore[arg-type]


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    return call.code()  # type: ignore[no-any-return]


def test_allow_names_determining_policies_and_version(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    r = stub.Check(docs())
    assert r.decision == ALLOW
    assert set(r.determining_policies) == {"read-public", "owner-all"}
    assert r.policy_version.bundle == "docs"
    assert r.policy_version.version == "1.0.0"
    assert r.policy_version.digest.startswith("sha256:") and len(r.policy_version.digest) == 71


def test_forbid_wins_and_reports_the_forbid(stub: pb_grpc.AuthorizationServiceStub) -> None:
    r = stub.Check(docs(principal=uid("User", "mallory")))
    assert r.decision == DENY
    assert list(r.determining_policies) == ["org-boundary"]


def test_default_deny_has_no_determining_policy(stub: pb_grpc.AuthorizationServiceStub) -> None:
    r = stub.Check(docs(principal=uid("User", "bob"), action=uid("Action", "edit")))
    assert r.decision == DENY
    assert "edit-needs-mfa" in r.determining_policies
    r = stub.Check(
        docs(
            principal=uid("User", "bob"),
            action=uid("Action", "edit"),
            context={"mfa": vpb.Value(bool=True)},
        )
    )
    assert r.decision == DENY
    assert list(r.determining_policies) == []


def test_template_link_is_reported_by_its_id(stub: pb_grpc.AuthorizationServiceStub) -> None:
    r = stub.Check(docs(principal=uid("User", "bob"), resource=uid("Document", "doc2")))
    assert r.decision == ALLOW
    assert list(r.determining_policies) == ["share-doc2-with-bob"]


def test_evaluation_errors_are_listed_per_policy(stub: pb_grpc.AuthorizationServiceStub) -> None:
    r = stub.Check(docs(principal=uid("User", "bob"), resource=uid("Document", "doc2")))
    assert [(e.policy_id, "overflow" in e.message) for e in r.errors] == [("overflow", True)]


def test_decision_ids_are_unique(stub: pb_grpc.AuthorizationServiceStub) -> None:
    ids = {stub.Check(docs()).decision_id for _ in range(50)}
    assert len(ids) == 50


def test_typed_context_values_of_every_kind(stub: pb_grpc.AuthorizationServiceStub) -> None:
    ctx = {
        "mfa": vpb.Value(bool=True),
        "ip": vpb.Value(ipaddr="10.0.0.1"),
        "score": vpb.Value(decimal="0.75"),
        "at": vpb.Value(datetime="2026-11-29T10:00:00Z"),
        "ttl": vpb.Value(duration="1h30m"),
        "tags": vpb.Value(set=vpb.SetValue(values=[vpb.Value(string="a"), vpb.Value(string="b")])),
    }
    r = stub.Check(
        docs(action=uid("Action", "edit"), resource=uid("Document", "doc2"), context=ctx)
    )
    assert r.decision == ALLOW
    assert set(r.determining_policies) == {"owner-all", "level-edit"}


def test_context_json_is_parsed_with_the_schema(stub: pb_grpc.AuthorizationServiceStub) -> None:
    # A decimal written as a plain string, as Cedar's schema-based parsing allows.
    ctx = json.dumps({"mfa": True, "score": "0.75"})
    r = stub.Check(docs(action=uid("Action", "edit"), context_json=ctx))
    assert "level-edit" in r.determining_policies
    low = json.dumps({"mfa": True, "score": "0.25"})
    r = stub.Check(docs(action=uid("Action", "edit"), context_json=low))
    assert "level-edit" not in r.determining_policies


def test_request_entities_typed_and_json(stub: pb_grpc.AuthorizationServiceStub) -> None:
    org = vpb.Value(entity=uid("Org", "acme"))
    newbie = vpb.Entity(uid=uid("User", "newbie"), attrs={"org": org, "level": vpb.Value(long=0)})
    r = stub.Check(docs(principal=uid("User", "newbie"), entities=[newbie]))
    assert r.decision == ALLOW
    assert set(r.determining_policies) == {"read-public", "overflow"}  # level 0 cannot overflow
    as_json = json.dumps(
        [
            {
                "uid": {"type": "User", "id": "newbie"},
                "attrs": {"org": {"type": "Org", "id": "globex"}, "level": 0},
                "parents": [],
            }
        ]
    )
    r = stub.Check(docs(principal=uid("User", "newbie"), entities_json=as_json))
    assert r.decision == DENY and list(r.determining_policies) == ["org-boundary"]


def test_request_entities_cannot_redefine_base_entities(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    # mallory (globex) tries to move herself into acme for this one request.
    fake = json.dumps(
        [
            {
                "uid": {"type": "User", "id": "mallory"},
                "attrs": {"org": {"type": "Org", "id": "acme"}, "level": 9},
                "parents": [],
            }
        ]
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(docs(principal=uid("User", "mallory"), entities_json=fake))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "entities" in err.value.details() and "redefine" in err.value.details()


def test_batch_results_in_order_with_batch_defaults(stub: pb_grpc.AuthorizationServiceStub) -> None:
    req = pb.CheckBatchRequest(
        tenant="docs",
        principal=uid("User", "bob"),
        context={"mfa": vpb.Value(bool=True)},
        items=[
            pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1")),
            pb.BatchItem(action=uid("Action", "edit"), resource=uid("Document", "doc1")),
            pb.BatchItem(
                principal=uid("User", "mallory"),
                action=uid("Action", "read"),
                resource=uid("Document", "doc1"),
            ),
            pb.BatchItem(
                principal=uid("User", "alice"),
                action=uid("Action", "edit"),
                resource=uid("Document", "doc1"),
                context_json='{"mfa": false}',
            ),
        ],
    )
    rs = stub.CheckBatch(req).results
    assert [r.decision for r in rs] == [ALLOW, DENY, DENY, DENY]
    assert list(rs[0].determining_policies) == ["read-public"]
    assert list(rs[2].determining_policies) == ["org-boundary"]
    assert list(rs[3].determining_policies) == ["edit-needs-mfa"]  # item context overrides
    assert len({r.decision_id for r in rs}) == 4


def test_batch_over_the_cap_is_refused(stub: pb_grpc.AuthorizationServiceStub) -> None:
    item = pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1"))
    req = pb.CheckBatchRequest(tenant="docs", principal=uid("User", "bob"), items=[item] * 101)
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(req)
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "items" in err.value.details() and "100" in err.value.details()
    assert (
        len(
            stub.CheckBatch(
                pb.CheckBatchRequest(
                    tenant="docs", principal=uid("User", "bob"), items=[item] * 100
                )
            ).results
        )
        == 100
    )


BAD_REQUESTS = [
    (docs(principal=None), "principal: required"),
    (docs(action=None), "action: required"),
    (docs(resource=None), "resource: required"),
    (docs(principal=uid("", "alice")), "principal.type: must not be empty"),
    (docs(resource=uid("Not A Type", "x")), "resource.type"),
    (docs(context={"mfa": vpb.Value(long=1)}), "context"),
    (docs(context={"nope": vpb.Value(bool=True)}), "context"),
    (docs(context={"mfa": vpb.Value()}), "context.mfa: value has no type set"),
    (docs(context_json="[1, 2]"), "context_json: must be a JSON object"),
    (docs(context_json="{not json"), "context_json: not valid JSON"),
    (
        docs(context_json='{"mfa": true}', context={"mfa": vpb.Value(bool=True)}),
        "context: set either",
    ),
    (docs(entities_json='{"uid": 1}'), "entities_json: must be a JSON list"),
    (
        docs(entities_json='[{"uid": {"type": "User", "id": "z"}, "attrs": {"level": "high"}}]'),
        "entities",
    ),
    (docs(entities=[vpb.Entity()]), "entities[0].uid: required"),
    (docs(principal=uid("Document", "doc1")), "principal"),
    (docs(action=uid("Action", "delete")), "action"),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS)
def test_bad_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.AuthorizationServiceStub, request_: pb.CheckRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(request_)
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(message.split(":")[0])
    assert message in err.value.details()
    assert stub.Check(docs()).decision == ALLOW  # the server is up and unchanged


def test_bad_batch_item_names_the_item(stub: pb_grpc.AuthorizationServiceStub) -> None:
    ok = pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1"))
    bad = pb.BatchItem(
        action=uid("Action", "read"), resource=uid("Document", "doc1"), context_json='{"mfa": 3}'
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(
            pb.CheckBatchRequest(tenant="docs", principal=uid("User", "bob"), items=[ok, ok, bad])
        )
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("items[2].context")
    no_principal = pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1"))
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(pb.CheckBatchRequest(tenant="docs", items=[no_principal]))
    assert err.value.details().startswith("items[0].principal: required")


def test_bad_batch_default_names_the_batch_field(stub: pb_grpc.AuthorizationServiceStub) -> None:
    item = pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "doc1"))
    req = pb.CheckBatchRequest(
        tenant="docs",
        principal=uid("User", "bob"),
        context_json='{"mfa": "yes"}',
        items=[item, item],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(req)
    assert err.value.details().startswith("context")


def test_unknown_tenant_is_not_found(stub: pb_grpc.AuthorizationServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(docs(tenant="no-such-tenant"))
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND
    assert "no-such-tenant" in err.value.details()


def test_empty_tenant_means_default(stub: pb_grpc.AuthorizationServiceStub) -> None:
    r = stub.Check(
        pb.CheckRequest(
            principal=uid("User", "bob"),
            action=uid("Action", "edit"),
            resource=uid("Document", "doc-1"),
        )
    )
    assert r.decision == ALLOW
    assert r.policy_version.bundle == "default"


def test_oversized_message_is_resource_exhausted(stub: pb_grpc.AuthorizationServiceStub) -> None:
    huge = docs(context={"tags": vpb.Value(string="x" * (5 * 1024 * 1024))})
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(huge)
    assert code_of(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Check(docs()).decision == ALLOW
