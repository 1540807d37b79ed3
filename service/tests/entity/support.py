"""A bundle whose users, groups, folders and documents live in the entity store, and a
server serving it with a SQLite store in a temporary directory."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import entity_pb2 as epb
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..admin.support import WRITE_TOKEN, admin_port, bearer, token_hash
from ..support import ServerProcess, running_server

# The EntityService is served beside the AdminService, behind its authentication: the
# servers these tests start allow one write token.
ADMIN_ENV = {
    "PDP_ADMIN_IDENTITIES": json.dumps([{"identity": token_hash(WRITE_TOKEN), "role": "write"}])
}


class _Bearer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Every call carries the write token."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), *bearer(WRITE_TOKEN)]
        return continuation(details._replace(metadata=metadata), request)


@contextmanager
def entity_stub(server: ServerProcess) -> Iterator[epb_grpc.EntityServiceStub]:
    """An EntityService stub on `server`'s admin port, authenticated with the write token."""
    with grpc.insecure_channel(f"127.0.0.1:{admin_port(server)}") as channel:
        yield epb_grpc.EntityServiceStub(grpc.intercept_channel(channel, _Bearer()))


ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY

SCHEMA = """
entity Org { frozen: Bool };
entity Role;
entity Group in [Group, Org];
entity User in [Group, Role] { org: Org, suspended: Bool, manager?: User };
entity Folder in [Folder];
entity Document in [Folder] { owner: User, org: Org };
action read, edit, delete appliesTo {
  principal: User,
  resource: Document,
  context: { approver?: User }
};
"""

# Every read stays within the default slice depth (2).
POLICIES = """
@id("org-admin")
permit(principal in Role::"admin", action, resource) when { principal.org == resource.org };

@id("owner")
permit(principal, action, resource) when { resource.owner == principal };

@id("readers-read")
permit(principal in Group::"readers", action == Action::"read", resource);

@id("shared-folder-read")
permit(principal, action == Action::"read", resource in Folder::"shared");

@id("owners-manager-reads")
permit(principal, action == Action::"read", resource)
when { resource.owner has manager && resource.owner.manager == principal };

@id("owners-suspended-manager-blocks-edits")
forbid(principal, action == Action::"edit", resource)
when { resource.owner has manager && resource.owner.manager.suspended };

@id("suspended")
forbid(principal, action, resource) when { principal.suspended };

@id("frozen-org")
forbid(principal, action in [Action::"edit", Action::"delete"], resource)
when { resource.org.frozen };

@id("delete-needs-admin-approver")
forbid(principal, action == Action::"delete", resource)
unless { context has approver && context.approver in Role::"admin" && !context.approver.suspended };
"""

# The bundle owns the roles; the store holds everything else.
BASE = [
    {"uid": {"type": "Role", "id": "admin"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Role", "id": "auditor"}, "attrs": {}, "parents": []},
]

# Request users may claim groups; request groups may claim groups.
MANIFEST = {
    "name": "org",
    "version": "1.0.0",
    "request_entities": {"User": {"parents": ["Group"]}, "Group": {"parents": ["Group"]}},
}


def write_bundle(where: Path, manifest: dict[str, Any] | None = None) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "manifest.json").write_text(json.dumps(manifest or MANIFEST))
    (where / "schema.cedarschema").write_text(SCHEMA)
    (where / "policies.cedar").write_text(POLICIES)
    (where / "entities.json").write_text(json.dumps(BASE))
    return where


def ref(t: str, i: str) -> dict[str, str]:
    return {"type": t, "id": i}


def user(
    name: str,
    *parents: dict[str, str],
    org: str = "acme",
    suspended: bool = False,
    manager: str | None = None,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {"org": {"__entity": ref("Org", org)}, "suspended": suspended}
    if manager is not None:
        attrs["manager"] = {"__entity": ref("User", manager)}
    return {"uid": ref("User", name), "attrs": attrs, "parents": list(parents)}


def org(name: str, frozen: bool = False) -> dict[str, Any]:
    return {"uid": ref("Org", name), "attrs": {"frozen": frozen}, "parents": []}


def group(name: str, *parents: dict[str, str]) -> dict[str, Any]:
    return {"uid": ref("Group", name), "attrs": {}, "parents": list(parents)}


def folder(name: str, *parents: dict[str, str]) -> dict[str, Any]:
    return {"uid": ref("Folder", name), "attrs": {}, "parents": list(parents)}


def document(name: str, owner: str, *parents: dict[str, str], org: str = "acme") -> dict[str, Any]:
    attrs = {"owner": {"__entity": ref("User", owner)}, "org": {"__entity": ref("Org", org)}}
    return {"uid": ref("Document", name), "attrs": attrs, "parents": list(parents)}


def uid(t: str, i: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=t, id=i)


def check(
    principal: str,
    action: str,
    resource: str,
    *,
    tenant: str = "",
    context: dict[str, Any] | None = None,
    entities: Sequence[dict[str, Any]] | None = None,
    fresh: bool = False,
) -> pb.CheckRequest:
    return pb.CheckRequest(
        tenant=tenant,
        principal=uid("User", principal),
        action=uid("Action", action),
        resource=uid("Document", resource),
        context_json=json.dumps(context or {}),
        entities_json=json.dumps(list(entities)) if entities is not None else "",
        consistency=pb.CONSISTENCY_HIGHER_CONSISTENCY if fresh else pb.CONSISTENCY_UNSPECIFIED,
    )


def write(
    entities: epb_grpc.EntityServiceStub,
    upserts: Sequence[dict[str, Any]] = (),
    deletes: Sequence[tuple[str, str]] = (),
    tenant: str = "",
) -> int:
    response = entities.Write(
        epb.WriteEntitiesRequest(
            tenant=tenant,
            upserts_json=json.dumps(list(upserts)) if upserts else "",
            deletes=[uid(t, i) for t, i in deletes],
        ),
        timeout=30,
    )
    return int(response.data_version)


@contextmanager
def store_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[ServerProcess, pb_grpc.AuthorizationServiceStub, epb_grpc.EntityServiceStub]]:
    """`pdp serve` of the org bundle (tenant `default`), its store under tmp_path/data."""
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        write_bundle(bundle)
    with (
        running_server(
            ["--bundle", f"default={bundle}", "--no-watch", *args],
            env={"PDP_DATA_DIR": str(tmp_path / "data"), **ADMIN_ENV, **(env or {})},
        ) as server,
        server.channel() as channel,
        entity_stub(server) as entities,
    ):
        yield server, pb_grpc.AuthorizationServiceStub(channel), entities


def refusal(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    """The status of a call expected to fail."""
    try:
        call(request, timeout=30)
    except grpc.RpcError as err:
        return err.code(), str(err.details())
    raise AssertionError("the call succeeded")
