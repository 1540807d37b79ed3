"""Bundles and a server for the request-entity trust tests (pdp.trust)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..support import REPO, running_server

ALLOW = pb.DECISION_ALLOW
# What the default bundle's step-up and session rules ask of admin actions and refunds
# (a second factor, a trusted device, a fresh and active session), so that the genuine
# controls below are ALLOW and each refusal is about the request entities alone.
STEPPED_UP: dict[str, Any] = {
    "mfa": True,
    "device_trusted": True,
    "session_age": "20m",
    "idle": "2m",
}
# A refund on inv-1001 states the invoice's currency and customer (money checks).
REFUND_INV_1001: dict[str, Any] = {
    **STEPPED_UP,
    "currency": "EUR",
    "customer": {"__entity": {"type": "Customer", "id": "cust-1"}},
}


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


def policies_variant(root: Path, **manifest: Any) -> Path:
    """A copy of the default bundle with its manifest's trust keys replaced."""
    shutil.copytree(REPO / "policies", root)
    base = json.loads((root / "manifest.json").read_text())
    base.pop("authoritative_types", None)
    (root / "manifest.json").write_text(json.dumps({**base, **manifest}))
    return root


AGENTS = {"Agent": {"parents": ["Role"]}}
AUTHORITATIVE = [
    *("Org", "Role", "User", "Project", "Document", "Report", "Invoice", "Customer", "Source"),
    "Tool",
]


def write_bundle(root: Path, files: dict[str, str], manifest: dict[str, Any]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "manifest.json").write_text(json.dumps({"version": "1", **manifest}))
    return root


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    tmp = tmp_path_factory.mktemp("trust")
    bundles = {
        "default": REPO / "policies",
        "trusted": policies_variant(tmp / "trusted", request_entities="trusted"),
        # Requests may supply agents (in roles); every other type stays the bundle's.
        "agents": policies_variant(
            tmp / "agents", authoritative_types=AUTHORITATIVE, request_entities=AGENTS
        ),
        "team": write_bundle(tmp / "team", TEAM, {"name": "team"}),
        "open": write_bundle(tmp / "team-open", TEAM, {"name": "team-open", **TEAM_OPEN}),
    }
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
