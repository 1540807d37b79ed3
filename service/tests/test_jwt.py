"""Bearer-token principals over the real server: validation, the claims mapping, the trust
rules for what a token may assert, every attack the issue names, and the JWKS refresher
(from a file and from a real HTTP server on loopback, with key rotation)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from .metrics_support import metrics_port, scrape, value
from .support import ServerProcess, running_server
from .tokens import (
    AUDIENCE,
    ISSUER,
    Key,
    claims,
    ec_key,
    ed_key,
    hmac_signed,
    jwks,
    jwks_server,
    rsa_key,
    unsigned,
)

SCHEMA = """
entity Org;
entity Role;
entity User in [Role, Org] { email?: String, level?: Long };
entity Document { org: Org };
action read, delete appliesTo { principal: User, resource: Document };
"""
POLICIES = """
@id("admin-delete") permit(principal in Role::"admin", action == Action::"delete", resource);
@id("org-read") permit(principal, action == Action::"read", resource) when { principal in resource.org };
@id("level-read") permit(principal, action == Action::"read", resource) when { principal has level && principal.level >= 5 };
"""
ENTITIES = [
    {"uid": {"type": "Role", "id": "admin"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Org", "id": "acme"}, "attrs": {}, "parents": []},
    {
        "uid": {"type": "User", "id": "alice"},
        "attrs": {},
        "parents": [{"type": "Role", "id": "admin"}],
    },
    {
        "uid": {"type": "Document", "id": "d1"},
        "attrs": {"org": {"__entity": {"type": "Org", "id": "acme"}}},
        "parents": [],
    },
]
# Roles are the bundle's (authoritative); organisations and users come from the IdP, and a
# request may supply users in organisations (to test that it cannot touch the token's).
MANIFEST = {
    "name": "tokens",
    "version": "1.0.0",
    "authoritative_types": ["Role"],
    "request_entities": {"User": {"parents": ["Org"]}},
}


def write_bundle(root: Path, **manifest: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({**MANIFEST, **manifest}))
    (root / "schema.cedarschema").write_text(SCHEMA)
    (root / "policies.cedar").write_text(POLICIES)
    (root / "entities.json").write_text(json.dumps(ENTITIES))
    return root


def jwt_env(**settings: Any) -> dict[str, str]:
    base = {
        "PDP_JWT_ISSUER": ISSUER,
        "PDP_JWT_AUDIENCE": AUDIENCE,
        "PDP_JWT_ATTRIBUTE_CLAIMS": json.dumps({"email": "email", "lvl": "level"}),
        "PDP_JWT_PARENT_CLAIMS": json.dumps({"org": "Org", "roles": "Role"}),
    }
    return {**base, **{f"PDP_{k.upper()}": v for k, v in settings.items()}}


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"rsa": rsa_key("rsa-1"), "ec": ec_key("ec-1"), "ed": ed_key("ed-1")}


@pytest.fixture(scope="module")
def tokens_server(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("jwt")
    bundle = write_bundle(root / "tokens")
    (root / "jwks.json").write_text(jwks(*keys.values()))
    env = jwt_env(jwt_jwks_file=str(root / "jwks.json"))
    with running_server(["--bundle", f"tokens={bundle}", "--no-watch"], env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(tokens_server: ServerProcess) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    with tokens_server.channel() as ch:
        yield pb_grpc.AuthorizationServiceStub(ch)


def uid(t: str, i: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=t, id=i)


def check(token: str, action: str = "read", **fields: Any) -> pb.CheckRequest:
    return pb.CheckRequest(
        tenant="tokens",
        token=token,
        action=uid("Action", action),
        resource=uid("Document", "d1"),
        **fields,
    )


def decide(stub: pb_grpc.AuthorizationServiceStub, token: str, **fields: Any) -> pb.CheckResponse:
    response: pb.CheckResponse = stub.Check(check(token, **fields), timeout=10)
    return response


def refused(stub: pb_grpc.AuthorizationServiceStub, token: str, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(check(token, **fields), timeout=10)
    return err.value


ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY


# --- validation and the claims mapping -------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed"])
def test_a_valid_token_names_the_principal_and_its_claims_decide(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key], kind: str
) -> None:
    key = keys[kind]
    member = decide(stub, key.sign(claims(org="acme")))
    assert member.decision == ALLOW and list(member.determining_policies) == ["org-read"]
    assert decide(stub, key.sign(claims(org="globex"))).decision == DENY
    assert decide(stub, key.sign(claims(lvl=7))).decision == ALLOW  # an attribute claim
    assert decide(stub, key.sign(claims())).decision == DENY


def test_two_tokens_of_one_subject_are_two_cache_keys(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    """The decision cache keys what a token asserted, not only its subject: otherwise the
    second token would be answered with the first one's Allow."""
    key = keys["rsa"]
    first = decide(stub, key.sign(claims(sub="carol", org="acme")))
    again = decide(stub, key.sign(claims(sub="carol", org="acme", jti="2")))
    other = decide(stub, key.sign(claims(sub="carol", org="globex")))
    assert (first.decision, again.decision, again.cache_hit) == (ALLOW, ALLOW, True)
    assert (other.decision, other.cache_hit) == (DENY, False)


def test_a_bundle_owned_principal_takes_the_bundles_facts(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    """alice is a base entity: her token names her, and her roles are the bundle's."""
    key = keys["rsa"]
    assert decide(stub, key.sign(claims(sub="alice")), action="delete").decision == ALLOW
    assert decide(stub, key.sign(claims(sub="mallory")), action="delete").decision == DENY


def test_token_and_principal_together_are_invalid(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    err = refused(stub, keys["rsa"].sign(claims()), principal=uid("User", "alice"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("principal: set with token")


def test_a_batch_takes_its_principal_from_the_token(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    token = keys["ec"].sign(claims(org="acme"))
    items = [
        pb.BatchItem(action=uid("Action", a), resource=uid("Document", "d1"))
        for a in ("read", "delete")
    ]
    out = stub.CheckBatch(pb.CheckBatchRequest(tenant="tokens", token=token, items=items))
    assert [r.decision for r in out.results] == [ALLOW, DENY]
    items[1].principal.CopyFrom(uid("User", "alice"))
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(pb.CheckBatchRequest(tenant="tokens", token=token, items=items))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("items[1].principal: set with token")
    bad = keys["ec"].sign(claims(aud="other"))
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(pb.CheckBatchRequest(tenant="tokens", token=bad, items=items[:1]))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_stream_answers_a_bad_token_in_band(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    good = check(keys["ed"].sign(claims(org="acme")))
    bad = check(keys["ed"].sign(claims(org="acme", exp=int(time.time()) - 3600)))
    out = list(stub.CheckStream(iter([bad, good])))
    assert out[0].error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert out[0].error.message.startswith("token: expired")
    assert out[1].result.decision == ALLOW


# --- what a token (and a caller beside it) may assert ----------------------------------


def test_a_token_cannot_claim_a_role_the_bundle_owns(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    """Role is authoritative: a crafted `roles` claim (a user-editable IdP attribute, say)
    must not reach Role::"admin"."""
    err = refused(stub, keys["rsa"].sign(claims(roles=["admin"])), action="delete")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert 'claim roles: Role::"admin": type Role is authoritative' in err.details()


def test_a_token_cannot_add_facts_to_a_bundle_owned_principal(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    err = refused(stub, keys["rsa"].sign(claims(sub="alice", org="acme")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert 'claims org assert facts about User::"alice", which this bundle owns' in err.details()


def test_a_caller_cannot_define_or_override_the_tokens_principal(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    """The manifest lets requests supply users in organisations; the token's user is not
    the caller's to describe: `mallory in Org::"acme"` from the request is refused."""
    own = json.dumps(
        [
            {
                "uid": {"type": "User", "id": "mallory"},
                "attrs": {},
                "parents": [{"type": "Org", "id": "acme"}],
            }
        ]
    )
    err = refused(stub, keys["rsa"].sign(claims()), entities_json=own)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(
        'entities[0]: User::"mallory": is the principal the token names'
    )
    typed = vpb.Entity(uid=uid("User", "mallory"), parents=[uid("Org", "acme")])
    err = refused(stub, keys["rsa"].sign(claims(org="globex")), entities=[typed])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Another user is the caller's to supply, as before: the rule is about the principal.
    other = own.replace("mallory", "bob")
    assert decide(stub, keys["rsa"].sign(claims()), entities_json=other).decision == DENY


def test_batch_level_entities_reach_the_items_of_a_token_batch(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    """Items without entities of their own take the batch's, token or not: so the batch's
    `mallory in Org::"acme"` is seen, and refused, for every item that inherits it."""
    own = [
        {
            "uid": {"type": "User", "id": "mallory"},
            "attrs": {},
            "parents": [{"type": "Org", "id": "acme"}],
        }
    ]
    item = pb.BatchItem(action=uid("Action", "read"), resource=uid("Document", "d1"))
    batch = pb.CheckBatchRequest(
        tenant="tokens",
        token=keys["rsa"].sign(claims()),
        entities_json=json.dumps(own),
        items=[item],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(batch, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'entities[0]: User::"mallory": is the principal the token names' in err.value.details()


def test_claims_that_do_not_fit_the_schema_are_unauthenticated(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    err = refused(stub, keys["rsa"].sign(claims(lvl="high")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "do not make a valid User entity" in err.details()
    err = refused(stub, keys["rsa"].sign(claims(lvl=1.5)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "claim lvl: float 1.5 has no Cedar value" in err.details()


# --- the attacks ------------------------------------------------------------------------


def attacks(keys: dict[str, Key]) -> dict[str, tuple[str, str]]:
    """name -> (token, the start of the status details)."""
    rsa = keys["rsa"]
    impostor = Key("rsa-1", "RS256", rsa_key("x").private)  # the real kid, another key
    now = int(time.time())
    no_exp = claims()
    del no_exp["exp"]
    no_sub = claims()
    del no_sub["sub"]
    return {
        "bad signature": (impostor.sign(claims()), "token: bad signature"),
        "tampered payload": (_tamper(rsa.sign(claims(org="globex"))), "token: bad signature"),
        "expired": (rsa.sign(claims(exp=now - 120)), "token: expired"),
        "not yet valid": (rsa.sign(claims(nbf=now + 600)), "token: not valid yet"),
        "issued in the future": (rsa.sign(claims(iat=now + 600)), "token: not valid yet"),
        "no exp": (rsa.sign(no_exp), "token: missing claim"),
        "wrong issuer": (rsa.sign(claims(iss="https://evil.test")), "token: wrong issuer"),
        "wrong audience": (rsa.sign(claims(aud="another-service")), "token: wrong audience"),
        "alg none": (
            unsigned(claims(), {"alg": "none", "kid": "rsa-1"}),
            "token: algorithm 'none'",
        ),
        "HS256 with the public key": (
            hmac_signed(claims(), rsa.public_pem(), "rsa-1"),
            "token: algorithm 'HS256' is not allowed",
        ),
        "unknown kid": (rsa.sign(claims(), kid="nope"), "token: unknown kid 'nope'"),
        "kid path trick": (rsa.sign(claims(), kid="../../../dev/null"), "token: unknown kid"),
        "no kid": (_without_kid(rsa, claims()), "token: the header names no kid"),
        "RS256 on an EC key": (
            _resigned_as(rsa, "ec-1"),
            "token: key 'ec-1' of the JWKS does not verify RS256",
        ),
        "missing uid claim": (rsa.sign(no_sub), "token: the sub claim"),
        "empty uid claim": (rsa.sign(claims(sub="")), "token: the sub claim"),
        "too large": (rsa.sign(claims(pad="x" * 9000)), "token: "),
        "not a JWT": ("not.a.jwt", "token: not a JWT"),
        "garbage": ("\x00\xff" * 10, "token: not a JWT"),
    }


def _tamper(token: str) -> str:
    import base64

    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["org"] = "acme"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def _without_kid(key: Key, payload: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(payload, key.private, algorithm=key.alg)


def _resigned_as(key: Key, kid: str) -> str:
    return key.sign(claims(), kid=kid)


def test_every_attack_is_unauthenticated_never_a_decision(
    stub: pb_grpc.AuthorizationServiceStub, keys: dict[str, Key]
) -> None:
    cases = attacks(keys)
    for name, (token, details) in cases.items():
        err = refused(stub, token)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert err.details().startswith(details), (name, err.details())
    assert "8192" in refused(stub, cases["too large"][0]).details()
    # ...and the same requests with a good token are decided: the server is fine.
    assert decide(stub, keys["rsa"].sign(claims(org="acme"))).decision == ALLOW


def test_a_server_without_a_jwks_refuses_tokens(
    server: ServerProcess, keys: dict[str, Key]
) -> None:
    with server.channel() as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.AuthorizationServiceStub(ch).Check(
                pb.CheckRequest(
                    token=keys["rsa"].sign(claims()),
                    action=uid("Action", "read"),
                    resource=uid("Document", "doc-1"),
                ),
                timeout=10,
            )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "accepts no tokens" in err.value.details()


# --- the JWKS: start-up, refresh, rotation, failures ------------------------------------


def _until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _code(stub: pb_grpc.AuthorizationServiceStub, token: str) -> grpc.StatusCode:
    try:
        stub.Check(check(token), timeout=10)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_rotation_over_http_and_the_last_good_key_set(tmp_path: Path) -> None:
    old, new = ec_key("2026-11"), ed_key("2026-12")
    bundle = write_bundle(tmp_path / "tokens")
    with jwks_server(jwks(old)) as idp:
        env = jwt_env(jwt_jwks_url=idp.url, jwt_jwks_refresh_seconds="0.2")
        with running_server(["--bundle", f"tokens={bundle}", "--no-watch"], env=env) as srv:
            with srv.channel() as ch:
                stub = pb_grpc.AuthorizationServiceStub(ch)
                old_token = old.sign(claims())  # one token, verified and then remembered
                assert _code(stub, old_token) == grpc.StatusCode.OK
                assert _code(stub, old_token) == grpc.StatusCode.OK
                assert _code(stub, new.sign(claims())) == grpc.StatusCode.UNAUTHENTICATED
                idp.document = jwks(new)  # rotation: the new kid in, the old one out
                _until(lambda: _code(stub, new.sign(claims())) == grpc.StatusCode.OK)
                # The remembered verification went with the key set it was made against.
                assert _code(stub, old_token) == grpc.StatusCode.UNAUTHENTICATED
                # The IdP fails, then serves garbage: the last good key set keeps working.
                idp.status, seen = 500, idp.requests
                _until(lambda: idp.requests >= seen + 2)
                idp.status, idp.document, seen = 200, '{"keys": "no"}', idp.requests
                _until(lambda: idp.requests >= seen + 2)
                assert _code(stub, new.sign(claims())) == grpc.StatusCode.OK
                srv.wait_for_log(
                    "JWKS refresh failed, keeping kids \\['2026-12'\\]: HTTP Error 500"
                )
                srv.wait_for_log('JWKS refresh failed.*"keys" list')
                # Operators see it without reading the log: both outcomes are counted.
                families = scrape(metrics_port(srv))
                assert value(families, "pdp_jwks_refresh_failures_total") >= 4
                assert value(families, "pdp_jwks_refreshes_total") >= 2  # start-up, rotation


def test_an_unknown_kid_asks_for_an_early_refresh_without_waiting(tmp_path: Path) -> None:
    """With an hour between refreshes, a new kid is picked up because a token named it;
    the request that named it is answered at once (UNAUTHENTICATED), not after a fetch."""
    old, new = rsa_key("a"), rsa_key("b")
    bundle = write_bundle(tmp_path / "tokens")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(jwks(old))
    env = jwt_env(
        jwt_jwks_file=str(jwks_file),
        jwt_jwks_refresh_seconds="3600",
        jwt_jwks_min_refresh_seconds="0.2",
    )
    with running_server(["--bundle", f"tokens={bundle}", "--no-watch"], env=env) as srv:
        start = scrape(metrics_port(srv))
        assert value(start, "pdp_jwks_refreshes_total") == 1  # the start-up read
        assert value(start, "pdp_jwks_refresh_failures_total") == 0
        with srv.channel() as ch:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            jwks_file.write_text(jwks(old, new))
            _until(lambda: _code(stub, new.sign(claims())) == grpc.StatusCode.OK)
            assert _code(stub, old.sign(claims())) == grpc.StatusCode.OK
            srv.wait_for_log(r"JWKS refreshed: kids \['a', 'b'\]")


def test_a_bad_jwks_stops_the_start(tmp_path: Path) -> None:
    import subprocess

    from .support import pdp_command

    bundle = write_bundle(tmp_path / "tokens")
    cases = {
        "missing": (str(tmp_path / "none.json"), "cannot start: JWKS:"),
        "symmetric only": (
            '{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}',
            "no usable key",
        ),
        "duplicate kid": (jwks(rsa_key("same"), ec_key("same")), "kid 'same' appears twice"),
    }
    for name, (doc, message) in cases.items():
        path = tmp_path / f"{name}.json"
        if name != "missing":
            path.write_text(doc)
        env = {**__import__("os").environ, **jwt_env(jwt_jwks_file=str(path))}
        proc = subprocess.run(
            [*pdp_command(), "serve", "--listen", "127.0.0.1:0", "--bundle", f"tokens={bundle}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 1, (name, proc.stderr)
        assert message in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jwt_algorithms": '["RS256", "HS256"]'}, "'HS256' is not allowed"),
        ({"jwt_algorithms": '["none"]'}, "'none' is not allowed"),
        ({"jwt_jwks_url": "http://idp.example/jwks"}, "must be an https URL"),
        ({"jwt_jwks_file": "x.json", "jwt_audience": ""}, "jwt_audience: required"),
    ],
)
def test_unsafe_jwt_settings_are_refused(settings: dict[str, str], message: str) -> None:
    from pydantic import ValidationError

    from pdp.config import Settings

    env = jwt_env(**settings)
    values = {k.removeprefix("PDP_").lower(): v for k, v in env.items()}
    values = {k: json.loads(v) if v.startswith(("[", "{")) else v for k, v in values.items()}
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_a_key_verifies_only_the_algorithms_of_its_type() -> None:
    """Even with HS256 on the list (which Settings refuses), no key of a JWKS of public
    keys is ever an HMAC key: the RS/HS confusion has no key to use."""
    from pdp.jwt_identity import parse_jwks

    rsa, ec = rsa_key("r"), ec_key("e")
    doc = json.loads(jwks(rsa, ec))
    doc["keys"].append({"kty": "oct", "kid": "h", "k": "c2VjcmV0"})
    doc["keys"].append({**doc["keys"][0], "kid": "r-ps", "alg": "PS256"})
    keys, skipped = parse_jwks(
        json.dumps(doc).encode(), frozenset({"HS256", "RS256", "PS256", "ES256"})
    )
    assert sorted(keys.keys) == [("e", "ES256"), ("r", "PS256"), ("r", "RS256"), ("r-ps", "PS256")]
    assert skipped == [
        "keys[2] (h): holds secret or private key material (a JWKS publishes public keys only)"
    ]


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    """Verified tokens are remembered, never past their `exp` (here with no leeway)."""
    key = rsa_key("k")
    bundle = write_bundle(tmp_path / "tokens")
    (tmp_path / "jwks.json").write_text(jwks(key))
    env = jwt_env(jwt_jwks_file=str(tmp_path / "jwks.json"), jwt_leeway_seconds="0")
    with running_server(["--bundle", f"tokens={bundle}", "--no-watch"], env=env) as srv:
        with srv.channel() as ch:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            exp = int(time.time()) + 2
            token = key.sign(claims(exp=exp))
            assert _code(stub, token) == grpc.StatusCode.OK
            assert _code(stub, token) == grpc.StatusCode.OK  # answered from memory
            time.sleep(max(0.0, exp - time.time()) + 0.2)
            err = refused(stub, token)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.details().startswith("token: expired")
