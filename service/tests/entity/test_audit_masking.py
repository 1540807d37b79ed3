"""The admin audit log never holds a card number or a secret a caller wrote, against the
real server: every caller-controlled place of an entity write (ids, parents, deletes,
attribute and tag values, secret-named keys, nested records and sets; as messages and as
`upserts_json`), in calls the store accepts, calls it refuses as invalid, and calls refused
to an unauthorised caller. The file is scanned for every secret in every spelling."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import grpc

from pdp._proto.v1 import entity_pb2 as epb
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..admin.support import BAD_TOKEN, admin_port, audit_lines, bearer
from .support import ref, store_server, uid, user

PAN = "4111 1111 1111 1111"
PAN2 = "5500-0000-0000-0004"
IBAN = "GB82 WEST 1234 5698 7654 32"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZTEyMyJ9."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2"
)
BEARER = "Bearer tkA1b2C3d4E5f6G7h8"
SECRET = "s3cretvalue-9f8e7d6c"  # under a secret-named key: not detectable by its shape
CVV = "737"
# Under a secret-named key as a list: a text scan of the JSON masks only its first token.
LISTED = "listsecret-7a6b5c4d"


def forms(secret: str) -> list[str]:
    """The secret as written, without separators, and its most telling part."""
    bare = re.sub(r"[\s.\-]", "", secret)
    parts = [secret, bare]
    if secret.startswith("Bearer "):
        parts.append(secret.removeprefix("Bearer "))
    if secret == JWT:
        parts.append(secret.split(".", 1)[1])
    return parts


def value(s: str) -> vpb.Value:
    return vpb.Value(string=s)


def as_message() -> epb.WriteEntitiesRequest:
    """Every place an Entity message holds a caller's text."""
    record = vpb.RecordValue(fields={"iban": value(IBAN), "password": value(SECRET)})
    return epb.WriteEntitiesRequest(
        upserts=[
            vpb.Entity(
                uid=uid("User", f"id {PAN}"),
                attrs={
                    "note": value(f"pay with {PAN2}"),
                    "token": value(JWT),
                    "password": value(SECRET),
                    "card_cvv": vpb.Value(long=int(CVV)),
                    "nested": vpb.Value(record=record),
                    "many": vpb.Value(set=vpb.SetValue(values=[value(BEARER)])),
                },
                parents=[uid("Group", f"g {IBAN}")],
                tags={"api_key": value(SECRET), "t": value(BEARER)},
            )
        ],
        deletes=[uid("User", f"gone {PAN2}")],
    )


def as_json() -> epb.WriteEntitiesRequest:
    bad = {
        "uid": ref("User", f"id {PAN}"),
        "attrs": {
            "keys": {"api_key": [LISTED, LISTED]},  # first: inside what the line keeps
            "note": f"iban {IBAN}",
            "client_secret": SECRET,
            "cvv": CVV,
            "deep": {"list": [JWT, {"authorization": BEARER}]},
        },
        "parents": [ref("Group", PAN2)],
    }
    return epb.WriteEntitiesRequest(upserts_json=json.dumps([bad]))


def valid() -> epb.WriteEntitiesRequest:
    """A write the store accepts: secrets only where the schema lets a caller put them."""
    entities = [user(f"u {PAN}"), user(f"v {IBAN}", ref("Group", f"g {JWT}"))]
    return epb.WriteEntitiesRequest(upserts_json=json.dumps(entities))


def test_no_secret_a_caller_writes_reaches_the_audit_log(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    codes: list[grpc.StatusCode] = []
    with store_server(tmp_path, "--admin-audit-log", str(audit)) as (srv, _, entities):
        for request in (as_message(), as_json(), valid()):
            try:
                entities.Write(request, timeout=30)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        # The same calls from a caller the admin API does not know.
        with grpc.insecure_channel(f"127.0.0.1:{admin_port(srv)}") as ch:
            stranger = epb_grpc.EntityServiceStub(ch)
            for request in (as_message(), as_json()):
                try:
                    stranger.Write(request, timeout=30, metadata=bearer(BAD_TOKEN))
                except grpc.RpcError as exc:
                    codes.append(exc.code())
    assert codes == [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAUTHENTICATED,
    ], codes
    lines = [a for a in audit_lines(audit) if a["method"].endswith("EntityService/Write")]
    assert [a["code"] for a in lines] == [c.name for c in codes]
    text = audit.read_text()
    for secret in (PAN, PAN2, IBAN, JWT, BEARER, SECRET, LISTED):
        for form in forms(secret):
            assert form not in text, (form, text)
    # The CVV is short: it must be masked where it was, not merely absent by chance.
    assert '"card_cvv":"<masked:cvv>"' in text.replace(" ", "")
    # Masked, not dropped: the lines still say what was written, and each kind was seen.
    for kind in ("pan", "iban", "jwt", "bearer", "secret", "cvv"):
        assert f"<masked:{kind}>" in text, kind
    # A message can quote what was masked, in renderings no detector reads: withheld.
    assert all(a["message"] == "<withheld: the request held masked values>" for a in lines)
    accepted = lines[2]["args"]["upserts_json"]
    assert "User" in accepted and "<masked:pan>" in accepted


def test_an_audit_line_keeps_what_is_not_secret() -> None:
    """Masking changes nothing else (in process: the line's args as written)."""
    from pdp.admin.audit import summarise

    request = epb.WriteEntitiesRequest(
        tenant="acme", upserts_json=json.dumps([user("alice")]), deletes=[uid("User", "bob")]
    )
    args: dict[str, Any] = summarise(request)
    assert args["tenant"] == "acme"
    assert args["deletes"] == [{"type": "User", "id": "bob"}]
    assert json.loads(args["upserts_json"]) == [user("alice")]


def test_every_call_is_one_line_whatever_it_holds(tmp_path: Path) -> None:
    """Nested past what can be walked, larger than is summarised, with no credentials:
    each call still has its line, marked, and a refused caller's large request is not
    converted (its size is all that is kept)."""
    from pdp.admin.audit import MAX_SUMMARISED_BYTES

    audit = tmp_path / "audit.log"
    deep = epb.WriteEntitiesRequest(upserts_json="[" * 60_000)  # under the size cap
    # Built as text: json itself cannot write what it cannot read back.
    attrs = '{"k":' * 2_000 + '"x"' + "}" * 2_000
    deep_json = epb.WriteEntitiesRequest(
        upserts_json='[{"uid": {"type": "User", "id": "d"}, "attrs": ' + attrs + "}]"
    )
    large = epb.WriteEntitiesRequest(upserts_json=json.dumps([user(f"u{i}") for i in range(2_000)]))
    assert large.ByteSize() > MAX_SUMMARISED_BYTES
    with store_server(tmp_path, "--admin-audit-log", str(audit)) as (srv, _, entities):
        for request in (deep, deep_json):
            with contextlib.suppress(grpc.RpcError):
                entities.Write(request, timeout=30)
        with grpc.insecure_channel(f"127.0.0.1:{admin_port(srv)}") as ch:
            stranger = epb_grpc.EntityServiceStub(ch)
            for request, metadata in (
                (deep, bearer(BAD_TOKEN)),
                (large, bearer(BAD_TOKEN)),
                (large, None),
            ):
                with contextlib.suppress(grpc.RpcError):
                    stranger.Write(request, timeout=30, metadata=metadata)
    lines = [a for a in audit_lines(audit) if a["method"].endswith("EntityService/Write")]
    assert [a["code"] for a in lines] == [
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
    ], lines
    assert lines[0]["args"] == {"truncated": "<nested too deep to walk: not kept>"}
    assert lines[2]["args"] == lines[0]["args"]
    assert lines[1]["args"] == lines[0]["args"]
    size = large.ByteSize()
    for line in lines[3:]:
        assert line["args"] == {
            "truncated": f"<{size} bytes: over {MAX_SUMMARISED_BYTES}, not kept>"
        }
    assert lines[3]["message"] == "the presented token is not valid"
    # The server's own words, legible: nothing in them is a caller's.
    assert lines[4]["message"] == (
        "not authenticated: neither a client certificate nor a token in the authorization metadata"
    )


def test_a_message_is_withheld_when_the_arguments_held_a_masked_value(tmp_path: Path) -> None:
    """Server messages quote a caller's values in renderings no detector reads (repr's
    `\\n`, Cedar's records with list values): with anything masked, only the code stays."""
    from pdp.admin.audit import AuditLog

    path = tmp_path / "audit.log"
    log = AuditLog(path)
    calls = [
        (epb.WriteEntitiesRequest(tenant="4111\n1111\n1111\n1111"), "no tenant '4111\\n1111'"),
        (epb.WriteEntitiesRequest(tenant="acme"), "no tenant 'acme'"),
    ]
    for request, message in calls:
        log.record(
            identity="i", peer="p", method="m", request=request, code="NOT_FOUND", message=message
        )
    log.close()
    first, second = audit_lines(path)
    assert first["message"] == "<withheld: the request held masked values>"
    assert first["args"] == {"tenant": "<masked:pan>"}
    assert second["message"] == "no tenant 'acme'"
    assert second["args"] == {"tenant": "acme"}
