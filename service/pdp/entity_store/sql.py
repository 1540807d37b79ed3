"""What the SQL backends share: the tables, the closure maintenance and the slice query.

Tables (every one keyed by tenant first; a uid is stored as its key, Cedar's own display
form `Type::"id"`, which is unambiguous because a type name holds no quote):

    versions  (tenant, version)                  the per-tenant data version
    entities  (tenant, uid, type, id, attrs, parents)   attrs/parents: Cedar JSON text
    edges     (tenant, child, parent)            each stored entity's parents
    closure   (tenant, descendant, ancestor)     transitive ancestors, kept on every write
    refs      (tenant, source, target)           entity references inside attributes

A backend supplies transactions (`Backend._read` / `_write`) and its DDL; everything here
runs inside one transaction, through `Tx`, whose SQL is written with `?` placeholders.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from pdp.entity_store.api import (
    EntitySlice,
    EntityUid,
    StoredEntity,
    StoreLimits,
    Validator,
)
from pdp.entity_store.validate import FIELD, SchemaValidator, entity_texts, parse_entities
from pdp.errors import EntityRejected, InvalidRequest

_quote = json.encoder.encode_basestring_ascii
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
CHUNK = 500  # keys per `IN (...)`: far below SQLite's 32,766 variables and PG's 65,535
MAX_PAGE_SIZE = 1000
MAX_SLICE_UIDS = 1000
MAX_SLICE_DEPTH = 8
# A token this store made holds three names (type, id, listed type), each at most the
# largest `max_id_bytes` allowed (1 MiB), JSON-escaped (at most 6 chars a byte), base64'd
# (4/3): anything longer is not one of ours and is refused before it is decoded.
MAX_PAGE_TOKEN_CHARS = 3 * 6 * 1024 * 1024 * 4 // 3 + 64


def uid_key(uid: EntityUid) -> str:
    return f"{uid[0]}::{_quote(uid[1])}"  # the id quoted as json.dumps quotes it


def key_uid(key: str) -> EntityUid:
    at = key.index('::"')
    return key[:at], json.loads(key[at + 2 :])


class Tx:
    """One open transaction's cursor, with `?` placeholders whatever the driver wants."""

    def __init__(self, cursor: Any, percent: bool) -> None:
        self.cursor = cursor
        self.percent = percent  # psycopg wants %s

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.percent else sql

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(self._sql(sql), params)
        return list(self.cursor.fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(self._sql(sql), params)

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        batch = list(params)
        if batch:
            self.cursor.executemany(self._sql(sql), batch)

    def rows_in(
        self, sql: str, params: Sequence[Any], keys: Iterable[str]
    ) -> list[tuple[Any, ...]]:
        """`sql` with `{in}` standing for a list of placeholders, run for chunks of `keys`."""
        out: list[tuple[Any, ...]] = []
        todo = list(keys)
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i : i + CHUNK]
            out.extend(self.rows(sql.format(in_=",".join("?" * len(chunk))), [*params, *chunk]))
        return out

    def run_in(self, sql: str, params: Sequence[Any], keys: Iterable[str]) -> None:
        todo = list(keys)
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i : i + CHUNK]
            self.run(sql.format(in_=",".join("?" * len(chunk))), [*params, *chunk])


@contextmanager
def transaction(cursor: Any, begin: str, percent: bool) -> Iterator[Tx]:
    """`begin` on `cursor`, then COMMIT, or ROLLBACK if the block raised."""
    cursor.execute(begin)
    try:
        yield Tx(cursor, percent)
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class Prepared:
    """One upsert as Cedar parsed it, ready for the tables."""

    index: int
    entity: StoredEntity
    key: str
    attrs: str
    parents: str
    refs: frozenset[str]


def prepare(
    upserts: Sequence[Mapping[str, Any]],
    deletes: Sequence[EntityUid],
    limits: StoreLimits,
    validate: Validator | None,
) -> tuple[list[Prepared], list[str]]:
    """Check a write before any transaction: caps, Cedar's parse (and `validate`), a uid
    given twice. Attributes are kept as Cedar prints them back (references as `__entity`),
    so what is stored is what Cedar read."""
    total = len(upserts) + len(deletes)
    if total > limits.max_entities_per_write:
        raise EntityRejected(
            FIELD,
            f"{len(upserts)} upserts and {len(deletes)} deletes: more than"
            f" {limits.max_entities_per_write} entities in one write",
        )
    texts = entity_texts(upserts)
    for i, (entity, text) in enumerate(zip(upserts, texts, strict=True)):
        size = len(text)
        if size > limits.max_entity_bytes:
            raise EntityRejected(
                f"{FIELD}[{i}]",
                f"entity is {size} bytes of JSON, more than {limits.max_entity_bytes}",
                index=i,
            )
        parents = entity.get("parents") if isinstance(entity, Mapping) else None
        if isinstance(parents, list) and len(parents) > limits.max_parents:
            raise EntityRejected(
                f"{FIELD}[{i}].parents",
                f"{len(parents)} parents, more than {limits.max_parents}",
                index=i,
            )
    # A schema validator's parse is the one kept: with the schema, Cedar reads each
    # reference as the schema types it (a plain {"type", "id"} record may be one).
    schema = validate.schema if isinstance(validate, SchemaValidator) else None
    if validate is not None and schema is None:
        validate(upserts)
    parsed = json.loads(str(parse_entities(upserts, schema, texts))) if upserts else []
    by_key = {uid_key(_uid(e["uid"])): e for e in parsed}  # with a schema, also its actions
    if len({uid_key(_uid(_plain_uid(e["uid"]))) for e in upserts}) < len(upserts):
        _raise_duplicate(upserts)
    out: list[Prepared] = []
    for i, entity in enumerate(upserts):
        key = uid_key(_uid(_plain_uid(entity["uid"])))
        cedar = by_key[key]
        uid = _uid(cedar["uid"])
        if "\x00" in uid[1]:
            # PostgreSQL text cannot hold NUL; refused on every backend alike.
            raise EntityRejected(f"{FIELD}[{i}].uid", "a NUL character in the id", index=i)
        # Cedar prints every transitive ancestor as a parent: the parents are the input's.
        parents = tuple(dict.fromkeys(_uid(_plain_uid(p)) for p in entity.get("parents", [])))
        stored = StoredEntity(uid, cedar["attrs"], parents)
        out.append(
            Prepared(
                i,
                stored,
                key,
                _SORTED.encode(cedar["attrs"]),
                _SORTED.encode([list(p) for p in parents]),
                frozenset(uid_key(r) for r in references(cedar["attrs"])),
            )
        )
    upserted = {p.key for p in out}
    delete_keys: list[str] = []
    for j, uid in enumerate(deletes):
        key = uid_key(uid)
        if key in upserted:
            raise EntityRejected(f"deletes[{j}]", "also upserted in this write", index=j, uid=uid)
        delete_keys.append(key)
    return out, list(dict.fromkeys(delete_keys))


def references(value: Any) -> Iterator[EntityUid]:
    """Entity uids an attribute value refers to, inside records and sets too.

    Cedar prints a reference as `{"__entity": ...}`; a record that is exactly
    `{"type", "id"}` is one too wherever the schema says so, so it is followed as well
    (following too much only adds an entity to a slice; too little would leave one out)."""
    if isinstance(value, list):
        for v in value:
            yield from references(v)
    elif isinstance(value, dict):
        inner = value.get("__entity")
        if len(value) == 1 and isinstance(inner, dict):
            yield _uid(inner)
        elif len(value) == 1 and "__extn" in value:
            return
        elif value.keys() == {"type", "id"} and all(isinstance(v, str) for v in value.values()):
            yield value["type"], value["id"]
        else:
            for v in value.values():
                yield from references(v)


def _uid(value: Mapping[str, Any]) -> EntityUid:
    return str(value["type"]), str(value["id"])


def _plain_uid(value: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = value.get("__entity")
    return inner if isinstance(inner, Mapping) else value


def _raise_duplicate(upserts: Sequence[Mapping[str, Any]]) -> None:
    # Cedar keeps one of two entities with the same uid; a write must not be ambiguous.
    seen: set[str] = set()
    for i, entity in enumerate(upserts):
        uid = _uid(_plain_uid(entity["uid"]))
        if uid_key(uid) in seen:
            raise EntityRejected(
                f"{FIELD}[{i}]", "the same uid twice in one write", index=i, uid=uid
            )
        seen.add(uid_key(uid))
    raise AssertionError("Cedar parsed a different number of entities than it was given")


# -- writing ---------------------------------------------------------------------------


def apply_write(
    tx: Tx, tenant: str, upserts: list[Prepared], deletes: list[str], limits: StoreLimits
) -> int:
    """Apply a prepared write in `tx` (which holds the tenant's write lock); the new version.

    The closure changes only for the written entities and their descendants (any path
    whose ancestors change passes through a written entity): their rows are recomputed
    from their parents, the ancestors of the others are read from the closure."""
    changed = [p.key for p in upserts] + deletes
    affected = set(changed)
    affected.update(
        r[0]
        for r in tx.rows_in(
            "SELECT descendant FROM closure WHERE tenant = ? AND ancestor IN ({in_})",
            [tenant],
            changed,
        )
    )
    tx.run_in("DELETE FROM edges WHERE tenant = ? AND child IN ({in_})", [tenant], changed)
    tx.run_in("DELETE FROM refs WHERE tenant = ? AND source IN ({in_})", [tenant], changed)
    tx.run_in("DELETE FROM entities WHERE tenant = ? AND uid IN ({in_})", [tenant], deletes)
    tx.many(
        "INSERT INTO entities (tenant, uid, type, id, attrs, parents) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, uid) DO UPDATE SET attrs = excluded.attrs,"
        " parents = excluded.parents",
        [(tenant, p.key, p.entity.uid[0], p.entity.uid[1], p.attrs, p.parents) for p in upserts],
    )
    tx.many(
        "INSERT INTO edges (tenant, child, parent) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [(tenant, p.key, uid_key(parent)) for p in upserts for parent in p.entity.parents],
    )
    tx.many(
        "INSERT INTO refs (tenant, source, target) VALUES (?, ?, ?)",
        [(tenant, p.key, r) for p in upserts for r in sorted(p.refs)],
    )

    parents: dict[str, list[str]] = {k: [] for k in affected}
    for child, parent in tx.rows_in(
        "SELECT child, parent FROM edges WHERE tenant = ? AND child IN ({in_})",
        [tenant],
        affected,
    ):
        parents[child].append(parent)
    outside = {p for ps in parents.values() for p in ps if p not in affected}
    known: dict[str, set[str]] = {k: set() for k in outside}
    for descendant, ancestor in tx.rows_in(
        "SELECT descendant, ancestor FROM closure WHERE tenant = ? AND descendant IN ({in_})",
        [tenant],
        outside,
    ):
        known[descendant].add(ancestor)
    closure = _closure(parents, known, {p.key: p for p in upserts}, limits)
    tx.run_in("DELETE FROM closure WHERE tenant = ? AND descendant IN ({in_})", [tenant], affected)
    tx.many(
        "INSERT INTO closure (tenant, descendant, ancestor) VALUES (?, ?, ?)",
        [(tenant, d, a) for d in sorted(closure) for a in sorted(closure[d])],
    )
    tx.run(
        "INSERT INTO versions (tenant, version) VALUES (?, 1)"
        " ON CONFLICT (tenant) DO UPDATE SET version = versions.version + 1",
        [tenant],
    )
    return int(tx.rows("SELECT version FROM versions WHERE tenant = ?", [tenant])[0][0])


def _closure(
    parents: dict[str, list[str]],
    known: dict[str, set[str]],
    written: dict[str, Prepared],
    limits: StoreLimits,
) -> dict[str, set[str]]:
    """Ancestors of every node of `parents` (the affected ones), from their parents and the
    `known` ancestors of the others; a cycle is refused, naming it. Iterative: a chain of
    thousands of groups must not hit Python's recursion limit. The caps are checked as each
    node's set is made, so a refused write stops after at most the caps' worth of work."""
    done: dict[str, set[str]] = {}
    rows = 0
    for root in parents:
        if root in done:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        on_path: dict[str, int] = {root: 0}
        while stack:
            node, i = stack[-1]
            ps = parents[node]
            if i < len(ps):
                stack[-1] = (node, i + 1)
                p = ps[i]
                if p in on_path:
                    _raise_cycle([n for n, _ in stack[on_path[p] :]] + [p], written)
                if p in parents and p not in done:
                    on_path[p] = len(stack)
                    stack.append((p, 0))
                continue
            ancestors: set[str] = set()
            for p in ps:
                ancestors.add(p)
                ancestors.update(done[p] if p in parents else known[p])
            rows += len(ancestors)
            _check_closure(node, len(ancestors), rows, written, limits)
            done[node] = ancestors
            del on_path[node]
            stack.pop()
    return done


def _check_closure(
    node: str, ancestors: int, rows: int, written: dict[str, Prepared], limits: StoreLimits
) -> None:
    if ancestors > limits.max_ancestors:
        reason = (
            f"would have {ancestors} ancestors, more than {limits.max_ancestors}"
            " (entity_max_ancestors)"
        )
    elif rows > limits.max_closure_rows:
        reason = (
            f"the write would compute more than {limits.max_closure_rows} closure rows"
            " (entity_write_max_closure_rows)"
        )
    else:
        return
    mine = written.get(node)
    if mine is None:  # a stored descendant of a written entity
        raise EntityRejected(FIELD, reason, uid=key_uid(node))
    raise EntityRejected(
        f"{FIELD}[{mine.index}].parents", reason, index=mine.index, uid=mine.entity.uid
    )


def _raise_cycle(cycle: list[str], written: dict[str, Prepared]) -> None:
    path = " -> ".join(cycle)
    culprit = next((written[k] for k in cycle if k in written), None)
    if culprit is None:
        raise AssertionError(f"a cycle not through a written entity: {path}")
    raise EntityRejected(
        f"{FIELD}[{culprit.index}].parents",
        f"parents would form a cycle: {path}",
        index=culprit.index,
        uid=culprit.entity.uid,
    )


# -- reading ---------------------------------------------------------------------------

ENTITY_COLUMNS = "type, id, attrs, parents"


def entity_of(row: Sequence[Any]) -> StoredEntity:
    kind, eid, attrs, parents = row
    return StoredEntity(
        (kind, eid), json.loads(attrs), tuple((p[0], p[1]) for p in json.loads(parents))
    )


def read_version(tx: Tx, tenant: str) -> int:
    rows = tx.rows("SELECT version FROM versions WHERE tenant = ?", [tenant])
    return int(rows[0][0]) if rows else 0


def read_get(tx: Tx, tenant: str, uid: EntityUid) -> StoredEntity | None:
    rows = tx.rows(
        f"SELECT {ENTITY_COLUMNS} FROM entities WHERE tenant = ? AND uid = ?",
        [tenant, uid_key(uid)],
    )
    return entity_of(rows[0]) if rows else None


def read_ancestors(tx: Tx, tenant: str, uid: EntityUid) -> frozenset[EntityUid]:
    rows = tx.rows(
        "SELECT ancestor FROM closure WHERE tenant = ? AND descendant = ?",
        [tenant, uid_key(uid)],
    )
    return frozenset(key_uid(r[0]) for r in rows)


def read_list(
    tx: Tx, tenant: str, entity_type: str | None, page_size: int, page_token: str
) -> tuple[list[StoredEntity], str]:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest("page_size", f"must be from 1 to {MAX_PAGE_SIZE}")
    after = _decode_token(page_token, entity_type)
    where, params = "tenant = ?", [tenant]
    if entity_type is not None:
        where += " AND type = ?"
        params.append(entity_type)
    if after is not None and entity_type is not None:
        where += " AND id > ?"  # (type, id) > here makes SQLite sort the page
        params.append(after[1])
    elif after is not None:
        where += " AND (type, id) > (?, ?)"
        params.extend(after)
    rows = tx.rows(
        f"SELECT {ENTITY_COLUMNS} FROM entities WHERE {where} ORDER BY type, id LIMIT ?",
        [*params, page_size + 1],
    )
    page = [entity_of(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    return page, _encode_token(page[-1].uid, entity_type) if more else ""


def _encode_token(last: EntityUid, entity_type: str | None) -> str:
    raw = json.dumps([last[0], last[1], entity_type], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, entity_type: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidRequest("page_token", f"longer than {MAX_PAGE_TOKEN_CHARS} characters")
    try:
        kind, eid, for_type = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        # RecursionError: deeply nested JSON, which no token of ours is.
        raise InvalidRequest("page_token", "not a token this store made") from None
    if not isinstance(kind, str) or not isinstance(eid, str) or for_type != entity_type:
        raise InvalidRequest("page_token", "not a token of this listing (entity_type differs)")
    return kind, eid


def read_slice(tx: Tx, tenant: str, uids: Sequence[EntityUid], depth: int) -> EntitySlice:
    """Named entities, references followed `depth` hops, ancestors of all of those: each
    step one indexed query over the keys found so far (cost grows with the slice)."""
    if len(uids) > MAX_SLICE_UIDS:
        raise InvalidRequest("uids", f"{len(uids)} uids, more than {MAX_SLICE_UIDS}")
    if not 0 <= depth <= MAX_SLICE_DEPTH:
        raise InvalidRequest("depth", f"must be from 0 to {MAX_SLICE_DEPTH}")
    version = read_version(tx, tenant)
    reached = dict.fromkeys(uid_key(u) for u in uids)
    frontier = list(reached)
    for _ in range(depth):
        targets = _targets(tx, tenant, frontier)
        frontier = [t for t in targets if t not in reached]
        reached.update(dict.fromkeys(frontier))
    ancestors = {
        r[0]
        for r in tx.rows_in(
            "SELECT ancestor FROM closure WHERE tenant = ? AND descendant IN ({in_})",
            [tenant],
            reached,
        )
    }
    wanted = set(reached) | ancestors
    rows = tx.rows_in(
        f"SELECT uid, {ENTITY_COLUMNS} FROM entities WHERE tenant = ? AND uid IN ({{in_}})",
        [tenant],
        sorted(wanted),
    )
    # A reference past the depth matters only if it names a stored entity left out.
    beyond = sorted(set(_targets(tx, tenant, frontier)) - wanted)
    truncated = bool(
        beyond
        and tx.rows_in(
            "SELECT uid FROM entities WHERE tenant = ? AND uid IN ({in_})", [tenant], beyond
        )
    )
    entities = tuple(entity_of(r[1:]) for r in sorted(rows, key=lambda r: str(r[0])))
    return EntitySlice(version, entities, truncated)


def _targets(tx: Tx, tenant: str, sources: Sequence[str]) -> list[str]:
    rows = tx.rows_in(
        "SELECT target FROM refs WHERE tenant = ? AND source IN ({in_})", [tenant], sources
    )
    return list(dict.fromkeys(sorted(r[0] for r in rows)))


def read_export(tx: Tx, tenant: str, batch: int = 1000) -> Iterator[StoredEntity]:
    after: tuple[str, str] | None = None
    while True:
        cond = "" if after is None else " AND (type, id) > (?, ?)"
        rows = tx.rows(
            f"SELECT {ENTITY_COLUMNS} FROM entities WHERE tenant = ?{cond}"
            " ORDER BY type, id LIMIT ?",
            [tenant, *(after or ()), batch],
        )
        for row in rows:
            yield entity_of(row)
        if len(rows) < batch:
            return
        after = (rows[-1][0], rows[-1][1])


class Backend:
    """The EntityStore methods, given a backend's transactions."""

    limits: StoreLimits
    percent = False

    def _read(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _write(self, tenant: str) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def data_version(self, tenant: str) -> int:
        with self._read() as tx:
            return read_version(tx, tenant)

    def write(
        self,
        tenant: str,
        upserts: Sequence[Mapping[str, Any]],
        deletes: Sequence[EntityUid],
        validate: Validator | None = None,
    ) -> int:
        prepared, delete_keys = prepare(upserts, deletes, self.limits, validate)
        with self._write(tenant) as tx:
            version = apply_write(tx, tenant, prepared, delete_keys, self.limits)
            self._written(tx, tenant, version)
            return version

    def _written(self, tx: Tx, tenant: str, version: int) -> None:
        """Called inside a write's transaction once it is applied (to notify replicas)."""

    def get(self, tenant: str, uid: EntityUid) -> StoredEntity | None:
        with self._read() as tx:
            return read_get(tx, tenant, uid)

    def list(
        self,
        tenant: str,
        *,
        entity_type: str | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[StoredEntity], str]:
        with self._read() as tx:
            return read_list(tx, tenant, entity_type, page_size, page_token)

    def slice(self, tenant: str, uids: Sequence[EntityUid], depth: int) -> EntitySlice:
        with self._read() as tx:
            return read_slice(tx, tenant, uids, depth)

    def ancestors(self, tenant: str, uid: EntityUid) -> frozenset[EntityUid]:
        with self._read() as tx:
            return read_ancestors(tx, tenant, uid)
