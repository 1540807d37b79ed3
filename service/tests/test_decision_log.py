"""Decision logs (pdp.decision_log, pdp.masking) against the real server: records, masking,
sampling, bounds, schema, flushing at SIGTERM, and the queue that never blocks a decision."""

from __future__ import annotations

import base64
import collections
import json
import math
import os
import string
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.decision_log import (
    DecisionLogger,
    _cut,
    _fit,
    _json_compact,
    _json_str,
    _json_strs,
    _Parts,
    trace_id,
)
from pdp.masking import (
    Masker,
    Stats,
    is_card_number,
    json_may_hold_secret,
    mask_all,
    mask_text,
    may_hold_secret,
)
from pdp.model import BundleVersion, CheckInput, CheckResult, Decision, EntityRef

from .support import REPO, ServerProcess, pdp_command, running_server

SCHEMA = json.loads((REPO / "docs" / "decision-log.schema.json").read_text())
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"

# A bundle that decides any request (no request validation, any request entities of its
# schema's types), so every caller-controlled field reaches a decision and its record.
# `quote-resource` errors when the context has `boom`, and Cedar's message quotes the
# resource's id; `deny` in the context makes a Deny.
BUNDLE = {
    "manifest.json": json.dumps(
        {
            "name": "logs",
            "version": "2.0.0",
            "validation": "off",
            "validate_requests": False,
            "request_entities": "trusted",
        }
    ),
    "schema.cedarschema": """
entity User;
entity Thing in [Thing] {
  note?: String, password?: String, cvv?: Long, card?: Long,
  nested?: { iban?: String, api_key?: String, free?: String },
} tags String;
action act appliesTo { principal: [User, Thing], resource: [Thing] };
""",
    "policies.cedar": """
@id("allow-all")
permit (principal, action, resource) when { !(context has deny) };

@id("quote-resource")
forbid (principal, action, resource) when { context has boom && resource.nope == 1 };
""",
}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    root.mkdir()
    for name, text in BUNDLE.items():
        (root / name).write_text(text)
    return root


@contextmanager
def serve(bundle: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    # Decision logs are off by default: turned on here (a later `--decision-log` wins).
    on = ["--decision-log", "stdout"]
    with running_server(["--no-watch", "--bundle", f"logs={bundle}", *on, *args], env=env) as srv:
        yield srv


# Ids longer than a record cuts them (256 bytes) up to what a request may carry: a
# deployment that raises max_id_bytes (1024 by default) still gets bounded records.
LONG_IDS = {"PDP_MAX_ID_BYTES": "16384"}


def records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith('{"v":')]


def uid(t: str, i: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=t, id=i)


def check(
    context: dict[str, Any] | None = None,
    entities: list[Any] | None = None,
    principal: tuple[str, str] = ("User", "bob"),
    action: tuple[str, str] = ("Action", "act"),
    resource: tuple[str, str] = ("Thing", "t1"),
) -> pb.CheckRequest:
    return pb.CheckRequest(
        tenant="logs",
        principal=uid(*principal),
        action=uid(*action),
        resource=uid(*resource),
        context_json=json.dumps(context or {}),
        entities_json=json.dumps(entities) if entities is not None else "",
    )


def validate(record: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(
        record
    )


# -- records and their schema ---------------------------------------------------------


def test_records_name_the_decision_and_match_the_schema(bundle: Path) -> None:
    with serve(bundle) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        allow = stub.Check(check({"n": 1}), metadata=[("traceparent", TRACEPARENT)])
        deny = stub.Check(check({"boom": 1}, resource=("Thing", "t9")))
        bad_trace = stub.Check(check(), metadata=[("traceparent", TRACEPARENT.upper())])
        ents = [{"uid": {"type": "Thing", "id": "t1"}, "attrs": {"note": "hi"}, "parents": []}]
        with_entities = stub.Check(check(entities=ents))
        batch = stub.CheckBatch(
            pb.CheckBatchRequest(
                tenant="logs",
                principal=uid("User", "carol"),
                context_json='{"shared": true}',
                items=[
                    pb.BatchItem(action=uid("Action", "act"), resource=uid("Thing", f"b{i}"))
                    for i in range(3)
                ],
            ),
            metadata=[("traceparent", TRACEPARENT)],
        )
    out = records(srv.lines)
    for r in out:
        validate(r)
    by_id = {r["decision_id"]: r for r in out}
    answered = [allow, deny, bad_trace, with_entities, *batch.results]
    assert set(by_id) == {a.decision_id for a in answered}
    a = by_id[allow.decision_id]
    assert a["decision"] == "allow" and a["determining_policies"] == ["allow-all"]
    assert a["tenant"] == "logs" and a["principal"] == {"type": "User", "id": "bob"}
    assert a["action"] == {"type": "Action", "id": "act"}
    assert a["policy_version"] == {
        "bundle": "logs",
        "version": "2.0.0",
        "digest": allow.policy_version.digest,
    }
    assert a["trace_id"] == TRACE and a["batch"] is None and a["context"] == {"n": 1}
    assert a["cache_hit"] is False and a["latency_us"] > 0
    d = by_id[deny.decision_id]
    assert d["decision"] == "deny" and d["determining_policies"] == ["quote-resource"]
    assert d["errors"] == [
        {"policy_id": "quote-resource", "message": 'entity `Thing::"t9"` does not exist'}
    ]
    assert by_id[bad_trace.decision_id]["trace_id"] is None
    assert by_id[with_entities.decision_id]["entities"] == [{**ents[0]}]
    items = [by_id[r.decision_id] for r in batch.results]
    assert [r["batch"] for r in items] == [{"index": i, "size": 3} for i in range(3)]
    assert {r["trace_id"] for r in items} == {TRACE}
    assert [r["resource"]["id"] for r in items] == ["b0", "b1", "b2"]
    assert all(r["context"] == {"shared": True} and r["principal"]["id"] == "carol" for r in items)


def test_the_schema_refuses_what_a_record_must_not_be() -> None:
    """The schema is no rubber stamp: a record missing its policy version, or with an
    unknown field, is invalid."""
    with pytest.raises(jsonschema.ValidationError):
        validate({"v": 1})
    good = {
        "v": 1, "time": "2026-12-01T23:11:28.440950Z",
        "decision_id": "a4ba997ccbe7cee29123806b-000000000001", "tenant": "logs",
        "principal": {"type": "User", "id": "b"}, "action": {"type": "Action", "id": "a"},
        "resource": {"type": "Thing", "id": "t"}, "decision": "allow",
        "determining_policies": [], "errors": [],
        "policy_version": {"bundle": "b", "version": "1", "digest": "sha256:" + "0" * 64},
        "cache_hit": False, "reason": "", "latency_us": 5, "trace_id": None, "batch": None,
        "context": {}, "entities": None, "masked": 0, "truncated": [],
    }  # fmt: skip
    validate(good)
    for broken in ({**good, "extra": 1}, {**good, "decision": "maybe"}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


@pytest.mark.parametrize(
    "header",
    [
        TRACEPARENT.upper(),  # hex is lower-case
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"{TRACEPARENT}-extra",  # version 00 has exactly four fields
        f"{TRACEPARENT} ",
        f"01-{TRACE}-00f067aa0ba902b7-01x",  # a later version's extra data starts with "-"
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",
        f"00_{TRACE}-00f067aa0ba902b7-01",
        f"0-{TRACE}-00f067aa0ba902b7-01",
        "",
    ],
)
def test_a_malformed_traceparent_is_dropped(header: str) -> None:
    assert trace_id([("traceparent", header)]) is None


def test_a_valid_traceparent_gives_its_trace_id() -> None:
    assert trace_id([("traceparent", TRACEPARENT)]) == TRACE
    # A later version may carry more fields after a dash.
    assert trace_id([("traceparent", f"cc-{TRACE}-00f067aa0ba902b7-09-what-ever")]) == TRACE
    assert trace_id([("other", "x"), ("traceparent", TRACEPARENT)]) == TRACE
    # Two traceparent headers: which one is the caller's? Neither (the trace restarts).
    assert trace_id([("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)]) is None
    assert trace_id(None) is None and trace_id([]) is None


# -- masking: detectors -------------------------------------------------------------------


def test_detectors_mask_what_they_should_and_leave_the_rest() -> None:
    assert is_card_number("4111111111111111") and not is_card_number("4111111111111112")
    assert is_card_number("2 4111 1111 1111 1111 7") and is_card_number("1234567890" * 3)
    masked = {
        "4111 1111 1111 1111": "<masked:pan>",
        "pay 4111-1111-1111-1111 now": "pay <masked:pan> now",
        "DE89 3704 0044 0532 0130 00": "<masked:iban>",
        "iban:GB82WEST12345698765432.": "iban:<masked:iban>.",
        "Authorization: Bearer abc.def-123": "Authorization: <masked:bearer>",
        "Basic dXNlcjpwYXNzd29yZA==": "<masked:bearer>",
        "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl": "t=<masked:jwt>",
    }
    for text, out in masked.items():
        assert mask_text(text, []) == out, text
    kept = [
        "order 123456789",  # too short for a card
        "4111111111111112",  # Luhn-invalid
        "GB82 WEST 1234 5698 7654 31",  # bad IBAN checksum
        "example.com.au",
        "the basic plan",
        "2026-12-01T23:11:28Z",
    ]
    for text in kept:
        assert mask_text(text, []) == text, text


# -- masking: every caller-controlled field, over the real server -------------------------


def luhn_complete(body: str) -> str:
    """`body` with the check digit that makes it Luhn-valid appended."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def iban_complete(country: str, bban: str) -> str:
    number = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(number) % 97:02d}{bban}"


def grouped(text: str, sep: str) -> str:
    return sep.join(text[i : i + 4] for i in range(0, len(text), 4))


ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


@st.composite
def pans(draw: st.DrawFn) -> tuple[str, list[str]]:
    length = draw(st.integers(12, 19))
    body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    pan = luhn_complete(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return grouped(pan, sep) if sep else pan, [pan]


@st.composite
def ibans(draw: st.DrawFn) -> tuple[str, list[str]]:
    country, length, alphabet = draw(
        st.sampled_from(
            [("DE", 22, "0123456789"), ("GB", 22, string.ascii_uppercase + string.digits),
             ("FR", 27, "0123456789"), ("NO", 15, "0123456789"), ("MT", 31, ALNUM.upper()),
             ("ZZ", 20, "0123456789")]  # an unlisted country: any length is checked
        )
    )  # fmt: skip
    bban = draw(st.text(alphabet, min_size=length - 4, max_size=length - 4))
    iban = iban_complete(country, bban)
    spaced = draw(st.booleans())
    return grouped(iban, " ") if spaced else iban, [iban]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def jwts(draw: st.DrawFn) -> tuple[str, list[str]]:
    alg = draw(st.sampled_from(["HS256", "RS256", "none", "ES384"]))
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    sub = draw(st.text(ALNUM, min_size=6, max_size=20))
    payload = b64url(json.dumps({"sub": sub, "exp": 1800000000}).encode())
    signature = draw(st.text(B64URL, min_size=16 if alg != "none" else 0, max_size=43))
    token = f"{header}.{payload}.{signature}"
    return token, [f"{payload}.{signature}" if signature else payload]


@st.composite
def bearers(draw: st.DrawFn) -> tuple[str, list[str]]:
    if draw(st.booleans()):
        token = "tk" + draw(st.text(ALNUM + "._~+/-", min_size=12, max_size=40))
        return f"{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER']))} {token}", [token]
    creds = base64.b64encode(f"u{draw(st.text(ALNUM, min_size=8, max_size=16))}:p".encode())
    return f"Basic {creds.decode()}", [creds.decode()]


SECRET_KEYS = [
    "password", "Password", "user_password", "passwd", "secret", "client_secret", "api_key",
    "apiKey", "X-API-Key", "access_token", "refreshToken", "id_token", "authorization",
    "private_key", "credentials", "session_id", "pin", "otp", "passphrase",
]  # fmt: skip
CVV_KEYS = ["cvv", "CVC", "card_cvv", "cvc2", "security_code", "csc", "cvn"]


@st.composite
def secret_values(draw: st.DrawFn) -> tuple[str, list[str]]:
    value = "s3" + draw(st.text(ALNUM, min_size=12, max_size=24))
    return value, [value]


DETECTED = {"pan": pans(), "iban": ibans(), "jwt": jwts(), "bearer": bearers()}
# Where a caller can put a value: detected secrets go anywhere; a secret-named key's value
# and a CVV go under such a key, in the context or a request entity.
VALUE_PLACES = [
    "principal.id", "resource.id", "action.id", "context.value", "context.nested",
    "context.key", "entity.id", "entity.attr", "entity.nested_attr", "entity.tag_value",
    "entity.tag_key", "entity.parent_id",
]  # fmt: skip
KEYED_PLACES = ["context.value", "context.nested", "entity.tag", "entity.attr"]
CASES = [(kind, place) for kind in DETECTED for place in VALUE_PLACES]
CASES += [(kind, place) for kind in ("secret-key", "cvv") for place in KEYED_PLACES]
CASES += [("pan", "principal.type"), ("pan", "entity.card_number")]
TRANSPORTS = ["check", "batch-item", "batch-level"]


def place_value(place: str, text: str) -> dict[str, Any]:
    """Request parts carrying `text` at `place`."""
    thing: dict[str, Any] = {"uid": {"type": "Thing", "id": "t1"}, "attrs": {}, "parents": []}
    parts: dict[str, Any] = {"context": {"ok": 1}, "entities": [thing]}
    if place in ("principal.id", "resource.id", "action.id"):
        kind = {"principal": "User", "resource": "Thing", "action": "Action"}[place[:-3]]
        parts[place[:-3]] = (kind, text)
    elif place == "context.value":
        parts["context"] = {"note": text}
    elif place == "context.nested":
        parts["context"] = {"a": {"b": [1, {"c": text}]}}
    elif place == "context.key":
        parts["context"] = {text: True}
    elif place == "entity.id":
        thing["uid"]["id"] = text
    elif place == "entity.attr":
        thing["attrs"] = {"note": text}
    elif place == "entity.nested_attr":
        thing["attrs"] = {"nested": {"free": text}}
    elif place == "entity.tag_value":
        thing["tags"] = {"t": text}
    elif place == "entity.tag_key":
        thing["tags"] = {text: "x"}
    elif place == "entity.parent_id":
        thing["parents"] = [{"type": "Thing", "id": text}]
    return parts


def place_keyed(place: str, kind: str, key: str, value: Any) -> dict[str, Any]:
    thing: dict[str, Any] = {"uid": {"type": "Thing", "id": "t1"}, "attrs": {}, "parents": []}
    parts: dict[str, Any] = {"context": {"ok": 1}, "entities": [thing]}
    if place == "context.value":
        parts["context"] = {key: value}
    elif place == "context.nested":
        parts["context"] = {"a": [{key: value}]}
    elif place == "entity.tag":
        thing["tags"] = {key: str(value)}
    elif place == "entity.attr":  # the schema's own names for such attributes
        if kind == "cvv":
            thing["attrs"] = {"cvv": int(value)}
        else:
            thing["attrs"] = {"password": value, "nested": {"api_key": value}}
    return parts


def request_of(parts: dict[str, Any], transport: str) -> tuple[str, Any]:
    p = {k: parts[k] for k in ("principal", "action", "resource") if k in parts}
    if transport == "check":
        return "Check", check(parts["context"], parts["entities"], **p)
    item = pb.BatchItem(
        principal=uid(*p.get("principal", ("User", "bob"))),
        action=uid(*p.get("action", ("Action", "act"))),
        resource=uid(*p.get("resource", ("Thing", "t1"))),
    )
    batch = pb.CheckBatchRequest(tenant="logs", items=[pb.BatchItem(
        principal=uid("User", "x"), action=uid("Action", "act"), resource=uid("Thing", "t2")
    )])  # fmt: skip
    shared = transport == "batch-level"
    target = batch if shared else item
    target.context_json = json.dumps(parts["context"])
    target.entities_json = json.dumps(parts["entities"])
    batch.items.append(item)
    return "CheckBatch", batch


def find_key(tree: Any, key: str) -> list[Any]:
    if isinstance(tree, dict):
        found = [v for k, v in tree.items() if k == key]
        return found + [x for v in tree.values() for x in find_key(v, key)]
    if isinstance(tree, list):
        return [x for v in tree for x in find_key(v, key)]
    return []


def test_no_secret_survives_in_any_caller_controlled_field(bundle: Path) -> None:
    """Card numbers, IBANs, JWTs, Bearer/Basic credentials, secret-named keys' values and
    CVVs, embedded in arbitrary text, in every field a caller controls (entity types and ids,
    the action, context keys and values at any depth, request entities' ids, attributes,
    tags and parents), by Check, batch item and batch default: the server's whole output
    (decision records on stdout, its log on stderr) holds none of them."""
    secrets: list[str] = []
    keyed: list[tuple[str, str]] = []  # (kind, key) whose values must be masked in records
    reached: collections.Counter[tuple[str, str]] = collections.Counter()
    noise = st.text(string.printable, max_size=4)

    with serve(bundle, "--decision-log-max-record-bytes", "65536") as srv, srv.channel() as ch:
        stub = srv.stub(ch)

        def send_case(case: tuple[str, str]) -> None:
            # Each case on its own: a sampled case list reaches some cases rarely.
            @settings(
                max_examples=8,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(st.sampled_from(TRANSPORTS), noise, noise, st.data())
            def send(transport: str, pre: str, post: str, data: Any) -> None:
                one(case, transport, pre, post, data)

            send()

        def one(case: tuple[str, str], transport: str, pre: str, post: str, data: Any) -> None:
            kind, place = case
            if kind in DETECTED:
                text, forms = data.draw(DETECTED[kind])
                if place == "principal.type":  # a type name: an identifier
                    parts = {"principal": ("T" + forms[0], "bob"), "context": {}, "entities": []}
                elif place == "entity.card_number":
                    digits = forms[0][:18]
                    forms = [luhn_complete(digits[:-1])]
                    thing = {"uid": {"type": "Thing", "id": "t1"}, "parents": [],
                             "attrs": {"card": int(forms[0])}}  # fmt: skip
                    parts = {"context": {"card": int(forms[0])}, "entities": [thing]}
                else:
                    if kind == "pan":  # digits glued on make another number, not this card
                        pre, post = pre.rstrip(string.digits), post.lstrip(string.digits)
                    parts = place_value(place, pre + text + post)
                secrets.extend(forms + ([text] if len(text) >= 12 else []))
            else:
                keys = SECRET_KEYS if kind == "secret-key" else CVV_KEYS
                key = data.draw(st.sampled_from(keys))
                if kind == "cvv":
                    value: Any = data.draw(st.integers(100, 9999))
                    value = value if place != "context.value" else str(value)
                    keyed.append(("cvv", "cvv" if place == "entity.attr" else key))
                else:
                    value, forms = data.draw(secret_values())
                    secrets.extend(forms)
                    for k in ("password", "api_key") if place == "entity.attr" else (key,):
                        keyed.append(("secret", k))
                parts = place_keyed(place, kind, key, value)
            method, request = request_of(parts, transport)
            response = getattr(stub, method)(request)  # a decision, not a refusal
            assert response.ByteSize() > 0
            reached[case] += 1

        for case in CASES:
            send_case(case)
    output = "\n".join(srv.lines)
    out = records(srv.lines)
    assert len(out) >= 400
    leaked = sorted({s for s in secrets if s in output})
    assert not leaked, f"{len(leaked)} secrets written, e.g. {leaked[:3]}"
    for kind, key in keyed:
        values = [v for r in out for v in find_key(r, key)]
        assert values and all(v == f"<masked:{kind}>" for v in values), (key, values[:3])
    missed = [c for c in CASES if not reached[c]]
    assert not missed, f"never generated: {missed}"
    # Every example's record did mask something (a batch's filler item has nothing to mask).
    assert sum(r["masked"] > 0 for r in out) >= sum(reached.values()) == 8 * len(CASES)


# -- configured paths, context, size --------------------------------------------------


def test_configured_paths_are_masked_or_dropped(bundle: Path) -> None:
    ctx = {"customer": {"email": "a@b.c", "name": "Ann"}, "rows": [{"phone": "555"}, {"x": 1}]}
    ents = [{"uid": {"type": "Thing", "id": "t1"}, "attrs": {"note": "private"}, "parents": []}]
    args = [
        "--decision-log-mask-path", "context.customer.email",
        "--decision-log-drop-path", "context.rows.phone",
        "--decision-log-drop-path", "entities.attrs.*",
    ]  # fmt: skip
    with serve(bundle, *args) as srv, srv.channel() as ch:
        srv.stub(ch).Check(check(ctx, ents))
    [r] = records(srv.lines)
    assert r["context"] == {
        "customer": {"email": "<masked:path>", "name": "Ann"},
        "rows": [{}, {"x": 1}],
    }
    assert r["entities"] == [{"uid": {"type": "Thing", "id": "t1"}, "attrs": {}, "parents": []}]
    assert r["masked"] == 3


def test_records_are_bounded_and_say_what_was_cut(bundle: Path) -> None:
    wide = {f"k{i}": "v" * 200 for i in range(60)}  # 12 KB of context
    with (
        serve(bundle, "--decision-log-max-record-bytes", "2048", env=LONG_IDS) as srv,
        srv.channel() as ch,
    ):
        stub = srv.stub(ch)
        stub.Check(check(wide))
        stub.Check(check({"long": "x" * 10_000}))
        stub.Check(check({"n": 1}, resource=("Thing", "r" * 5000)))
    lines = [line for line in srv.lines if line.startswith('{"v":')]
    assert len(lines) == 3 and all(len(line.encode()) <= 2048 for line in lines)
    dropped, cut, long_id = (json.loads(line) for line in lines)
    assert dropped["context"] is None and dropped["truncated"] == ["context"]
    assert cut["context"] == {"long": "x" * 256 + "…"} and cut["truncated"] == ["context"]
    assert long_id["resource"]["id"] == "r" * 256 + "…" and long_id["truncated"] == ["resource"]
    for r in (dropped, cut, long_id):
        validate(r)


def test_ids_are_cut_by_their_json_bytes_and_shrunk_last_to_fit_the_smallest_bound(
    bundle: Path,
) -> None:
    # An astral character is a 12-byte escape in JSON: 256 of them in an id are 3 KB. Two
    # such ids cut to 256 bytes each, with the rest of a record, still pass the smallest
    # bound (1024) once the context is dropped: only shrinking the ids makes it fit.
    astral = "\U0001f600" * 300
    with (
        serve(bundle, "--decision-log-max-record-bytes", "1024", env=LONG_IDS) as srv,
        srv.channel() as ch,
    ):
        srv.stub(ch).Check(
            check({"note": astral}, principal=("User", astral), resource=("Thing", astral))
        )
    lines = [line for line in srv.lines if line.startswith('{"v":')]
    assert len(lines) == 1 and len(lines[0].encode()) <= 1024, len(lines[0].encode())
    r = json.loads(lines[0])
    assert {"principal", "resource"} <= set(r["truncated"])
    assert r["principal"]["id"].startswith("\U0001f600") and r["principal"]["id"].endswith("…")
    assert len(json.dumps(r["principal"]["id"])) < 256  # shrunk below the cut of an id
    validate(r)


def test_decision_logs_are_off_unless_turned_on(bundle: Path) -> None:
    with (
        running_server(["--no-watch", "--bundle", f"logs={bundle}"]) as srv,
        srv.channel() as ch,
    ):
        assert srv.stub(ch).Check(check()).decision == pb.DECISION_ALLOW
    assert records(srv.lines) == []


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("a=1%26client_secret%3DS3CRET%26b%3D2", "a=1%26client_secret%3D<masked:secret>%26b%3D2"),
        ('{"password": "S3CRET", "n": 1}', '{"password": "<masked:secret>", "n": 1}'),
        ("user=bob; pwd: S3CRET, ok", "user=bob; pwd: <masked:secret>, ok"),
        ("next=api_key=S3CRET", "next=api_key=<masked:secret>"),
        ("Bearer%20S3CRET", "<masked:bearer>"),
        ("at 12:30 key_count=3 tokens=40", "at 12:30 key_count=3 tokens=40"),  # no secret
    ],
)
def test_secret_pairs_inside_strings_are_masked(text: str, written: str) -> None:
    assert mask_text(text, []) == written


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000,  # one long name: no separator ever follows
        "a=" * 100_000,  # pairs whose names are no secret, each value the next name
        "password=" * 50_000,  # secret names whose values are the next name
        "x" + "%20" * 100_000,  # URL-encoded separators with no name
        "Bearer" + "%20" * 100_000,  # a scheme whose credential never comes
        "Bearer " * 50_000,
        "key:" + " " * 100_000 + "x",
        "%3D" * 100_000,
    ],
)
def test_masking_a_long_adversarial_string_is_linear(text: str) -> None:
    # Linear scans take milliseconds for 200 KB on a busy machine; a quadratic regex or
    # rescan would take minutes (4e10 steps): a bound of seconds cannot confuse the two.
    started = time.perf_counter()
    hits: list[str] = []
    mask_text(text, hits)
    assert time.perf_counter() - started < 5.0


def test_context_can_be_left_out_and_logs_switched_off(bundle: Path) -> None:
    ents = [{"uid": {"type": "Thing", "id": "t1"}, "attrs": {}, "parents": []}]
    with serve(bundle, "--no-decision-log-context") as srv, srv.channel() as ch:
        srv.stub(ch).Check(check({"n": 1}, ents))
    [r] = records(srv.lines)
    assert r["context"] is None and r["entities"] is None
    with serve(bundle, "--decision-log", "off") as srv, srv.channel() as ch:
        assert srv.stub(ch).Check(check()).decision == pb.DECISION_ALLOW
    assert records(srv.lines) == []


# -- sampling ---------------------------------------------------------------------------


def calls(srv: ServerProcess, allows: int, denies: int) -> None:
    with srv.channel() as ch:
        stub = srv.stub(ch)
        for _ in range(allows):
            stub.Check(check())
        for i in range(denies):
            stub.Check(check({"deny": 1} if i % 2 else {"boom": 1}))


def test_allow_sampling_keeps_every_deny_and_error(bundle: Path) -> None:
    with serve(bundle, "--decision-log-allow-sample-rate", "0") as srv:
        calls(srv, 20, 20)
    out = records(srv.lines)
    assert len(out) == 20 and {r["decision"] for r in out} == {"deny"}
    with serve(bundle, "--decision-log-allow-sample-rate", "0.5") as srv:
        calls(srv, 200, 10)
    out = records(srv.lines)
    assert 10 + 40 < len(out) < 10 + 160  # ~100 of the allows; all ten denies
    assert sum(r["decision"] == "deny" for r in out) == 10


def test_denies_are_sampled_only_when_asked(bundle: Path) -> None:
    args = ["--decision-log-allow-sample-rate", "0", "--decision-log-deny-sample-rate", "0"]
    with serve(bundle, *args) as srv:
        calls(srv, 10, 10)
    assert records(srv.lines) == []


# -- sinks, shutdown, overflow -----------------------------------------------------------


def test_sigterm_writes_every_answered_call_to_the_file(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    answered: list[str] = []
    with serve(bundle, "--decision-log", "file", "--decision-log-file", str(path)) as srv:
        with srv.channel() as ch:
            stub = srv.stub(ch)
            for i in range(300):
                answered.append(stub.Check(check({"i": i})).decision_id)
            for _ in range(20):
                batch = pb.CheckBatchRequest(tenant="logs", principal=uid("User", "u"), items=[
                    pb.BatchItem(action=uid("Action", "act"), resource=uid("Thing", f"t{j}"))
                    for j in range(10)
                ])  # fmt: skip
                answered += [r.decision_id for r in stub.CheckBatch(batch).results]
        # leaving the block sends SIGTERM right after the last answer
    assert srv.proc.returncode == 0
    written = [json.loads(line)["decision_id"] for line in path.read_text().splitlines()]
    assert sorted(written) == sorted(answered) and len(answered) == 500
    assert records(srv.lines) == []  # nothing on stdout


def test_the_file_rotates_at_its_size(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    args = ["--decision-log", "file", "--decision-log-file", str(path),
            "--decision-log-max-file-bytes", "8192", "--decision-log-backup-count", "2"]  # fmt: skip
    with serve(bundle, *args) as srv:
        calls(srv, 200, 0)
    files = sorted(tmp_path.glob("d.jsonl*"))
    assert [f.name for f in files] == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]
    for f in files:
        lines = f.read_text().splitlines()
        assert lines and all(json.loads(line)["v"] == 1 for line in lines)
        assert f.stat().st_size <= 8192


class GateSink:
    """A sink that blocks until opened: a disk or pipe slower than the decisions."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.open.wait()
        self.lines.append(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def result(i: int) -> CheckResult:
    v = BundleVersion("b", "1", "sha256:" + "0" * 64)
    return CheckResult(Decision.ALLOW, ["p"], [], v, f"{i:024x}-{i:012x}")


def test_a_stalled_sink_drops_and_counts_instead_of_blocking() -> None:
    sink = GateSink()
    logger = DecisionLogger(sink, queue_size=10)
    req = CheckInput(EntityRef("User", "u"), EntityRef("Action", "a"), EntityRef("Thing", "t"))
    for i in range(100):  # every call returns while the sink is stuck
        logger.check("t", req, result(i), time.perf_counter(), None)
    # One call may be in the writer's hands (stuck in write), the queue holds the rest.
    assert logger.dropped in (89, 90) and logger.written == 0
    logger.batch("t", [req] * 20, [result(i) for i in range(20)], time.perf_counter(), None)
    assert logger.dropped in (109, 110)
    sink.open.set()
    logger.close()
    assert logger.written == len(sink.lines) == 100 + 20 - logger.dropped
    assert logger.written in (10, 11)


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        ([], {"PDP_DECISION_LOG": "syslog"}, "decision_log"),
        (["--decision-log", "file"], {}, "decision_log_file"),
        (["--decision-log-file", "/no/such/dir/d.jsonl"], {}, "decision_log_file"),
        (["--decision-log-max-file-bytes", "10"], {}, "decision_log_max_file_bytes"),
        (["--decision-log-backup-count", "0"], {}, "decision_log_backup_count"),
        (["--decision-log-queue-size", "0"], {}, "decision_log_queue_size"),
        (["--decision-log-max-record-bytes", "100"], {}, "decision_log_max_record_bytes"),
        ([], {"PDP_DECISION_LOG_ALLOW_SAMPLE_RATE": "1.5"}, "decision_log_allow_sample_rate"),
        (["--decision-log-deny-sample-rate", "-0.1"], {}, "decision_log_deny_sample_rate"),
        (["--decision-log-mask-path", "customer.email"], {}, "decision_log_mask_paths"),
        ([], {"PDP_DECISION_LOG_DROP_PATHS": '["context."]'}, "decision_log_drop_paths"),
        ([], {"PDP_DECISION_LOG_CONTEXT": "maybe"}, "decision_log_context"),
    ],
)
def test_bad_decision_log_settings_exit_2_naming_the_setting(
    args: list[str], env: dict[str, str], name: str
) -> None:
    r = subprocess.run(
        [*pdp_command(), "serve", "--listen", "127.0.0.1:0", *args],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"invalid setting {name}" in r.stderr, r.stderr


class FailingSink(GateSink):
    def write(self, line: str) -> None:
        raise OSError("No space left on device")


def test_a_failing_sink_counts_its_records_as_dropped() -> None:
    logger = DecisionLogger(FailingSink())
    req = CheckInput(EntityRef("User", "u"), EntityRef("Action", "a"), EntityRef("Thing", "t"))
    logger.batch("t", [req] * 3, [result(i) for i in range(3)], time.perf_counter(), None)
    logger.check("t", req, result(9), time.perf_counter(), None)
    logger.close()
    assert (logger.written, logger.dropped, logger.queued) == (0, 4, 0)


def test_each_worker_writes_its_own_file(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    args = ["--workers", "2", "--decision-log", "file", "--decision-log-file", str(path)]
    answered: list[str] = []
    with serve(bundle, *args) as srv:
        deadline = time.monotonic() + 30
        while sum("listening on" in line for line in srv.lines) < 2:  # both workers up
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)
        for _ in range(8):  # connections, spread over the workers by the kernel
            with srv.channel() as ch:
                answered += [srv.stub(ch).Check(check()).decision_id for _ in range(5)]
    files = sorted(tmp_path.glob("d.jsonl.*"))
    assert not path.exists() and 1 <= len(files) <= 2
    written = [json.loads(x)["decision_id"] for f in files for x in f.read_text().splitlines()]
    assert sorted(written) == sorted(answered)


def test_secrets_spelled_with_json_escapes_are_masked_too(bundle: Path) -> None:
    """The context is written as sent when one pass over its text finds nothing to mask; an
    escape (`\\u0034` is `4`) must not slip a secret past that pass."""
    pan = "4111111111111111"
    escaped = "".join(f"\\u{ord(c):04x}" for c in pan)
    text = '{"note": "' + escaped + '", "pass\\u0077ord": "hunter22", "ok": "plain"}'
    with serve(bundle) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        req = check()
        req.context_json = text
        stub.Check(req)
        req.context_json = '{"ok":\n "plain"}'  # clean, but not one line: re-serialised
        stub.Check(req)
    first, second = records(srv.lines)
    assert first["context"] == {
        "note": "<masked:pan>",
        "password": "<masked:secret>",
        "ok": "plain",
    }
    assert second["context"] == {"ok": "plain"} and second["masked"] == 0
    assert pan not in srv.log() and "hunter22" not in srv.log()


# -- the writer's fast paths ----------------------------------------------------------

# Characters that take 1, 2, 6 and 12 bytes in JSON, weighted towards plain ones.
JSON_CHARS = st.one_of(
    st.sampled_from(string.ascii_letters + string.digits + " -_.:/"),
    st.sampled_from('"\\\b\f\n\r\t\x00\x1f\x7f'),
    st.characters(min_codepoint=0x80, max_codepoint=0xFFFF, exclude_categories=("Cs",)),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
)


def test_fitting_an_id_agrees_with_cutting_it_character_by_character() -> None:
    """`_fit` skips the per-character walk when the length alone or one regex pass shows
    the text fits: for any text and bound it returns what the walk returns, and records the
    same cut."""
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=1500, deadline=None, database=None)
    @given(
        st.one_of(
            st.text(JSON_CHARS, max_size=40),
            st.text(st.sampled_from(string.ascii_letters), min_size=240, max_size=270),
            st.text(JSON_CHARS, min_size=200, max_size=300),
        ),
        st.sampled_from([8, 21, 24, 64, 256, 1024]),
    )
    def agree(text: str, limit: int) -> None:
        fast, walked = Stats(), Stats()
        out = _fit(text, fast, "id", limit)
        assert out == _cut(text, walked, "id", limit)
        assert fast == walked
        seen["cut" if walked.truncated else "whole"] += 1
        seen["short" if len(text) * 12 <= limit else "plain" if text.isascii() else "other"] += 1

    agree()
    assert min(seen.values()) >= 50, seen


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(st.text(JSON_CHARS, max_size=30), max_size=5))
def test_the_writers_encoders_write_what_json_dumps_writes(texts: list[str]) -> None:
    assert _json_strs(texts) == json.dumps(texts)
    for text in texts:
        assert _json_str(text) == json.dumps(text)
    tree = {"errors": [{"policy_id": t, "message": t} for t in texts]}
    assert _json_compact(tree) == json.dumps(tree, separators=(",", ":"))


def test_uids_kept_across_calls_are_masked_and_counted_in_every_record(bundle: Path) -> None:
    """The writer keeps masked uids from call to call: a later record with the same ids
    still counts what was masked and names what was cut."""
    pan = "4111 1111 1111 1111"
    req = check(principal=("User", pan), resource=("Thing", "t" * 400))
    with serve(bundle) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        for _ in range(3):
            stub.Check(req)
        stub.Check(check())
    *same, plain = records(srv.lines)
    assert len(same) == 3
    for r in same:
        assert r["principal"] == {"type": "User", "id": "<masked:pan>"}
        assert r["resource"]["id"] == "t" * 256 + "…"
        assert (r["masked"], r["truncated"]) == (1, ["resource"])
    assert plain["principal"]["id"] == "bob" and (plain["masked"], plain["truncated"]) == (0, [])
    assert pan not in srv.log()


# -- the masker's pre-checks ----------------------------------------------------------

# Pieces of what the detectors look for (digits and separators of card numbers, IBAN
# starts, secret names and pair separators plain and URL-encoded, JWT and credential
# prefixes) and of what they do not, glued in any order.
FRAGMENTS = st.sampled_from(
    ["4", "1", "0", "7", " ", "-", "4111", "1111", "pin", "pwd", "cvv", "key", "Otp", "=",
     ":", "%3d", "%3A", "%20", '"', "'", "bearer ", "Basic ", "eyJ", "hbGciOiJIUzI1", ".",
     "_", "DE89", "3704", "0044", "0532", "0130", "00", "GB", "a", "Z", "x9", "\t", "&",
     "?", "token", "é", "\\u0034", "1.5"]
)  # fmt: skip
FRAGMENT_TEXTS = st.lists(FRAGMENTS, max_size=16).map("".join)


def test_the_pre_check_never_skips_a_text_the_detectors_would_change() -> None:
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=3000, deadline=None, database=None)
    @given(FRAGMENT_TEXTS)
    @example("pin=4")  # both skipped by the pre-check as it was (8 characters, 2 digits)
    @example("4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1")
    def never_skips(text: str) -> None:
        hits: list[str] = []
        out = mask_all(text, hits)
        if not may_hold_secret(text):
            assert (out, hits) == (text, []), text
            seen["skipped"] += 1
        else:
            seen["masked" if hits else "scanned, nothing found"] += 1

    never_skips()
    assert min(seen.values()) >= 200, seen


JSON_KEYS = st.one_of(FRAGMENT_TEXTS, st.sampled_from(["ok", "mfa", "note", "Card", "pass"]))
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.integers(0, 999),
        FRAGMENT_TEXTS,
        st.text(st.sampled_from("ab "), min_size=250, max_size=270),  # cut at 256
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(JSON_KEYS, inner, max_size=3)
    ),
    max_leaves=8,
)


def test_a_json_text_written_as_it_is_holds_nothing_the_masker_would_change() -> None:
    """`Masker.tree_text` writes a context or entities text as sent when one pass over
    it (`json_may_hold_secret`) finds nothing: the full walk over such a text must change
    nothing either, whatever the spelling (escapes, indentation)."""
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=2000, deadline=None, database=None)
    @given(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=4), st.booleans(), st.booleans())
    def never_skips(tree: dict[str, Any], ascii_only: bool, indent: bool) -> None:
        text = json.dumps(tree, ensure_ascii=ascii_only, indent=1 if indent else None)
        stats = Stats()
        walked = Masker().tree("context", json.loads(text), stats, 1 << 20)
        if not json_may_hold_secret(text):
            assert (walked, stats) == (json.loads(text), Stats()), text
            seen["skipped"] += 1
        else:
            seen["masked" if stats.masked else "cut" if stats.truncated else "walked"] += 1

    never_skips()
    assert min(seen.values()) >= 50, seen


def test_short_secret_pairs_and_card_numbers_in_single_digits_are_masked(bundle: Path) -> None:
    pan = "4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1"
    with serve(bundle) as srv, srv.channel() as ch:
        srv.stub(ch).Check(check(context={"note": "pin=4"}, resource=("Thing", pan)))
    (record,) = records(srv.lines)
    assert record["context"] == {"note": "pin=<masked:secret>"}
    assert record["resource"] == {"type": "Thing", "id": "<masked:pan>"}
    assert record["masked"] == 2 and pan not in srv.log()


class CountingSink(GateSink):
    def __init__(self, fail_flush: bool = False) -> None:
        super().__init__()
        self.flushes = 0
        self.fail_flush = fail_flush

    def flush(self) -> None:
        self.flushes += 1
        if self.fail_flush:
            raise OSError("No space left on device")


@pytest.mark.parametrize("fail_flush", [False, True])
def test_the_writer_flushes_once_per_drain_and_counts_only_what_was_flushed(
    fail_flush: bool,
) -> None:
    sink = CountingSink(fail_flush)
    logger = DecisionLogger(sink, queue_size=100)
    req = CheckInput(EntityRef("User", "u"), EntityRef("Action", "a"), EntityRef("Thing", "t"))
    for i in range(40):  # queued behind the first, whose write waits for the gate
        logger.check("t", req, result(i), time.perf_counter(), None)
    sink.open.set()
    logger.close()
    assert len(sink.lines) == 40
    assert sink.flushes <= 3  # one per drain (a flush per call was 40)
    assert (logger.written, logger.dropped) == ((0, 40) if fail_flush else (40, 0))


def test_a_record_time_is_what_datetime_writes() -> None:
    """The writer formats each second once (`_Parts.stamp`): every time reads as
    `datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")` with a Z, even
    where datetime's rounding carries the microseconds into the next second (the case a
    cached second keyed on int(t) gets wrong; the generator must reach it)."""
    seen: collections.Counter[str] = collections.Counter()

    def written(t: float) -> str:
        text = datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")
        return text.replace("+00:00", "Z")

    @settings(max_examples=3000)
    @given(
        t=st.one_of(
            st.floats(0.0, 4e9, allow_nan=False),  # any time, 1970 to 2096
            # Fractions next to a second's end, where rounding carries into the next one.
            st.integers(0, 4 * 10**9).map(lambda s: s + 0.9999995),
            st.integers(0, 4 * 10**9).map(lambda s: s + 0.9999996),
            st.floats(1.8e9, 1.8e9 + 2.0),  # many records in one second
        )
    )
    @example(t=0.0)
    @example(t=1_800_000_000.0)
    def agree(t: float) -> None:
        parts = _Parts()
        expected = written(t)
        seen["carried" if expected[17:19] != f"{int(t) % 60:02d}" else "plain"] += 1
        assert parts.stamp(t) == expected
        assert parts.stamp(t) == expected  # the second now cached
        later = math.floor(t) + 0.25  # a later time of the same second
        assert parts.stamp(later) == written(later)

    agree()
    assert seen["carried"] > 0 and seen["plain"] > 0, seen
