"""The entity store's interface: what the decision path and the EntityService rely on.

Entities are held per tenant in Cedar's JSON entity format. A backend (`sqlite`,
`postgres`) keeps, beside each entity, a closure table of its transitive ancestors and the
entity references inside its attributes, so `slice` answers from indexes: its cost grows
with the slice, not with the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

EntityUid = tuple[str, str]
"""(entity type, id), e.g. ("App::User", "alice")."""

Validator = Callable[[Sequence[Mapping[str, Any]]], None]
"""Checks a write's upserts before commit; raises `pdp.errors.EntityRejected` to refuse it."""


def uid_json(uid: EntityUid) -> dict[str, str]:
    """A uid as Cedar JSON: {"type": ..., "id": ...}."""
    return {"type": uid[0], "id": uid[1]}


@dataclass(frozen=True, slots=True)
class StoredEntity:
    uid: EntityUid
    attrs: Mapping[str, Any]
    """Cedar JSON attribute values (entity references as {"__entity": {...}})."""
    parents: tuple[EntityUid, ...]

    def to_cedar_json(self) -> dict[str, Any]:
        """{"uid": {"type", "id"}, "attrs": {...}, "parents": [...]}, as Cedar reads it."""
        return {
            "uid": uid_json(self.uid),
            "attrs": dict(self.attrs),
            "parents": [uid_json(p) for p in self.parents],
        }


@dataclass(frozen=True, slots=True)
class EntitySlice:
    data_version: int
    entities: tuple[StoredEntity, ...]
    truncated: bool
    """Some attribute reference at the depth limit was not followed (its entity exists or
    not: the slice does not say), so a policy reading that deep would read missing data."""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Caps on one write (settings `entity_write_max_entities`, `entity_max_bytes`,
    `entity_max_ancestors`, `entity_write_max_closure_rows`)."""

    max_entities_per_write: int = 10_000
    """Upserts plus deletes in one write."""
    max_entity_bytes: int = 64 * 1024
    """One entity's Cedar JSON, compactly encoded."""
    max_parents: int = 1_000
    """Parents one entity may name."""
    max_ancestors: int = 1_000
    """Transitive ancestors one entity may have (setting `entity_max_ancestors`)."""
    max_closure_rows: int = 1_000_000
    """Closure rows (entity, ancestor) one write may (re)compute (setting
    `entity_write_max_closure_rows`): a long parent chain costs n(n-1)/2 of them."""


class EntityStore(Protocol):
    """A per-tenant entity store. Every method is safe to call from many threads at once."""

    def data_version(self, tenant: str) -> int:
        """The tenant's data version: 0 if never written; read fresh, never cached."""
        ...

    def write(
        self,
        tenant: str,
        upserts: Sequence[Mapping[str, Any]],
        deletes: Sequence[EntityUid],
        validate: Validator | None = None,
    ) -> int:
        """Apply upserts (Cedar JSON entities) and deletes atomically: all or nothing,
        durable before it returns. Returns the new data version (each write increases it).

        An upsert replaces the entity's attrs and parents. Parents need not exist (Cedar
        allows dangling parents) but a cycle through parents is refused. `validate` runs
        before commit and raises `EntityRejected` to refuse the whole write; so do a
        malformed entity, a cap of `StoreLimits`, the same uid twice in one write."""
        ...

    def get(self, tenant: str, uid: EntityUid) -> StoredEntity | None: ...

    def list(
        self,
        tenant: str,
        *,
        entity_type: str | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[StoredEntity], str]:
        """A page of entities in (type, id) order and the next page's token ("" = last page).
        A token not made by `list` raises `InvalidRequest` naming `page_token`."""
        ...

    def slice(self, tenant: str, uids: Sequence[EntityUid], depth: int) -> EntitySlice:
        """In one consistent read: the named entities that exist, every entity they
        reference through attributes (inside records and sets too) up to `depth` hops,
        and the transitive ancestors of all of those (from the closure table)."""
        ...

    def ancestors(self, tenant: str, uid: EntityUid) -> frozenset[EntityUid]:
        """Every transitive ancestor of `uid` (named as a parent, stored or not)."""
        ...

    def export(self, tenant: str) -> Iterator[StoredEntity]:
        """Every entity of the tenant, in (type, id) order, from one consistent read."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SupportsNotify(Protocol):
    """Optional: a store shared by several processes (PostgreSQL) tells of writes made by
    any of them, so a replica can drop what it cached for that tenant."""

    def subscribe(self, callback: Callable[[str, int], None]) -> Callable[[], None]:
        """Call `callback(tenant, data_version)` after writes (by this or another process),
        within about a second; returns a function that unsubscribes. Callbacks run on a
        background thread and must not block."""
        ...
