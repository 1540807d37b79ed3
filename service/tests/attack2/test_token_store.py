"""attack2: a JWT principal against the entity store. The token's principal entity joins
the request entities and then meets the store's rule for request entities
(`pdp.engine._check_against_slice`): a principal that a stored entity names (a document's
owner) or that the store holds is refused as if the caller had sent it, INVALID_ARGUMENT
naming `entities[0]` that the caller never sent. A valid token and a well-formed request
get no decision at all; the code is not the exact one (the caller did nothing invalid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb

from ..entity.support import ALLOW, store_server, uid, write
from ..test_jwt import jwt_env
from ..tokens import claims, jwks, rsa_key

SCHEMA = """
entity Org;
entity Role;
entity User in [Role, Org] { level?: Long };
entity Document { owner: User };
action read appliesTo { principal: User, resource: Document };
"""
POLICIES = """
@id("owner-reads") permit(principal, action == Action::"read", resource) when { resource.owner == principal };
"""
MANIFEST = {"name": "tok", "version": "1.0.0", "authoritative_types": ["Role"]}

DOC = {
    "uid": {"type": "Document", "id": "d1"},
    "attrs": {"owner": {"__entity": {"type": "User", "id": "bob"}}},
    "parents": [],
}
BOB = {"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": []}


@pytest.mark.parametrize("stored", [[DOC], [DOC, BOB]], ids=["owner-named", "owner-stored"])
def test_a_token_for_the_documents_owner_is_decided(
    tmp_path: Path, stored: list[dict[str, Any]]
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps(MANIFEST))
    (bundle / "schema.cedarschema").write_text(SCHEMA)
    (bundle / "policies.cedar").write_text(POLICIES)
    (bundle / "entities.json").write_text("[]")
    key = rsa_key("k1")
    (tmp_path / "jwks.json").write_text(jwks(key))
    env = jwt_env(jwt_jwks_file=str(tmp_path / "jwks.json"))
    env["PDP_JWT_PARENT_CLAIMS"] = json.dumps({"org": "Org"})
    env["PDP_JWT_ATTRIBUTE_CLAIMS"] = json.dumps({"lvl": "level"})
    with store_server(tmp_path, env=env) as (_, checks, entities):
        write(entities, stored)
        token = key.sign(claims(sub="bob"))
        got = checks.Check(
            pb.CheckRequest(
                token=token, action=uid("Action", "read"), resource=uid("Document", "d1")
            ),
            timeout=30,
        )
        assert got.decision == ALLOW
        # A token may only name a principal the store holds, not assert facts about it.
        asserting = key.sign(claims(sub="bob", lvl=3))
        request = pb.CheckRequest(
            token=asserting, action=uid("Action", "read"), resource=uid("Document", "d1")
        )
        if BOB in stored:
            with pytest.raises(grpc.RpcError) as err:
                checks.Check(request, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "the entity store holds" in (err.value.details() or "")
        else:
            assert checks.Check(request, timeout=30).decision == ALLOW
