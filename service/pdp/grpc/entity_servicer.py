"""EntityService: write, read and list a tenant's stored entities (`pdp.entity_store`).

Writes are admin calls: the facts written here (memberships, roles, attributes) are what
decisions trust. Each write is validated against the tenant's schema (the store's
`schema_validator`, Cedar's own schema-aware parse) and refused whole if any entity fails;
an entity the bundle defines in its `entities.json`, or an action (the schema defines
those), is refused too: the bundle's entities stay the bundle's. A write is acknowledged
once durable, and every check that starts after the acknowledgement reads it
(`pdp.engine`: each check reads the store's data version fresh).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import grpc

from pdp._proto.v1 import entity_pb2 as epb
from pdp.engine import Engine
from pdp.entity_store.api import EntityStore, EntityUid, StoredEntity
from pdp.entity_store.validate import schema_validator
from pdp.errors import EntityNotFound, EntityRejected, InvalidRequest
from pdp.grpc import convert
from pdp.grpc.status import handle_errors
from pdp.grpc.wire import Undecodable, decoded
from pdp.metrics import Metrics, NoMetrics
from pdp.model import DEFAULT_TENANT, TYPE_NAME, EntityRef
from pdp.tracing import NO_TRACING, Tracing

ENTITY_SERVICE = epb.DESCRIPTOR.services_by_name["EntityService"]
ENTITY_SERVICE_NAME: str = ENTITY_SERVICE.full_name
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


class EntityServicer:
    def __init__(
        self,
        engine: Engine,
        store: EntityStore,
        *,
        max_write_entities: int = 10_000,
        max_write_parents: int = 1_000_000,
        tracing: Tracing = NO_TRACING,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        # The request converter's caps, raised to a write's: a write may carry many more
        # entities than a check (a bulk import) but still has a bound before conversion.
        self._limits = dataclasses.replace(
            convert.DEFAULT_LIMITS,
            max_request_entities=max_write_entities,
            max_request_entity_parents=max_write_parents,
        )
        self._max_write = max_write_entities
        self.tracing = tracing  # read by `handle_errors`
        self.metrics = metrics or NoMetrics()

    def _tenant(self, tenant: str) -> str:
        """The tenant's name; UnknownTenant (NOT_FOUND) unless it has a bundle."""
        self._engine.bundle(tenant)
        return tenant or DEFAULT_TENANT

    @handle_errors
    def Write(
        self, request: epb.WriteEntitiesRequest | Undecodable, context: grpc.ServicerContext
    ) -> epb.WriteEntitiesResponse:
        request = decoded(request)
        bundle = self._engine.bundle(request.tenant)
        tenant = request.tenant or DEFAULT_TENANT
        total = len(request.upserts) + len(request.deletes)
        if total > self._max_write:
            raise InvalidRequest(
                "upserts", f"{total} upserts and deletes exceed the limit of {self._max_write}"
            )
        given = convert.entities("upserts", request.upserts, request.upserts_json, self._limits)
        upserts: list[Any] = [] if given is None else list(given.items or ())
        if len(upserts) + len(request.deletes) > self._max_write:
            raise InvalidRequest(
                "upserts_json",
                f"{len(upserts) + len(request.deletes)} upserts and deletes exceed the limit "
                f"of {self._max_write}",
            )
        owned = bundle.slice_entities
        for i, item in enumerate(upserts):
            uid = _upsert_uid(i, item)
            if uid in owned.entities:
                raise EntityRejected(
                    f"upserts[{i}]",
                    "is an entity of the bundle's entities.json (the bundle's entities "
                    "stay the bundle's: change it there)",
                    index=i,
                    uid=uid,
                )
            if uid in owned.actions:
                raise EntityRejected(
                    f"upserts[{i}]", "is an action: the schema defines actions", index=i, uid=uid
                )
            upserts[i] = _without_empty_tags(i, item, uid)
        deletes = [
            _uid(convert.entity_ref(f"deletes[{i}]", d)) for i, d in enumerate(request.deletes)
        ]
        version = self._store.write(tenant, upserts, deletes, schema_validator(bundle.schema))
        return epb.WriteEntitiesResponse(data_version=version)

    @handle_errors
    def Get(
        self, request: epb.GetEntityRequest | Undecodable, context: grpc.ServicerContext
    ) -> epb.GetEntityResponse:
        request = decoded(request)
        tenant = self._tenant(request.tenant)
        if not request.HasField("uid"):
            raise InvalidRequest("uid", "required")
        uid = _uid(convert.entity_ref("uid", request.uid))
        # Read first: the entity is at least as new as this version.
        version = self._store.data_version(tenant)
        found = self._store.get(tenant, uid)
        if found is None:
            raise EntityNotFound(f"uid: {EntityRef(*uid)} is not in tenant {tenant!r}'s store")
        return epb.GetEntityResponse(entity_json=_json(found), data_version=version)

    @handle_errors
    def List(
        self, request: epb.ListEntitiesRequest | Undecodable, context: grpc.ServicerContext
    ) -> epb.ListEntitiesResponse:
        request = decoded(request)
        tenant = self._tenant(request.tenant)
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise InvalidRequest("page_size", f"{size} exceeds the limit of {MAX_PAGE_SIZE}")
        entity_type = request.entity_type or None
        if entity_type is not None and not TYPE_NAME.fullmatch(entity_type):
            raise InvalidRequest("entity_type", f"{entity_type!r} is not a Cedar entity type name")
        page, token = self._store.list(
            tenant, entity_type=entity_type, page_size=size, page_token=request.page_token
        )
        text = "[" + ",".join(_json(e) for e in page) + "]"
        return epb.ListEntitiesResponse(entities_json=text, next_page_token=token)

    @handle_errors
    def GetDataVersion(
        self, request: epb.GetDataVersionRequest | Undecodable, context: grpc.ServicerContext
    ) -> epb.GetDataVersionResponse:
        request = decoded(request)
        tenant = self._tenant(request.tenant)
        return epb.GetDataVersionResponse(data_version=self._store.data_version(tenant))


def _uid(ref: EntityRef) -> EntityUid:
    return (ref.type, ref.id)


def _upsert_uid(i: int, item: Any) -> EntityUid:
    raw = item.get("uid") if isinstance(item, dict) else None
    if isinstance(raw, dict) and set(raw) == {"__entity"}:
        raw = raw["__entity"]
    if not (
        isinstance(raw, dict)
        and set(raw) == {"type", "id"}
        and isinstance(raw["type"], str)
        and isinstance(raw["id"], str)
    ):
        raise InvalidRequest(f"upserts[{i}].uid", 'must be an entity uid {"type", "id"}')
    if not TYPE_NAME.fullmatch(raw["type"]):
        raise InvalidRequest(f"upserts[{i}].uid.type", f"{raw['type']!r} is not a Cedar type name")
    return (raw["type"], raw["id"])


def _without_empty_tags(i: int, item: Mapping[str, Any], uid: EntityUid) -> dict[str, Any]:
    """The store holds uid, attrs and parents; the typed form always carries `tags` (empty
    unless set), and tags it cannot hold are refused rather than dropped."""
    out = dict(item)
    if out.get("tags"):
        raise EntityRejected(
            f"upserts[{i}].tags", "the entity store does not hold tags", index=i, uid=uid
        )
    out.pop("tags", None)
    return out


def _json(entity: StoredEntity) -> str:
    return json.dumps(entity.to_cedar_json(), separators=(",", ":"))
