"""The entities one decision reads: a slice of the bundle's and the store's, never a copy.

A check is decided against a small `cedarpy.Entities` built for it: its principal, action
and resource, the entities named in its context and by its request entities (their
parents and attributes), the entity literals the tenant's policies read
(`pdp.read_depth.read_literals`), everything those reference through attributes up to
`depth` hops, the transitive ancestors of all of them, and the request entities. The
bundle's static entities are indexed once at load (`BundleEntities`: uid -> entity, its
ancestors, its references), the store answers its own part (`EntityStore.slice`, from its
closure table); so a check costs what its slice costs, with ten stored entities or a
million.

Both sources may reference each other (a stored user in a bundle role): after the first
read, whatever the slice names within reach but holds from neither source is asked for
again, until nothing is missing. Since the bundle refuses policies that read past
`depth` (`pdp.read_depth`), Cedar decides on a slice exactly as on the whole graph.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pdp.entity_store.api import EntitySlice, EntityStore, StoredEntity
from pdp.errors import InvalidRequest, SliceFailed

Uid = tuple[str, str]

# The most uids one `EntityStore.slice` read takes (`pdp.entity_store.sql.MAX_SLICE_UIDS`,
# not imported: the store's modules import `pdp.bundle`, which imports this one).
MAX_SLICE_UIDS = 1000
# Reads of the store for one slice when a write lands between two of them: the slice is
# built again, so that all of it is of one data version; after this many, fail closed.
MAX_RESTARTS = 3
# Rounds of "ask both sources for what is still missing": each round follows one more
# bundle <-> store crossing; a graph crossing more often than this is refused (Deny).
MAX_ROUNDS = 32


@dataclass(frozen=True, slots=True)
class SliceEntity:
    """One entity of a slice: its Cedar JSON text, the uids it names."""

    text: str
    parents: tuple[Uid, ...]  # for a bundle entity, every ancestor (Cedar renders them so)
    refs: tuple[Uid, ...]  # entity references in attributes and tags


class BundleEntities:
    """A bundle's static entities by uid, built once at load."""

    def __init__(self, rendered: Sequence[Mapping[str, Any]], skip: Iterable[Uid] = ()) -> None:
        # `rendered` is Cedar's own rendering of the parsed entities, whose parents are
        # already every transitive ancestor. Action entities (`skip`) come from the schema
        # in every parse, so they are left out here.
        left_out = self.actions = frozenset(skip)
        self.entities: dict[Uid, SliceEntity] = {}
        for entity in rendered:
            uid = _uid_of(entity["uid"])
            if uid in left_out:
                continue
            self.entities[uid] = SliceEntity(
                json.dumps(entity, separators=(",", ":")),
                tuple(_uid_of(p) for p in entity.get("parents", ())),
                tuple(entity_refs((entity.get("attrs"), entity.get("tags")))),
            )

    def __len__(self) -> int:
        return len(self.entities)


@dataclass(frozen=True)
class Slice:
    """The bundle's and the store's entities of one decision (without the request's), as
    one Cedar JSON list text, and what it read. The same for every request that starts
    from the same uids at the same data version, so it may be cached (`SliceCache`)."""

    sources: str
    data_version: int  # of the store, 0 without one
    stored: frozenset[Uid]  # the uids that came from the store
    named: frozenset[Uid]  # uids the slice's entities name (parent, attribute), undefined
    # Its parse, where no request entities join it (filled by the engine, once).
    parsed: list[Any] = field(default_factory=list, compare=False)

    def text(self, request: Mapping[Uid, SliceEntity]) -> str:
        """The slice with the request entities, as one Cedar JSON list."""
        if not request:
            return self.sources
        joined = ",".join(e.text for e in request.values())
        return f"[{joined}]" if self.sources == "[]" else f"{self.sources[:-1]},{joined}]"


SliceKey = tuple[str, str, int, int, frozenset[Uid]]  # tenant, bundle digest, version, depth


class SliceCache:
    """Slices already read, keyed by everything they depend on: the tenant, the bundle (its
    digest), the store's data version, the depth and the uids the slice starts from. A
    write changes the data version, so a cached slice is one a fresh read would return.
    Least recently used first out, bounded by entries and by the bytes of their texts."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[SliceKey, Slice] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: SliceKey) -> Slice | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: SliceKey, piece: Slice) -> None:
        size = len(piece.sources) + 64 * len(key[4])
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.sources) + 64 * len(key[4])
            self._entries[key] = piece
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                gone_key, gone = self._entries.popitem(last=False)
                self._bytes -= len(gone.sources) + 64 * len(gone_key[4])


@dataclass(frozen=True)
class StoreSource:
    """The store of one tenant, as a slice source."""

    store: EntityStore
    tenant: str


def build_slice(
    bundle: BundleEntities,
    source: StoreSource | None,
    seeds: Iterable[Uid],
    depth: int,
    request: Mapping[Uid, SliceEntity] | None = None,
    cached: tuple[SliceCache, str, int] | None = None,
) -> Slice:
    """The slice for `seeds` and for what the request entities name (their uids, parents
    and references). `cached` is (cache, bundle digest, the store's data version as just
    read): a slice of that version is looked up there first, and one read is stored under
    the version it read."""
    wanted = set(seeds)
    for uid, entity in (request or {}).items():
        wanted.add(uid)
        wanted.update(entity.parents)
        wanted.update(entity.refs)
    tenant = "" if source is None else source.tenant
    frozen = frozenset(wanted)
    if cached is not None:
        cache, digest, version = cached
        hit = cache.get((tenant, digest, version, depth, frozen))
        if hit is not None:
            return hit
    for _ in range(MAX_RESTARTS):
        built = _build(bundle, source, wanted, depth)
        if built is not None:
            if cached is not None:
                cache.put((tenant, digest, built.data_version, depth, frozen), built)
            return built
    raise SliceFailed("entity store: writes kept landing while the slice was read")


def _build(
    bundle: BundleEntities, source: StoreSource | None, seeds: set[Uid], depth: int
) -> Slice | None:
    """One attempt; None when the store's data version moved between two reads."""
    present: dict[Uid, SliceEntity] = {}
    stored: set[Uid] = set()
    asked_bundle: set[Uid] = set()
    asked_store: dict[Uid, int] = {}  # uid -> deepest depth already asked for
    version: int | None = None

    def from_bundle(uids: Iterable[Uid]) -> None:
        for uid in uids:
            if uid in asked_bundle:
                continue
            asked_bundle.add(uid)
            found = bundle.entities.get(uid)
            if found is not None and uid not in present:
                present[uid] = found
                for ancestor in found.parents:  # all of them: no walk needed
                    asked_bundle.add(ancestor)
                    known = bundle.entities.get(ancestor)
                    if known is not None:
                        present.setdefault(ancestor, known)

    def from_store(uids: Sequence[Uid], hops: int) -> bool:
        nonlocal version
        if source is None:
            return True
        # The store answers at most MAX_SLICE_UIDS uids a read (a request's entities may
        # name more): one read per part, all of one data version.
        for start in range(0, len(uids), MAX_SLICE_UIDS):
            part = uids[start : start + MAX_SLICE_UIDS]
            got: EntitySlice = source.store.slice(source.tenant, part, hops)
            if version is None:
                version = got.data_version
            elif got.data_version != version:
                return False
            for uid in part:
                asked_store[uid] = max(asked_store.get(uid, -1), hops)
            for entity in got.entities:
                if entity.uid not in present:
                    present[entity.uid] = stored_entity(entity)
                    stored.add(entity.uid)
                # Its ancestors came with it (the closure table): not to be asked again.
                asked_store.setdefault(entity.uid, 0)
        return True

    from_bundle(seeds)
    if not from_store(sorted(seeds), depth):
        return None
    for _ in range(MAX_ROUNDS):
        needs = _missing(present, seeds, depth)
        bundle_asks = [u for u in needs if u not in asked_bundle]
        from_bundle(bundle_asks)
        store_asks: dict[int, list[Uid]] = {}
        for uid, hops in needs.items() if source is not None else ():
            if uid not in present and asked_store.get(uid, -1) < hops:
                store_asks.setdefault(hops, []).append(uid)
        if not bundle_asks and not store_asks:
            break
        for hops, uids in sorted(store_asks.items()):
            if not from_store(sorted(uids), hops):
                return None
    else:
        raise SliceFailed(f"entity store: the slice did not close within {MAX_ROUNDS} rounds")
    named: set[Uid] = set()
    for entity in present.values():
        named.update(entity.parents)
        named.update(entity.refs)
    if source is not None and version is None:
        version = source.store.data_version(source.tenant)
    return Slice(
        "[" + ",".join(e.text for e in present.values()) + "]",
        version or 0,
        frozenset(stored),
        frozenset(named - present.keys()),
    )


def _missing(present: Mapping[Uid, SliceEntity], seeds: set[Uid], depth: int) -> dict[Uid, int]:
    """Uids the slice must still look up, each with the hops to follow from it: every
    parent of an entity held, and every reference within `depth` hops of a seed."""
    everything = present
    needs: dict[Uid, int] = {}
    distance = dict.fromkeys(seeds, 0)
    frontier = [u for u in seeds if u in everything]
    hop = 0
    while frontier and hop < depth:
        hop += 1
        following: list[Uid] = []
        for uid in frontier:
            for ref in everything[uid].refs:
                if ref in distance:
                    continue
                distance[ref] = hop
                if ref in everything:
                    following.append(ref)
                else:
                    needs[ref] = max(needs.get(ref, 0), depth - hop)
        frontier = following
    for entity in everything.values():
        for parent in entity.parents:
            if parent not in everything:
                needs.setdefault(parent, 0)
    for uid in seeds:
        if uid not in everything:
            needs[uid] = max(needs.get(uid, 0), depth)
    return needs


def stored_entity(entity: StoredEntity) -> SliceEntity:
    return SliceEntity(
        json.dumps(entity.to_cedar_json(), separators=(",", ":")),
        entity.parents,
        tuple(entity_refs(entity.attrs)),
    )


def request_entities(items: Sequence[Any], index: int) -> dict[Uid, SliceEntity]:
    """Request entities (a parsed Cedar JSON list) by uid; a uid given twice is refused."""
    out: dict[Uid, SliceEntity] = {}
    for i, item in enumerate(items):
        raw = item.get("uid") if isinstance(item, dict) else None
        uid = _loose_uid(raw)
        if uid is None:
            raise InvalidRequest(f"entities[{i}].uid", "must be an entity uid", index)
        if uid in out:
            raise InvalidRequest(f"entities[{i}]", f"{_show(uid)}: duplicate entity uid", index)
        parents = item.get("parents", [])
        out[uid] = SliceEntity(
            json.dumps(item, separators=(",", ":")),
            tuple(p for p in map(_loose_uid, parents if isinstance(parents, list) else ()) if p),
            tuple(entity_refs((item.get("attrs"), item.get("tags")))),
        )
    return out


def entity_refs(value: Any) -> Iterator[Uid]:
    """Every entity reference in a Cedar JSON value: `{"__entity": ...}`, and any record
    shaped like a bare uid `{"type", "id"}` (Cedar reads one so where the schema expects an
    entity). A record that merely looks like one counts too: a spurious uid only makes the
    slice larger."""
    if isinstance(value, dict):
        uid = _loose_uid(value)
        if uid is not None:
            yield uid
        for v in value.values():
            yield from entity_refs(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from entity_refs(v)


def _loose_uid(raw: Any) -> Uid | None:
    if isinstance(raw, dict) and len(raw) == 1 and "__entity" in raw:
        raw = raw["__entity"]
    if isinstance(raw, dict) and len(raw) == 2:
        t, i = raw.get("type"), raw.get("id")
        if isinstance(t, str) and isinstance(i, str):
            return (t, i)
    return None


def _uid_of(raw: Mapping[str, Any]) -> Uid:
    return (raw["type"], raw["id"])


def _show(uid: Uid) -> str:
    escaped = uid[1].replace("\\", "\\\\").replace('"', '\\"')
    return f'{uid[0]}::"{escaped}"'
