"""Property: malformed or hostile requests are refused or denied, never allowed, never a crash."""

from __future__ import annotations

import json
from typing import Any

import grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

# Request refusals the server may answer with; anything else (UNKNOWN, INTERNAL) is a bug.
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

# Principals that hold no grant on doc1/doc2 in the docs bundle: unknown users, a
# foreigner, non-users. Anything generated from these must be denied.
principals = st.one_of(
    st.builds(
        vpb.EntityUid,
        type=st.sampled_from(["User", "Org", "Document", "Group"]),
        id=st.text(max_size=12),
    ),
    st.just(vpb.EntityUid(type="User", id="mallory")),
    st.builds(vpb.EntityUid, type=st.text(max_size=8), id=st.text(max_size=8)),
)
# Mostly well-formed, so that many requests get as far as a decision.
actions = st.one_of(
    st.sampled_from([vpb.EntityUid(type="Action", id=a) for a in ("read", "edit")]),
    st.builds(vpb.EntityUid, type=st.text(max_size=8), id=st.text(max_size=8)),
)
resources = st.one_of(
    st.sampled_from([vpb.EntityUid(type="Document", id=d) for d in ("doc1", "doc2")]),
    st.builds(vpb.EntityUid, type=st.text(max_size=8), id=st.text(max_size=8)),
)
uids = st.builds(
    vpb.EntityUid,
    type=st.one_of(st.sampled_from(["User", "Document", "Action", "Org"]), st.text(max_size=8)),
    id=st.one_of(st.sampled_from(["doc1", "doc2", "read", "edit", "acme"]), st.text(max_size=8)),
)
scalars = st.one_of(
    st.builds(vpb.Value, bool=st.booleans()),
    st.builds(vpb.Value, long=st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.builds(vpb.Value, string=st.text(max_size=10)),
    st.builds(vpb.Value, ipaddr=st.text(max_size=10)),
    st.builds(vpb.Value, decimal=st.one_of(st.text(max_size=8), st.just("0.75"))),
    st.builds(vpb.Value, datetime=st.text(max_size=12)),
    st.builds(vpb.Value, duration=st.text(max_size=6)),
    st.just(vpb.Value()),  # no kind set
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda xs: vpb.Value(set=vpb.SetValue(values=xs)), st.lists(inner, max_size=3)),
        st.builds(
            lambda d: vpb.Value(record=vpb.RecordValue(fields=d)),
            st.dictionaries(st.text(max_size=5), inner, max_size=3),
        ),
    ),
    max_leaves=8,
)
contexts = st.dictionaries(
    st.one_of(st.sampled_from(["mfa", "score", "ip", "tags", "at", "ttl"]), st.text(max_size=6)),
    values,
    max_size=4,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_texts = st.one_of(st.text(max_size=20), json_values.map(json.dumps))
entities = st.builds(
    vpb.Entity,
    uid=uids,
    attrs=st.dictionaries(
        st.sampled_from(["org", "level", "owner", "public"]), scalars, max_size=3
    ),
    parents=st.lists(uids, max_size=2),
)


@st.composite
def requests(draw: st.DrawFn) -> pb.CheckRequest:
    req = pb.CheckRequest(tenant=draw(st.sampled_from(["docs", "docs", "", "nope", "d\x00cs"])))
    if draw(st.integers(0, 9)):
        req.principal.CopyFrom(draw(principals))
    if draw(st.integers(0, 9)):
        req.action.CopyFrom(draw(actions))
    if draw(st.integers(0, 9)):
        req.resource.CopyFrom(draw(resources))
    if draw(st.booleans()):
        for k, v in draw(contexts).items():
            req.context[k].CopyFrom(v)
    if draw(st.integers(0, 3)) == 0:
        req.context_json = draw(json_texts)
    if draw(st.integers(0, 3)) == 0:
        req.entities.extend(draw(st.lists(entities, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        req.entities_json = draw(json_texts)
    return req


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(req=requests())
def test_malformed_requests_are_never_allowed(
    stub: pb_grpc.AuthorizationServiceStub, req: pb.CheckRequest
) -> None:
    try:
        r = stub.Check(req, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in REFUSALS, (exc.code(), exc.details())
        assert exc.details()  # a refusal always says why
        event(f"refused {exc.code().name} {exc.details().split(':')[0]}")
        return
    event("decided")
    assert r.decision == pb.DECISION_DENY, (req, r)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(requests(), min_size=1, max_size=5))
def test_malformed_batches_are_never_allowed(
    stub: pb_grpc.AuthorizationServiceStub, items: list[pb.CheckRequest]
) -> None:
    batch = pb.CheckBatchRequest(tenant="docs")
    for r in items:
        item = batch.items.add(context_json=r.context_json, entities_json=r.entities_json)
        for name in ("principal", "action", "resource"):
            if r.HasField(name):
                getattr(item, name).CopyFrom(getattr(r, name))
        for k, v in r.context.items():
            item.context[k].CopyFrom(v)
        item.entities.extend(r.entities)
    try:
        rs = stub.CheckBatch(batch, timeout=10).results
    except grpc.RpcError as exc:
        assert exc.code() in REFUSALS, (exc.code(), exc.details())
        event("refused")
        return
    event("decided")
    assert len(rs) == len(items)
    assert all(r.decision == pb.DECISION_DENY for r in rs)


@st.composite
def well_formed_requests(draw: st.DrawFn) -> pb.CheckRequest:
    """Valid shape, but a principal with no grant: unknown users, a foreigner, or a
    request-made user outside acme. Must come out DENY every time."""
    req = pb.CheckRequest(
        tenant="docs",
        principal=vpb.EntityUid(
            type="User", id=draw(st.one_of(st.just("mallory"), st.text(max_size=10)))
        ),
        action=vpb.EntityUid(type="Action", id=draw(st.sampled_from(["read", "edit"]))),
        resource=vpb.EntityUid(type="Document", id=draw(st.sampled_from(["doc1", "doc2", "doc9"]))),
    )
    if draw(st.booleans()):
        req.context["mfa"].bool = draw(st.booleans())
    if draw(st.booleans()):
        req.context["score"].decimal = draw(st.sampled_from(["0.1", "0.9", "1.5"]))
    if draw(st.booleans()) and req.principal.id not in ("alice", "bob", "mallory"):
        org = draw(st.sampled_from(["globex", "initech"]))
        req.entities.add(
            uid=req.principal,
            attrs={
                "org": vpb.Value(entity=vpb.EntityUid(type="Org", id=org)),
                "level": vpb.Value(long=draw(st.integers(-(2**63), 2**63 - 1))),
            },
        )
    return req


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(req=well_formed_requests())
def test_principals_without_a_grant_are_denied(
    stub: pb_grpc.AuthorizationServiceStub, req: pb.CheckRequest
) -> None:
    if req.principal.id in ("alice", "bob"):
        return  # hypothesis may draw a real grantee's name; those are tested elsewhere
    try:
        r = stub.Check(req, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in REFUSALS, (exc.code(), exc.details())
        event("refused")
        return
    event("decided")
    assert r.decision == pb.DECISION_DENY, (req, r)


def test_server_still_answers_after_the_fuzzing(stub: pb_grpc.AuthorizationServiceStub) -> None:
    r = stub.Check(
        pb.CheckRequest(
            tenant="docs",
            principal=vpb.EntityUid(type="User", id="alice"),
            action=vpb.EntityUid(type="Action", id="read"),
            resource=vpb.EntityUid(type="Document", id="doc1"),
        )
    )
    assert r.decision == pb.DECISION_ALLOW
