"""Fuzzing the real server (issue 10, "Limits and abuse").

(a) Raw protobuf bytes to Check, CheckBatch and CheckStream through a raw channel (no
    serializer on our side): valid messages, mutated valid messages and random bytes.
(b) The Cedar JSON fields (`context_json`, `entities_json`) and typed values, from
    structure-aware generators that mostly get past the parser and reach evaluation.

Invariants, for every input:
- the server answers, with a decision or one of the codes a caller's input may earn
  (never INTERNAL or UNKNOWN), and still answers a known request afterwards;
- bytes that do not decode as the message are INVALID_ARGUMENT; an Allow only ever
  answers a message that decodes and names an action, a resource and a principal;
- the answer is the one an in-process servicer without a decision cache gives for the
  same bytes (a differential oracle: the server's cache, threads and transport change
  nothing), so a malformed input is refused exactly as the code refuses it, never Allowed;
- the server's RSS stays within a bound.

`make test` runs a few dozen inputs per property (seconds); `make fuzz` sets
`PDP_FUZZ_EXAMPLES` for a larger run. The counts of each class (sent, decided, allowed,
refused) are written to `build/fuzz-counts.json` and checked to reach evaluation.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import load_bundle
from pdp.engine import Engine, Snapshot
from pdp.errors import PdpError
from pdp.grpc.servicer import AuthorizationServicer
from pdp.grpc.status import error_status
from pdp.grpc.wire import Undecodable, decoded

from .support import DOCS_BUNDLE, REPO, ServerProcess

EXAMPLES = int(os.environ.get("PDP_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SERVICE = "/pdp.v1.AuthorizationService/"
RSS_BOUND = 256 * 1024 * 1024  # growth over a run; the decision cache alone may hold 64 MiB
# What a caller's input may earn. UNAUTHENTICATED: a `token` (no JWKS is configured).
CALLER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
}
COUNTS: Counter[str] = Counter()


# --- the oracle (the server is conftest's: the default bundle and docs) -----------------


@pytest.fixture(scope="module")
def oracle() -> AuthorizationServicer:
    """The same bundles decided in this process, without a cache: what the server must say."""
    bundles = {"default": load_bundle(REPO / "policies"), "docs": load_bundle(DOCS_BUNDLE)}
    return AuthorizationServicer(Engine(Snapshot.of(bundles)), max_batch_items=100)


def rss(srv: ServerProcess) -> int:
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


Outcome = tuple[str, Any]  # ("ok", comparable response) or ("error", (code, details))


def _comparable(r: pb.CheckResponse) -> tuple[Any, ...]:
    # Sorted: Cedar returns both as sets, in an order that differs between processes.
    errors = sorted((e.policy_id, e.message) for e in r.errors)
    return (r.decision, tuple(sorted(r.determining_policies)), tuple(errors))


class _InProcess:
    """What the servicer's request path reads of a call's context, for a call made in
    process: no deadline, no metadata."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def expected(oracle: AuthorizationServicer, method: str, data: bytes) -> Outcome:
    message = pb.CheckRequest if method == "Check" else pb.CheckBatchRequest
    request: Any
    try:
        request = message.FromString(data)
    except DecodeError as exc:
        request = Undecodable(message.DESCRIPTOR.full_name, str(exc) or "cannot decode")
    try:
        context: Any = _InProcess()
        if method == "Check":
            return ("ok", _comparable(oracle._check(request, context, None, None)))
        out = oracle._batch(decoded(request), context)
        return ("ok", tuple(_comparable(r) for r in out.results))
    except PdpError as exc:
        code, details = error_status(exc, method)
        return ("error", (code, _field(details)))


def _field(details: str) -> str:
    """The field an error names. Its reason is not compared: Cedar words some reasons by
    the order of a hash map, which differs between processes (of two unknown attributes,
    the one it names first)."""
    return details.split(": ", 1)[0]


def answered(channel: grpc.Channel, method: str, data: bytes) -> Outcome:
    call = channel.unary_unary(
        SERVICE + method, request_serializer=None, response_deserializer=None
    )
    try:
        raw = call(data, timeout=30)
    except grpc.RpcError as err:
        return ("error", (err.code(), _field(err.details())))
    if method == "Check":
        return ("ok", _comparable(pb.CheckResponse.FromString(raw)))
    return ("ok", tuple(_comparable(r) for r in pb.CheckBatchResponse.FromString(raw).results))


def _allows(outcome: Outcome, method: str) -> bool:
    if outcome[0] != "ok":
        return False
    decisions = [outcome[1]] if method == "Check" else list(outcome[1])
    return any(d[0] == pb.DECISION_ALLOW for d in decisions)


def _well_formed_for_allow(method: str, data: bytes) -> bool:
    """What an Allow needs, checked without the server's code: the bytes decode, and each
    decision names an action, a resource and a principal (or carries a token)."""
    try:
        if method == "Check":
            req = pb.CheckRequest.FromString(data)
            return all(req.HasField(f) for f in ("action", "resource")) and (
                req.HasField("principal") or bool(req.token)
            )
        batch = pb.CheckBatchRequest.FromString(data)
    except DecodeError:
        return False
    batch_principal = batch.HasField("principal") or bool(batch.token)
    return all(
        i.HasField("action")
        and i.HasField("resource")
        and (i.HasField("principal") or batch_principal)
        for i in batch.items
    )


def judge(
    channel: grpc.Channel, oracle: AuthorizationServicer, method: str, kind: str, data: bytes
) -> None:
    got = answered(channel, method, data)
    want = expected(oracle, method, data)
    COUNTS[f"{method}.{kind}.sent"] += 1
    if got[0] == "ok":
        COUNTS[f"{method}.{kind}.decided"] += 1
        COUNTS[f"{method}.{kind}.allowed"] += _allows(got, method)
    else:
        code = got[1][0]
        COUNTS[f"{method}.{kind}.{code.name}"] += 1
        assert code in CALLER_CODES, (code, got[1][1], data)
    try:
        (pb.CheckRequest if method == "Check" else pb.CheckBatchRequest).FromString(data)
    except DecodeError:
        assert got[0] == "error" and got[1][0] == grpc.StatusCode.INVALID_ARGUMENT, got
    if _allows(got, method):
        assert _well_formed_for_allow(method, data), data
    assert got == want, (got, want, data)


# --- generators --------------------------------------------------------------------------

TYPES = ["User", "Agent", "Document", "Group", "Org", "Invoice", "Source", "Role"]
IDS = [
    "alice",
    "bob",
    "mallory",
    "dave",
    "erin",
    "acme-copilot",
    "doc-1",
    "doc1",
    "doc2",
    "inv-1001",
    "handbook",
    "acme",
]
ACTIONS = ["read", "edit", "delete", "refund", "retrieve", "share"]
_noise = st.text(max_size=12)


def uids(types: list[str], ids: list[str]) -> st.SearchStrategy[vpb.EntityUid]:
    return st.builds(
        vpb.EntityUid,
        type=st.sampled_from(types) | _noise,
        id=st.sampled_from(ids) | _noise,
    )


# Cedar JSON values, the shapes Cedar's parser distinguishes: escapes for entities and
# extension values, with arguments that parse and ones that do not.
EXTENSIONS = {
    "ip": ["10.0.0.1", "192.168.0.0/16", "::1", "nope"],
    "decimal": ["0.9", "0.1", "12.3456", "1.23456", "x"],
    "datetime": ["2026-11-29T10:00:00Z", "2026-13-01", ""],
    "duration": ["20m", "2m", "1h30m", "-1d", "m"],
}
_extn = st.sampled_from(sorted(EXTENSIONS)).flatmap(
    lambda fn: st.builds(
        lambda arg, name: {"__extn": {"fn": name, "arg": arg}},
        st.sampled_from(EXTENSIONS[fn]) | _noise,
        st.just(fn) | _noise,
    )
)
_entity_escape = st.builds(
    lambda t, i: {"__entity": {"type": t, "id": i}},
    st.sampled_from(TYPES) | _noise,
    st.sampled_from(IDS) | _noise,
)
_scalars = (
    st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([0, -1, 2**63 - 1, -(2**63), 150000, 1200, 9000])
    | st.text(max_size=20)
    | st.floats(allow_nan=False)
    | st.none()
)
cedar_values = st.recursive(
    _scalars | _extn | _entity_escape,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
CONTEXT_KEYS = [
    "mfa",
    "ip",
    "score",
    "at",
    "ttl",
    "tags",
    "device_trusted",
    "session_age",
    "idle",
    "amount_cents",
    "currency",
    "customer",
    "approver",
    "tokens",
]
# A context that often lets the docs bundle's level-edit policy allow, so Allow is reached.
GOOD_CONTEXT = {"mfa": True, "score": {"__extn": {"fn": "decimal", "arg": "0.9"}}}
contexts = st.builds(
    lambda good, extra: {**(GOOD_CONTEXT if good else {}), **extra},
    st.booleans(),
    st.dictionaries(st.sampled_from(CONTEXT_KEYS) | st.text(max_size=6), cedar_values, max_size=4),
)


def context_texts() -> st.SearchStrategy[str]:
    """JSON text of a context: as dumped, with a key repeated, or cut short."""

    def spoil(ctx: dict[str, Any], how: int) -> str:
        text = json.dumps(ctx)
        if how == 1 and ctx:
            key = json.dumps(next(iter(ctx)))
            return text[:-1] + f", {key}: false}}"
        if how == 2:
            return text[: len(text) // 2]
        return text

    return st.builds(spoil, contexts, st.sampled_from([0, 0, 0, 1, 2]))


# Request entities for the docs bundle (User in Group in Org, as its manifest allows).
_entity = st.builds(
    lambda uid, org, level, parents: {
        "uid": uid,
        "attrs": {"org": {"__entity": {"type": "Org", "id": org}}, "level": level},
        "parents": parents,
    },
    st.builds(
        lambda t, i: {"type": t, "id": i},
        st.sampled_from(["User", "Group", "Org", "Document"]),
        st.sampled_from(["carol", "team", "acme", "doc1"]) | _noise,
    ),
    st.sampled_from(["acme", "globex"]),
    st.sampled_from([9, 1]) | st.integers(),
    st.lists(
        st.builds(
            lambda t, i: {"type": t, "id": i},
            st.sampled_from(["Group", "Org", "Role"]),
            st.sampled_from(["team", "acme"]),
        ),
        max_size=2,
    ),
)
entity_texts = st.lists(_entity | cedar_values, max_size=3).map(json.dumps)


def typed_value(depth: int = 0) -> st.SearchStrategy[vpb.Value]:
    leaves = st.one_of(
        st.builds(vpb.Value, bool=st.booleans()),
        st.builds(vpb.Value, long=st.integers(-(2**63), 2**63 - 1)),
        st.builds(vpb.Value, string=st.text(max_size=12)),
        st.builds(vpb.Value, entity=uids(TYPES, IDS)),
        st.builds(vpb.Value, ipaddr=st.sampled_from(EXTENSIONS["ip"]) | _noise),
        st.builds(vpb.Value, decimal=st.sampled_from(EXTENSIONS["decimal"]) | _noise),
        st.builds(vpb.Value, datetime=st.sampled_from(EXTENSIONS["datetime"]) | _noise),
        st.builds(vpb.Value, duration=st.sampled_from(EXTENSIONS["duration"]) | _noise),
        st.just(vpb.Value()),  # no kind set
    )
    if depth >= 2:
        return leaves
    inner = st.deferred(lambda: typed_value(depth + 1))
    return (
        leaves
        | st.builds(lambda vs: vpb.Value(set=vpb.SetValue(values=vs)), st.lists(inner, max_size=3))
        | st.builds(
            lambda fs: vpb.Value(record=vpb.RecordValue(fields=fs)),
            st.dictionaries(st.text(max_size=6), inner, max_size=3),
        )
    )


# Requests the docs bundle can decide: its users, actions, documents, context attributes
# with their schema's types (mostly), and request users it accepts. Half of all requests
# are drawn from these, so that most valid and many mutated inputs reach evaluation.
VALID_ARGS = {
    "ip": ["10.0.0.1", "192.168.0.0/16", "::1"],
    "decimal": ["0.9", "0.1", "12.3456"],
    "datetime": ["2026-11-29T10:00:00Z"],
    "duration": ["20m", "2m", "1h30m", "-1d"],
}
DOCS_CONTEXT: dict[str, st.SearchStrategy[Any]] = {
    "mfa": st.booleans(),
    "score": st.sampled_from(VALID_ARGS["decimal"]).map(
        lambda a: {"__extn": {"fn": "decimal", "arg": a}}
    ),
    "ip": st.sampled_from(VALID_ARGS["ip"]).map(lambda a: {"__extn": {"fn": "ip", "arg": a}}),
    "at": st.sampled_from(VALID_ARGS["datetime"]).map(
        lambda a: {"__extn": {"fn": "datetime", "arg": a}}
    ),
    "ttl": st.sampled_from(VALID_ARGS["duration"]).map(
        lambda a: {"__extn": {"fn": "duration", "arg": a}}
    ),
    "tags": st.lists(st.text(max_size=5), max_size=3),
}
docs_contexts = st.fixed_dictionaries({}, optional=DOCS_CONTEXT)
_TYPED_OF = {"score": "decimal", "ip": "ipaddr", "at": "datetime", "ttl": "duration"}


def _typed(ctx: dict[str, Any]) -> dict[str, vpb.Value]:
    out: dict[str, vpb.Value] = {}
    for k, v in ctx.items():
        if k == "mfa":
            out[k] = vpb.Value(bool=v)
        elif k == "tags":
            out[k] = vpb.Value(set=vpb.SetValue(values=[vpb.Value(string=t) for t in v]))
        else:
            out[k] = vpb.Value(**{_TYPED_OF[k]: v["__extn"]["arg"]})
    return out


CAROL = {
    "uid": {"type": "User", "id": "carol"},
    "attrs": {"org": {"__entity": {"type": "Org", "id": "acme"}}, "level": 9},
    "parents": [{"type": "Group", "id": "team"}],
}


@st.composite
def docs_requests(draw: st.DrawFn) -> pb.CheckRequest:
    req = pb.CheckRequest(
        tenant="docs",
        principal=vpb.EntityUid(
            type="User", id=draw(st.sampled_from(["alice", "bob", "mallory", "carol"]))
        ),
        action=vpb.EntityUid(type="Action", id=draw(st.sampled_from(["read", "edit"]))),
        resource=vpb.EntityUid(type="Document", id=draw(st.sampled_from(["doc1", "doc2"]))),
        consistency=draw(st.integers(0, 2)),
    )
    ctx = draw(docs_contexts)
    if draw(st.booleans()):
        for k, v in _typed(ctx).items():
            req.context[k].CopyFrom(v)
    elif ctx:
        req.context_json = json.dumps(ctx)
    if req.principal.id == "carol" or not draw(st.integers(0, 3)):
        req.entities_json = json.dumps([CAROL])
    return req


def check_requests() -> st.SearchStrategy[pb.CheckRequest]:
    # Two in three plausible: a wild request rarely gets past the first field it names.
    return st.one_of(docs_requests(), docs_requests(), wild_requests())


@st.composite
def wild_requests(draw: st.DrawFn) -> pb.CheckRequest:
    req = pb.CheckRequest(
        tenant=draw(st.sampled_from(["docs", "docs", "default", "", "nope"])),
        action=draw(uids(["Action"], ACTIONS)),
        resource=draw(uids(TYPES, IDS)),
        consistency=draw(st.integers(0, 3)),
    )
    # A token (no JWKS is configured: UNAUTHENTICATED) usually instead of a principal,
    # sometimes beside one (INVALID_ARGUMENT); rarely neither.
    token = not draw(st.integers(0, 3))
    if token:
        req.token = draw(st.text(min_size=1, max_size=40))
    if draw(st.integers(0, 19)) and (not token or not draw(st.integers(0, 3))):
        req.principal.CopyFrom(draw(uids(TYPES, [*IDS, "carol"])))
    form = draw(st.sampled_from(["none", "typed", "json"]))
    if form == "typed":
        for k, v in draw(
            st.dictionaries(st.sampled_from(CONTEXT_KEYS), typed_value(), max_size=3)
        ).items():
            req.context[k].CopyFrom(v)
    elif form == "json":
        req.context_json = draw(context_texts())
    if draw(st.booleans()):
        req.entities_json = draw(entity_texts)
    return req


@st.composite
def batch_requests(draw: st.DrawFn) -> pb.CheckBatchRequest:
    plausible = draw(st.integers(0, 3)) > 0  # mostly a batch the docs bundle can decide
    items = draw(st.lists(docs_requests() if plausible else check_requests(), max_size=4))
    batch = pb.CheckBatchRequest(
        tenant="docs" if plausible else draw(st.sampled_from(["docs", "default", ""])),
        consistency=draw(st.integers(0, 2)),
    )
    if draw(st.booleans()):
        users = uids(["User"], ["alice", "bob"]) if plausible else uids(TYPES, IDS)
        batch.principal.CopyFrom(draw(users))
    if not plausible and draw(st.booleans()):
        batch.context_json = draw(context_texts())
    for r in items:
        item = batch.items.add(action=r.action, resource=r.resource, context_json=r.context_json)
        own = not batch.HasField("principal") if plausible else False
        if r.HasField("principal") and (own or draw(st.booleans())):
            item.principal.CopyFrom(r.principal)
        for k, v in r.context.items():
            if not r.context_json:
                item.context[k].CopyFrom(v)
        item.entities_json = r.entities_json
    return batch


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[Any]) -> bytes:
    """A valid message's bytes with a few byte-level edits: flips, inserts, cuts, repeats."""
    data = bytearray(draw(messages).SerializeToString())
    # Positions uniform over the message: Hypothesis's integers favour the ends, and the
    # first bytes of a message are framing (a tag and a length).
    rnd = draw(st.randoms(use_true_random=False))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        # A printable character in place of a byte keeps every length prefix (and mostly
        # valid UTF-8), so the edit reaches the fields; the others test the framing.
        op = draw(
            st.sampled_from(
                ["char"] * 12 + ["flip", "insert", "delete", "truncate", "repeat", "ff"]
            )
        )
        at = rnd.randrange(len(data) + 1)
        if op == "char" and at < len(data):
            data[at] = draw(st.integers(0x20, 0x7E))
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
        elif at < len(data):
            data[at] = 0xFF
    return bytes(data)


def inputs(messages: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        messages.map(lambda m: ("valid", m.SerializeToString())),
        mutated(messages).map(lambda b: ("mutated", b)),
        st.binary(max_size=256).map(lambda b: ("random", b)),
    )


# --- the properties ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rss_before(server: ServerProcess, channel: grpc.Channel) -> int:
    answered(channel, "Check", KNOWN.SerializeToString())  # warm: first-call allocations
    return rss(server)


KNOWN = pb.CheckRequest(
    tenant="docs",
    principal=vpb.EntityUid(type="User", id="alice"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)


@pytest.mark.parametrize("method", ["Check", "CheckBatch"])
@FUZZ
@given(data=st.data())
def test_unary_calls_survive_raw_bytes(
    channel: grpc.Channel,
    oracle: AuthorizationServicer,
    rss_before: int,
    method: str,
    data: st.DataObject,
) -> None:
    messages = check_requests() if method == "Check" else batch_requests()
    judge(channel, oracle, method, *data.draw(inputs(messages)))


@FUZZ
@given(cases=st.lists(inputs(check_requests()), min_size=1, max_size=5))
def test_check_stream_answers_each_message_as_check_would(
    channel: grpc.Channel,
    oracle: AuthorizationServicer,
    rss_before: int,
    cases: list[tuple[str, bytes]],
) -> None:
    stream: Callable[..., Iterator[bytes]] = channel.stream_stream(
        SERVICE + "CheckStream", request_serializer=None, response_deserializer=None
    )
    answers = [
        pb.CheckStreamResponse.FromString(b)
        for b in stream(iter([d for _, d in cases]), timeout=30)
    ]
    assert len(answers) == len(cases)
    for (kind, data), answer in zip(cases, answers, strict=True):
        COUNTS[f"CheckStream.{kind}.sent"] += 1
        want = expected(oracle, "Check", data)
        if answer.WhichOneof("outcome") == "result":
            COUNTS[f"CheckStream.{kind}.decided"] += 1
            COUNTS[f"CheckStream.{kind}.allowed"] += answer.result.decision == pb.DECISION_ALLOW
            if answer.result.decision == pb.DECISION_ALLOW:
                assert _well_formed_for_allow("Check", data)
            assert want == ("ok", _comparable(answer.result)), (want, answer, data)
        else:
            code = next(c for c in grpc.StatusCode if c.value[0] == answer.error.code)
            COUNTS[f"CheckStream.{kind}.{code.name}"] += 1
            assert code in CALLER_CODES, answer
            assert want == ("error", (code, _field(answer.error.message))), (want, answer, data)


@FUZZ
@given(request=check_requests())
def test_cedar_json_fields_are_decided_or_refused_as_the_code_says(
    channel: grpc.Channel, oracle: AuthorizationServicer, rss_before: int, request: pb.CheckRequest
) -> None:
    """(b): well-formed protobuf whose Cedar JSON and typed values vary in structure."""
    judge(channel, oracle, "Check", "cedar", request.SerializeToString())


def test_the_server_survived_in_bounded_memory_and_the_inputs_reached_evaluation(
    server: ServerProcess, channel: grpc.Channel, rss_before: int
) -> None:
    """Runs after the properties (file order): the server still decides, its RSS grew
    within the bound, and each class of input reached evaluation."""
    assert answered(channel, "Check", KNOWN.SerializeToString())[1][0] == pb.DECISION_ALLOW
    assert server.proc.poll() is None
    growth = rss(server) - rss_before
    COUNTS["rss_growth_bytes"] = growth
    out = REPO / "build" / "fuzz-counts.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"examples_per_property": EXAMPLES, **dict(sorted(COUNTS.items()))}, indent=1)
    )
    assert growth < RSS_BOUND, growth
    for method in ("Check", "CheckBatch", "CheckStream"):
        for kind in ("valid", "mutated", "random"):
            assert COUNTS[f"{method}.{kind}.sent"] > 0, (method, kind, COUNTS)
    decided = sum(COUNTS[f"{m}.valid.decided"] for m in ("Check", "CheckBatch", "CheckStream"))
    assert decided >= 3 and COUNTS["Check.cedar.decided"] >= 3, COUNTS
    allowed = sum(v for k, v in COUNTS.items() if k.endswith(".allowed"))
    assert allowed >= 1, COUNTS
