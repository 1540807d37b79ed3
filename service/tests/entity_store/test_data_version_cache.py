"""SQLite's data version, read on every check, costs no table read while nothing changed
(issue 7), and still moves at once after any acknowledged write: by the same connection,
another thread's, another store object's, or another process's (`pdp entities import`).

Statements are counted with SQLite's own trace callback on the reading connection."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pdp.bundle import load_bundle
from pdp.engine import Engine, Snapshot
from pdp.entity_store import SQLITE_FILE, open_store
from pdp.entity_store.sqlite import SqliteEntityStore
from pdp.model import CheckInput, Decision, EntityRef

from ..support import DOCS_BUNDLE, pdp_command
from ..test_batch_parse import BOBS_DOC3

TENANT = "docs"


def user(i: int) -> dict[str, Any]:
    return {"uid": {"type": "User", "id": f"u{i}"}, "attrs": {}, "parents": []}


def selects(store: SqliteEntityStore, reads: Callable[[], None]) -> int:
    """How many times `reads()` read the versions table on this thread's connection."""
    statements: list[str] = []
    conn = store._connection()
    conn.set_trace_callback(statements.append)
    try:
        reads()
    finally:
        conn.set_trace_callback(None)
    return sum(1 for s in statements if "FROM versions" in s)


def test_an_unchanged_store_reads_its_version_once(tmp_path: Path) -> None:
    store = SqliteEntityStore(tmp_path / "e.sqlite3")
    try:
        version = store.write(TENANT, [user(0)], [])

        def reads() -> None:
            for _ in range(100):
                assert store.data_version(TENANT) == version
                assert store.data_version("never-written") == 0

        assert selects(store, reads) == 2  # one per tenant; before: 200
    finally:
        store.close()


def _write_here(store: SqliteEntityStore, other: SqliteEntityStore, i: int) -> int:
    return store.write(TENANT, [user(i)], [])  # the reading connection itself


def _write_on_another_thread(store: SqliteEntityStore, other: SqliteEntityStore, i: int) -> int:
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(store.write(TENANT, [user(i)], [])))
    t.start()
    t.join()
    return out[0]


def _write_by_another_store(store: SqliteEntityStore, other: SqliteEntityStore, i: int) -> int:
    return other.write(TENANT, [user(i)], [])


@pytest.mark.parametrize("write", [_write_here, _write_on_another_thread, _write_by_another_store])
def test_every_acknowledged_write_is_seen_by_the_next_read(
    tmp_path: Path, write: Callable[[SqliteEntityStore, SqliteEntityStore, int], int]
) -> None:
    store = SqliteEntityStore(tmp_path / "e.sqlite3")
    other = SqliteEntityStore(tmp_path / "e.sqlite3")
    try:
        for i in range(20):
            before = store.data_version(TENANT)  # cached now
            assert store.data_version(TENANT) == before
            version = write(store, other, i)
            assert version == before + 1
            assert store.data_version(TENANT) == version
        # A write that is refused changes nothing, and the version is still read right.
        with pytest.raises(Exception, match="twice"):
            store.write(TENANT, [user(0), user(0)], [])
        assert store.data_version(TENANT) == version
    finally:
        store.close()
        other.close()


def test_a_check_sees_what_another_process_imported(tmp_path: Path) -> None:
    # `pdp entities import`, another process, writes while the engine keeps its connection
    # (and its cached version) open: the next check reads the new version and the entity.
    data = tmp_path / "data"
    store = open_store(None, data)
    assert (data / SQLITE_FILE).exists()
    engine = Engine(Snapshot.of({TENANT: load_bundle(DOCS_BUNDLE)}), store=store)
    read = CheckInput(
        EntityRef("User", "bob"), EntityRef("Action", "read"), EntityRef("Document", "doc3")
    )
    try:
        first = engine.check(TENANT, read)
        assert (first.decision, first.data_version) == (Decision.DENY, 0)
        assert engine.check(TENANT, read).data_version == 0
        (tmp_path / "doc3.json").write_text(json.dumps([BOBS_DOC3]))
        done = subprocess.run(
            [
                *pdp_command(),
                "entities",
                "import",
                str(tmp_path / "doc3.json"),
                "--tenant",
                TENANT,
                "--bundle",
                str(DOCS_BUNDLE),
                "--data-dir",
                str(data),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        after = engine.check(TENANT, read)
        assert (after.decision, after.data_version) == (Decision.ALLOW, 1)
        assert list(after.determining_policies) == ["owner-all"]
    finally:
        store.close()
