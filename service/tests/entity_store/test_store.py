"""The entity store (pdp.entity_store), every test against SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from pydantic import ValidationError

from pdp.config import Settings
from pdp.entity_store import open_store, store_from_settings
from pdp.entity_store.api import EntityStore, StoredEntity
from pdp.entity_store.sqlite import SqliteEntityStore
from pdp.entity_store.validate import schema_validator
from pdp.errors import EntityRejected, InvalidRequest

from .conftest import entity, open_backend, ref

SCHEMA = cedarpy.Schema.from_str(
    """
    namespace App {
      entity Org;
      entity Group in [Org];
      entity User in [Group] { name: String, manager?: User };
      action view appliesTo { principal: User, resource: User };
    }
    """
)


def org_graph() -> list[dict[str, Any]]:
    return [
        entity("Org", "acme"),
        entity("Group", "eng", (("Org", "acme"),)),
        entity("Group", "ops", (("Org", "acme"),)),
        entity("User", "alice", (("Group", "eng"), ("Group", "ops")), manager=ref("User", "bob")),
        entity("User", "bob", (("Group", "eng"),), doc=ref("Doc", "d1")),
        entity("Doc", "d1", (("Folder", "f1"),), owner=ref("User", "carol")),
        entity("Folder", "f1", (("Folder", "root"),)),
        entity("User", "carol", tags=[{"deep": ref("Doc", "d2")}]),
        entity("Doc", "d2"),
    ]


def uids(entities: Any) -> list[tuple[str, str]]:
    return sorted(e.uid for e in entities)


def test_data_version_starts_at_zero_and_every_write_increases_it(
    store: EntityStore, tenant: str
) -> None:
    assert store.data_version(tenant) == 0
    assert store.write(tenant, [entity("Org", "acme")], []) == 1
    assert store.write(tenant, [entity("Org", "acme", x=1)], []) == 2
    assert store.write(tenant, [], [("Org", "nobody")]) == 3
    assert store.data_version(tenant) == 3
    assert store.data_version(tenant + "-other") == 0


def test_get_returns_what_was_written_and_an_upsert_replaces_attrs_and_parents(
    store: EntityStore, tenant: str
) -> None:
    store.write(tenant, org_graph(), [])
    alice = store.get(tenant, ("User", "alice"))
    assert alice == StoredEntity(
        ("User", "alice"), {"manager": ref("User", "bob")}, (("Group", "eng"), ("Group", "ops"))
    )
    assert alice.to_cedar_json()["parents"] == [
        {"type": "Group", "id": "eng"},
        {"type": "Group", "id": "ops"},
    ]
    store.write(tenant, [entity("User", "alice", (("Group", "ops"),), level=3)], [])
    assert store.get(tenant, ("User", "alice")) == StoredEntity(
        ("User", "alice"), {"level": 3}, (("Group", "ops"),)
    )
    assert store.ancestors(tenant, ("User", "alice")) == {("Group", "ops"), ("Org", "acme")}
    assert store.get(tenant, ("User", "nobody")) is None
    assert store.get(tenant + "-other", ("User", "alice")) is None  # tenants apart


def test_closure_follows_reparenting_and_deletes_of_ancestors(
    store: EntityStore, tenant: str
) -> None:
    store.write(tenant, org_graph(), [])
    assert store.ancestors(tenant, ("User", "bob")) == {("Group", "eng"), ("Org", "acme")}
    assert store.ancestors(tenant, ("Doc", "d1")) == {("Folder", "f1"), ("Folder", "root")}
    # Moving a group moves every member's ancestors with it.
    store.write(tenant, [entity("Org", "globex"), entity("Group", "eng", (("Org", "globex"),))], [])
    assert store.ancestors(tenant, ("User", "bob")) == {("Group", "eng"), ("Org", "globex")}
    assert store.ancestors(tenant, ("User", "alice")) == {
        ("Group", "eng"),
        ("Group", "ops"),
        ("Org", "globex"),
        ("Org", "acme"),
    }
    # A deleted group stays a (dangling) parent, as in Cedar, but its parents go.
    store.write(tenant, [], [("Group", "eng")])
    assert store.ancestors(tenant, ("User", "bob")) == {("Group", "eng")}
    # Re-creating it restores its members' ancestors.
    store.write(tenant, [entity("Group", "eng", (("Org", "acme"),))], [])
    assert store.ancestors(tenant, ("User", "bob")) == {("Group", "eng"), ("Org", "acme")}


def test_a_cycle_through_parents_is_refused_naming_it_and_nothing_is_written(
    store: EntityStore, tenant: str
) -> None:
    store.write(tenant, org_graph(), [])
    before = store.data_version(tenant)
    with pytest.raises(EntityRejected) as err:
        store.write(
            tenant,
            [entity("Org", "new"), entity("Org", "acme", (("User", "alice"),))],
            [],
        )
    assert err.value.field == "upserts[1].parents"
    assert "cycle" in err.value.message and 'Org::"acme"' in err.value.message
    assert store.data_version(tenant) == before
    assert store.get(tenant, ("Org", "new")) is None
    assert store.ancestors(tenant, ("Org", "acme")) == frozenset()
    # A cycle within one write is Cedar's to find.
    with pytest.raises(EntityRejected, match="cycle"):
        store.write(tenant, [entity("A", "a", (("A", "b"),)), entity("A", "b", (("A", "a"),))], [])
    assert store.data_version(tenant) == before


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (entity("App::Robot", "r2"), "`App::Robot` which is not declared in the schema"),
        (entity("App::User", "x"), "to have attribute `name`, but it does not"),
        (
            entity("App::User", "x", name=7),
            'in attribute `name` on `App::User::"x"`, type mismatch',
        ),
        (
            entity("App::User", "x", (("App::User", "alice"),), name="x"),
            "is not allowed to have an ancestor of type `App::User`",
        ),
    ],
    ids=["unknown-type", "missing-attribute", "mistyped-attribute", "disallowed-parent"],
)
def test_schema_validation_refuses_the_whole_write_naming_the_entity(
    store: EntityStore, tenant: str, bad: dict[str, Any], reason: str
) -> None:
    good = [
        entity("App::Org", "acme"),
        entity("App::Group", "eng", (("App::Org", "acme"),)),
        entity("App::User", "alice", (("App::Group", "eng"),), name="Alice"),
    ]
    validate = schema_validator(SCHEMA)
    assert store.write(tenant, good, [], validate) == 1
    with pytest.raises(EntityRejected) as err:
        store.write(
            tenant, [entity("App::Org", "globex"), *good, bad], [("App::Group", "old")], validate
        )
    assert err.value.field == "upserts[4]" and err.value.index == 4
    assert err.value.uid == (bad["uid"]["type"], bad["uid"]["id"])
    assert reason in err.value.message, err.value.message
    assert err.value.message.startswith(f'upserts[4]: {bad["uid"]["type"]}::"{bad["uid"]["id"]}": ')
    assert store.data_version(tenant) == 1
    assert store.get(tenant, ("App::Org", "globex")) is None
    assert store.get(tenant, ("App::User", "alice")) is not None


def test_with_a_schema_a_plain_type_id_record_is_stored_as_the_reference_cedar_reads(
    store: EntityStore, tenant: str
) -> None:
    manager = {"type": "App::User", "id": "bob"}
    store.write(
        tenant,
        [
            entity("App::User", "alice", name="A", manager=manager),
            entity("App::User", "bob", name="B"),
        ],
        [],
        schema_validator(SCHEMA),
    )
    sliced = store.slice(tenant, [("App::User", "alice")], 1)
    assert uids(sliced.entities) == [("App::User", "alice"), ("App::User", "bob")]


@pytest.mark.parametrize(
    ("upserts", "deletes", "field", "reason"),
    [
        ([{"uid": {"type": "User"}, "attrs": {}, "parents": []}], [], "upserts[0]", "uid"),
        ([entity("User", "a"), entity("User", "a")], [], "upserts[1]", "the same uid twice"),
        ([entity("User", "a")], [("User", "a")], "deletes[0]", "also upserted"),
        ([entity("User", "a\x00b")], [], "upserts[0].uid", "NUL"),
    ],
    ids=["malformed", "duplicate", "upsert-and-delete", "nul"],
)
def test_a_malformed_write_is_refused_naming_the_field(
    store: EntityStore,
    tenant: str,
    upserts: list[dict[str, Any]],
    deletes: list[tuple[str, str]],
    field: str,
    reason: str,
) -> None:
    with pytest.raises(EntityRejected) as err:
        store.write(tenant, upserts, deletes)
    assert err.value.field == field and reason in err.value.message, err.value.message
    assert store.data_version(tenant) == 0


def test_caps_on_a_write_are_precise_errors(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, tenant: str
) -> None:
    capped = open_backend(
        request, backend, tmp_path, max_entities_per_write=3, max_entity_bytes=200, max_parents=2
    )
    try:
        with pytest.raises(EntityRejected, match=r"^upserts: 3 upserts and 1 deletes: more than 3"):
            capped.write(tenant, [entity("U", str(i)) for i in range(3)], [("U", "x")])
        with pytest.raises(
            EntityRejected, match=r"^upserts\[1\]: entity is \d+ bytes of JSON, more than 200"
        ):
            capped.write(tenant, [entity("U", "a"), entity("U", "b", s="x" * 200)], [])
        with pytest.raises(EntityRejected, match=r"^upserts\[0\]\.parents: 3 parents, more than 2"):
            capped.write(tenant, [entity("U", "a", (("G", "1"), ("G", "2"), ("G", "3")))], [])
        assert capped.write(tenant, [entity("U", str(i)) for i in range(3)], []) == 1
    finally:
        capped.close()


def test_slice_follows_references_to_the_depth_and_says_what_it_left_out(
    store: EntityStore, tenant: str
) -> None:
    store.write(tenant, org_graph(), [])
    version = store.data_version(tenant)
    groups = [("Group", "eng"), ("Group", "ops"), ("Org", "acme")]

    s0 = store.slice(tenant, [("User", "alice"), ("User", "ghost")], 0)
    assert (s0.data_version, s0.truncated) == (version, True)  # alice.manager not followed
    assert uids(s0.entities) == sorted([("User", "alice"), *groups])

    s1 = store.slice(tenant, [("User", "alice")], 1)
    assert uids(s1.entities) == sorted([("User", "alice"), ("User", "bob"), *groups])
    assert s1.truncated  # bob.doc

    s2 = store.slice(tenant, [("User", "alice")], 2)
    folders = [("Folder", "f1")]  # Folder::"root" is a parent only, never stored
    assert uids(s2.entities) == sorted(
        [("User", "alice"), ("User", "bob"), ("Doc", "d1"), *folders, *groups]
    )
    assert s2.truncated  # d1.owner

    # References inside sets and records are followed too.
    s4 = store.slice(tenant, [("User", "alice")], 4)
    assert ("Doc", "d2") in uids(s4.entities) and not s4.truncated

    # A reference past the depth to an entity that does not exist leaves nothing out.
    store.write(tenant, [entity("User", "dan", manager=ref("User", "nobody"))], [])
    assert not store.slice(tenant, [("User", "dan")], 0).truncated
    assert store.slice(tenant, [], 2).entities == ()


def test_slice_and_list_arguments_are_capped(store: EntityStore, tenant: str) -> None:
    with pytest.raises(InvalidRequest, match="^depth: must be from 0 to 8"):
        store.slice(tenant, [("U", "a")], 9)
    with pytest.raises(InvalidRequest, match="^uids: 1001 uids"):
        store.slice(tenant, [("U", str(i)) for i in range(1001)], 1)
    with pytest.raises(InvalidRequest, match="^page_size: must be from 1 to 1000"):
        store.list(tenant, page_size=0)
    with pytest.raises(InvalidRequest, match="^page_token: not a token this store made"):
        store.list(tenant, page_token="%%%")


def test_list_pages_in_type_and_id_order_and_export_has_everything(
    store: EntityStore, tenant: str
) -> None:
    store.write(tenant, org_graph(), [])
    seen: list[tuple[str, str]] = []
    token = ""
    pages = 0
    while True:
        page, token = store.list(tenant, page_size=2, page_token=token)
        seen.extend(e.uid for e in page)
        pages += 1
        if not token:
            break
    assert seen == sorted(
        e.uid
        for e in (StoredEntity((e["uid"]["type"], e["uid"]["id"]), {}, ()) for e in org_graph())
    )
    assert pages == 5
    users, token = store.list(tenant, entity_type="User", page_size=2)
    assert [u.uid for u in users] == [("User", "alice"), ("User", "bob")]
    rest, last = store.list(tenant, entity_type="User", page_size=2, page_token=token)
    assert ([u.uid for u in rest], last) == ([("User", "carol")], "")
    with pytest.raises(InvalidRequest, match="entity_type differs"):
        store.list(tenant, entity_type="Doc", page_token=token)
    exported = list(store.export(tenant))
    assert [e.uid for e in exported] == seen
    assert exported[3] == store.get(tenant, exported[3].uid)


def test_a_slice_reads_one_snapshot_while_writes_go_on(store: EntityStore, tenant: str) -> None:
    """A writer keeps alice.v == bob.v in every write; a slice through alice -> bob must
    never see them differ (each query of a slice reading its own moment would)."""
    store.write(tenant, [entity("U", "alice", v=0, m=ref("U", "bob")), entity("U", "bob", v=0)], [])
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        while not stop.is_set():
            writes += 1
            store.write(
                tenant,
                [
                    entity("U", "alice", v=writes, m=ref("U", "bob")),
                    entity("U", "bob", (("G", str(writes)),), v=writes),
                ],
                [],
            )

    thread = threading.Thread(target=writer)
    thread.start()
    slices = 0
    try:
        while writes < 30 or slices < 30:
            s = store.slice(tenant, [("U", "alice")], 1)
            by_uid = {e.uid: e for e in s.entities}
            v = by_uid[("U", "alice")].attrs["v"]
            assert by_uid[("U", "bob")].attrs["v"] == v
            assert ("G", str(v)) in by_uid[("U", "bob")].parents or v == 0
            assert s.data_version == v + 1
            slices += 1
    finally:
        stop.set()
        thread.join()
    assert slices >= 30 and writes >= 30


def test_open_store_urls(tmp_path: Path) -> None:
    default = open_store(None, tmp_path / "data")
    assert isinstance(default, SqliteEntityStore)
    assert default.path == tmp_path / "data" / "entities.sqlite3"
    default.close()
    named = open_store(f"sqlite:///{tmp_path}/other.db", tmp_path)
    assert isinstance(named, SqliteEntityStore) and named.path == tmp_path / "other.db"
    named.close()
    with pytest.raises(ValueError, match="entity_store_url must be"):
        open_store("mysql://x", tmp_path)


def test_sqlite_is_wal_with_full_sync_and_no_query_scans_a_table(tmp_path: Path) -> None:
    """Every statement a write, a slice, a list and a get run is answered from an index
    on more than the tenant: `EXPLAIN QUERY PLAN` names no SCAN (a scan would cost the
    store's size, not the slice's)."""
    sqlite = SqliteEntityStore(tmp_path / "e.db")
    statements: list[str] = []
    conn = sqlite._connection()  # this thread's: the one the calls below use
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.set_trace_callback(statements.append)
    sqlite.write("t", org_graph(), [])
    sqlite.write("t", [entity("Group", "eng", (("Org", "globex"),))], [("User", "carol")])
    sqlite.slice("t", [("User", "alice")], 2)
    sqlite.list("t", page_size=2)
    sqlite.list(
        "t",
        entity_type="User",
        page_size=1,
        page_token=sqlite.list("t", entity_type="User", page_size=1)[1],
    )
    sqlite.get("t", ("User", "alice"))
    sqlite.ancestors("t", ("User", "alice"))
    sqlite.data_version("t")
    conn.set_trace_callback(None)
    queries = {
        s for s in statements if s.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE"))
    }
    assert len(queries) >= 12
    plans = {q: [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {q}")] for q in queries}
    # A search on the tenant alone reads the whole tenant: only a LIMITed page may (it
    # stops after a page), and the versions table (keyed by tenant).
    scans = {
        q: p
        for q, p in plans.items()
        for step in p
        if not step.startswith("SEARCH")
        or ("(tenant=?)" in step and "LIMIT" not in q and " versions " not in step)
    }
    assert not scans, scans
    sqlite.close()
    with pytest.raises(Exception, match="closed"):
        sqlite.get("t", ("User", "alice"))


def test_settings_name_the_store_and_its_caps(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "state", entity_write_max_entities=2)
    store = store_from_settings(settings)
    try:
        assert isinstance(store, SqliteEntityStore)
        assert store.path == tmp_path / "state" / "entities.sqlite3"
        with pytest.raises(EntityRejected, match="more than 2 entities in one write"):
            store.write("t", [entity("U", "a"), entity("U", "b"), entity("U", "c")], [])
    finally:
        store.close()
    with pytest.raises(ValidationError, match="entity_store_url"):
        Settings(entity_store_url="mysql://db")


class _Recorder:
    """A cursor that keeps each statement it runs, with its parameters."""

    def __init__(self, cursor: Any, into: list[tuple[str, Any]]) -> None:
        self._cursor, self._into = cursor, into

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._into.append((sql, params))
        return self._cursor.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def test_postgres_has_an_index_for_every_query(
    postgres_url: str, tmp_path: Path, tenant: str
) -> None:
    """With sequential scans disabled, PostgreSQL still plans one where no index serves a
    query: every statement of a write, a slice, a list and a get must plan without one."""
    from contextlib import contextmanager

    import psycopg

    from pdp.entity_store.postgres import PostgresEntityStore

    statements: list[tuple[str, Any]] = []

    class Recording(PostgresEntityStore):
        @contextmanager
        def _tx(self, begin: str) -> Any:
            with super()._tx(begin) as tx:
                tx.cursor = _Recorder(tx.cursor, statements)
                yield tx

    store = Recording(postgres_url)
    try:
        # Enough rows (analysed) that the planner weighs indexes as it would in production:
        # on a handful of rows reading the tenant's whole range is cheapest.
        filler = [
            entity("Filler", str(i), (("Group", str(i % 50)),), r=ref("Filler", str(i // 2)))
            for i in range(3000)
        ]
        store.write(tenant, filler, [])
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        statements.clear()
        store.write(tenant, org_graph(), [])
        store.write(tenant, [entity("Group", "eng", (("Org", "globex"),))], [("User", "carol")])
        store.slice(tenant, [("User", "alice")], 2)
        store.list(tenant, page_size=2, page_token=store.list(tenant, page_size=2)[1])
        store.list(
            tenant,
            entity_type="User",
            page_size=1,
            page_token=store.list(tenant, entity_type="User", page_size=1)[1],
        )
        store.get(tenant, ("User", "alice"))
        store.ancestors(tenant, ("User", "alice"))
    finally:
        store.close()
    queries = [
        (q, p) for q, p in statements if q.lstrip().upper().startswith(("SELECT ", "DELETE "))
    ]
    queries = [(q, p) for q, p in queries if "pg_advisory" not in q and "pg_notify" not in q]
    assert len(queries) >= 12
    seq: dict[str, list[str]] = {}
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        literal = psycopg.ClientCursor(conn)
        for q, p in queries:
            plan = [r[0] for r in conn.execute(f"EXPLAIN {literal.mogrify(q, p)}").fetchall()]
            # A Filter on a key column: the index served the tenant only (a LIMITed page
            # may read its range so).
            if any("Seq Scan" in line for line in plan) or (
                "LIMIT" not in q and any(line.strip().startswith("Filter:") for line in plan)
            ):
                seq[q] = plan
    assert not seq, seq


def chain(name: str, n: int, top: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """`n` groups, each the parent of the next; the first under `top` when given."""
    first = (top,) if top else ()
    return [entity("G", f"{name}{i}", (("G", f"{name}{i - 1}"),) if i else first) for i in range(n)]


def test_an_entity_over_the_ancestor_cap_is_refused_and_nothing_is_written(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, tenant: str
) -> None:
    # attack2 (tests/attack2/chain_cost.py): a chain of n costs n(n-1)/2 closure rows.
    capped = open_backend(request, backend, tmp_path, max_ancestors=10)
    try:
        with pytest.raises(EntityRejected) as err:
            capped.write(tenant, chain("c", 12), [])
        assert err.value.field == "upserts[11].parents"
        assert 'G::"c11"' in err.value.message and "entity_max_ancestors" in err.value.message
        assert capped.data_version(tenant) == 0 and capped.get(tenant, ("G", "c0")) is None
        capped.write(tenant, chain("c", 11), [])  # c10: 10 ancestors, the cap
        before = capped.data_version(tenant)
        # A stored descendant pushed over the cap by a write above it is named.
        with pytest.raises(EntityRejected) as err:
            capped.write(tenant, [entity("G", "top"), *chain("c", 1, ("G", "top"))], [])
        assert err.value.field == "upserts"
        assert 'G::"c10"' in err.value.message and "more than 10" in err.value.message
        assert capped.data_version(tenant) == before
        assert capped.get(tenant, ("G", "top")) is None
        assert len(capped.ancestors(tenant, ("G", "c10"))) == 10
    finally:
        capped.close()


def test_a_write_over_the_closure_row_cap_is_refused_and_nothing_is_written(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, tenant: str
) -> None:
    capped = open_backend(request, backend, tmp_path, max_closure_rows=50)
    try:
        kids = [entity("G", f"k{i}", (("G", "root"),)) for i in range(51)]  # 51 rows
        with pytest.raises(EntityRejected) as err:
            capped.write(tenant, [entity("G", "root"), *kids], [])
        assert "entity_write_max_closure_rows" in err.value.message
        assert capped.data_version(tenant) == 0 and capped.get(tenant, ("G", "root")) is None
        capped.write(tenant, [entity("G", "root"), *kids[:50]], [])  # 50 rows: the cap
        assert capped.ancestors(tenant, ("G", "k49")) == {("G", "root")}
    finally:
        capped.close()
