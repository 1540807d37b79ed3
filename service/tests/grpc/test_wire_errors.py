"""Errors callers see for bytes that are not a request, and for JSON a PEP may misread
(issue 6 §7): INVALID_ARGUMENT naming what is wrong, no traceback in the log."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..support import ServerProcess

SERVICE = "/pdp.v1.AuthorizationService/"
DOCS_REQUEST = pb.CheckRequest(
    tenant="docs",
    principal=vpb.EntityUid(type="User", id="alice"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)


def raw_call(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    """A call that sends `bytes` as they are: no serializer on our side."""
    return channel.unary_unary(  # type: ignore[no-any-return]
        SERVICE + method, request_serializer=None, response_deserializer=None
    )


def refused(call: Callable[[], Any]) -> str:
    """The details of an INVALID_ARGUMENT answer to `call`."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details()  # type: ignore[no-any-return]


def deep_value_bytes(depth: int) -> bytes:
    """`context {"a": set{set{...}}}` nested `depth` deep, encoded by hand: protobuf's own
    encoder refuses past its nesting limit (100) too."""
    inner = b"\x08\x01"  # Value{bool: true}
    for _ in range(depth):
        values = b"\x0a" + _varint(len(inner)) + inner  # SetValue{values: [inner]}
        inner = b"\x22" + _varint(len(values)) + values  # Value{set: values}
    entry = b"\x0a\x01a" + b"\x12" + _varint(len(inner)) + inner  # map entry {"a": inner}
    return DOCS_REQUEST.SerializeToString() + b"\x2a" + _varint(len(entry)) + entry


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


UNDECODABLE = {
    "garbage": b"\xff\xff\xff\xff",
    "truncated": DOCS_REQUEST.SerializeToString()[:-3],
    "bad UTF-8 in tenant": b"\x0a\x02\xc3\x28",
    "value nested past protobuf's limit": deep_value_bytes(150),
}


@pytest.mark.parametrize("method", ["Check", "CheckBatch"])
@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_request_is_invalid_argument(
    server: ServerProcess, channel: grpc.Channel, method: str, name: str
) -> None:
    before = len(server.lines)
    details = refused(lambda: raw_call(channel, method)(UNDECODABLE[name], timeout=10))
    assert details.startswith(f"request: not a valid pdp.v1.{method}Request")
    assert "Traceback" not in "\n".join(server.lines[before:])
    # The same channel still decides a good request: nothing was broken or changed.
    ok = raw_call(channel, "Check")(DOCS_REQUEST.SerializeToString(), timeout=10)
    assert pb.CheckResponse.FromString(ok).decision == pb.DECISION_ALLOW


def test_deep_context_json_is_invalid_argument_without_a_log_line_each(
    server: ServerProcess, stub: pb_grpc.AuthorizationServiceStub
) -> None:
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    before = len(server.lines)
    for _ in range(50):
        details = refused(lambda: stub.Check(pb.CheckRequest(context_json=deep), timeout=10))
        assert details == "context_json: nested deeper than 32 levels"
    # At most one line per request (there are none today); before, each logged a traceback.
    added = server.lines[before:]
    assert len(added) <= 50 and "Traceback" not in "\n".join(added)


DUPLICATES = [
    ('{"amount_cents":150000,"amount_cents":50}', "context_json.amount_cents"),
    ('{"a":{"b":[{"c":1},{"c":2,"c":3}]}}', "context_json.a.b[1].c"),
    ('{"a":{"x":1,"x":1}}', "context_json.a.x"),  # equal values: refused all the same
]


@pytest.mark.parametrize(("text", "path"), DUPLICATES)
def test_duplicate_key_in_context_json_is_refused_by_path(
    stub: pb_grpc.AuthorizationServiceStub, text: str, path: str
) -> None:
    details = refused(lambda: stub.Check(pb.CheckRequest(context_json=text), timeout=10))
    assert details == f"{path}: duplicate key (a key may appear once)"


def test_duplicate_key_in_entities_json_and_batch_items(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    ent = '[{"uid":{"type":"User","id":"z"},"attrs":{"level":1,"level":9},"parents":[]}]'
    req = pb.CheckRequest(entities_json=ent)
    req.MergeFrom(DOCS_REQUEST)  # entities are converted after the principal, action, resource
    details = refused(lambda: stub.Check(req, timeout=10))
    assert details.startswith("entities_json[0].attrs.level: duplicate key")
    item = pb.BatchItem(action=DOCS_REQUEST.action, resource=DOCS_REQUEST.resource)
    bad = pb.BatchItem(
        action=DOCS_REQUEST.action, resource=DOCS_REQUEST.resource, context_json='{"m":1,"m":2}'
    )
    batch = pb.CheckBatchRequest(tenant="docs", principal=DOCS_REQUEST.principal)
    batch.items.extend([item, bad])
    details = refused(lambda: stub.CheckBatch(batch, timeout=10))
    assert details.startswith("items[1].context_json.m: duplicate key")
    batch.ClearField("items")
    batch.items.append(item)
    batch.entities_json = ent
    details = refused(lambda: stub.CheckBatch(batch, timeout=10))
    assert details.startswith("entities_json[0].attrs.level: duplicate key")


# JSON documents with a key repeated somewhere inside, and that key's path.
_keys = st.text("abcxyz_", min_size=1, max_size=3)
_scalars = st.one_of(st.integers(), st.booleans(), st.text(max_size=3), st.none())


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@st.composite
def with_repeated_key(draw: st.DrawFn) -> tuple[str, str, int]:
    """(document text, path of the repeated key, its depth): the repeat is planted in an
    object at a random position of a random tree, as the last member of that object."""
    depth = draw(st.integers(0, 5))
    key = draw(_keys)
    obj: dict[str, Any] = draw(st.dictionaries(_keys, _scalars, min_size=1, max_size=3))
    obj[key] = draw(_scalars)
    text = "{" + ",".join(f"{_json_text(k)}:{_json_text(v)}" for k, v in obj.items())
    text += f",{_json_text(key)}:{_json_text(draw(_scalars))}}}"
    path = f".{key}"
    for _ in range(depth):
        if draw(st.booleans()):
            before = draw(st.lists(_scalars, max_size=2))
            text = "[" + "".join(f"{_json_text(b)}," for b in before) + text + "]"
            path = f"[{len(before)}]{path}"
        else:
            outer = draw(_keys)
            sibling = draw(st.dictionaries(_keys, _scalars, max_size=2))
            sibling.pop(outer, None)  # the only repeat is the planted one
            members = [f"{_json_text(k)}:{_json_text(v)}" for k, v in sibling.items()]
            text = "{" + ",".join([*members, f"{_json_text(outer)}:{text}"]) + "}"
            path = f".{outer}{path}"
    return "{" + f'"ctx":{text}' + "}", f".ctx{path}", depth


def test_a_repeated_key_at_any_depth_is_refused_naming_its_path(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    seen: Counter[int] = Counter()

    # Derandomized, so the depth counts below are the same on every run, alone or not.
    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(case=with_repeated_key())
    def run(case: tuple[str, str, int]) -> None:
        text, path, depth = case
        seen[depth] += 1
        details = refused(lambda: stub.Check(pb.CheckRequest(context_json=text), timeout=10))
        assert details == f"context_json{path}: duplicate key (a key may appear once)"

    run()
    # The generator reached every depth 0..5, several times each.
    assert sorted(seen) == list(range(6)), seen
    assert min(seen.values()) >= 5, seen
