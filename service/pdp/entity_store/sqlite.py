"""The embedded entity store: one SQLite file in WAL mode, created on first use.

Durability: `synchronous=FULL`. In WAL mode NORMAL syncs the log only at checkpoints, so a
commit survives a crash of the process but not of the machine (power loss, kernel panic):
an acknowledged write could vanish. FULL syncs the log at every commit, so a write is on
disk before `write` returns; it costs one fsync per write (batch writes to amortise it).

Threads: a connection per thread (sqlite3 connections must not be shared); WAL lets
readers read their snapshot while one writer writes, so a slice never waits for a write.
Writers take the lock up front (`BEGIN IMMEDIATE`), so two writers never deadlock
upgrading from a read.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pdp.entity_store.api import StoredEntity, StoreLimits
from pdp.entity_store.sql import Backend, Tx, read_export, transaction
from pdp.entity_store.sqlite_mark import Marker, MarkError, open_marker
from pdp.errors import StoreUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    tenant TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    tenant TEXT NOT NULL, uid TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
    attrs TEXT NOT NULL, parents TEXT NOT NULL,
    PRIMARY KEY (tenant, uid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entities_by_type ON entities (tenant, type, id);
CREATE TABLE IF NOT EXISTS edges (
    tenant TEXT NOT NULL, child TEXT NOT NULL, parent TEXT NOT NULL,
    PRIMARY KEY (tenant, child, parent)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS closure (
    tenant TEXT NOT NULL, descendant TEXT NOT NULL, ancestor TEXT NOT NULL,
    PRIMARY KEY (tenant, descendant, ancestor)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS closure_by_ancestor ON closure (tenant, ancestor, descendant);
CREATE TABLE IF NOT EXISTS refs (
    tenant TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
    PRIMARY KEY (tenant, source, target)) WITHOUT ROWID;
"""

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
MMAP_BYTES = 4 * 1024**3  # up to 4 GiB of the file mapped for reads
CACHE_KIB = 16 * 1024  # per connection (one per thread)
MAX_CACHED_TENANTS = 1024  # data versions each connection keeps (`data_version`)


class SqliteEntityStore(Backend):
    def __init__(
        self, path: Path, limits: StoreLimits | None = None, *, gil_kept_marks: bool = True
    ) -> None:
        self.path = path
        # False: `PRAGMA data_version` always through `sqlite3`, as where no marker can be
        # opened (tests compare the two ways).
        self._gil_kept_marks = gil_kept_marks
        self.limits = limits or StoreLimits()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._markers: list[Marker] = []
        # Held across a mark and the switch-off it may cause: a thread that gave the GIL
        # away between the two must not let another start a second stall meanwhile.
        self._mark_lock = threading.Lock()
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connection()
        with self._errors():
            conn.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise StoreUnavailable("entity store: closed")
            with self._errors():
                conn = self._connect()
            self._connections.append(conn)
            # Opened with the connection, under the lock: both then read the same file,
            # even if it is replaced later (which SQLite itself does not support).
            self._local.marker = self._open_marker()
        self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; each method opens its own.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # Reads map the file instead of copying pages through SQLite's own 2 MB cache: at a
        # million entities a slice's few indexed lookups otherwise miss that cache on most
        # B-tree pages (measured: bench/entity_scale.py). The mapping is address space, not
        # memory: the OS page cache backs it, shared by every connection.
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"entity store {self.path}: {exc}")

    @contextmanager
    def _tx(self, begin: str, conn: sqlite3.Connection | None = None) -> Iterator[Tx]:
        conn = conn or self._connection()
        with self._errors(), transaction(conn.cursor(), begin, percent=False) as tx:
            yield tx

    def data_version(self, tenant: str) -> int:
        # Read on every check (read-your-writes), so cached per connection and re-read only
        # once another connection (thread, worker, `pdp entities import`) committed:
        # `PRAGMA data_version` changes exactly then, and reads no table. It is asked
        # before the SELECT, so a commit landing between the two makes the next call read
        # again rather than keep a stale version. A connection's own commits leave it
        # unchanged: `_write` forgets the cache of the connection that wrote.
        # The pragma is asked through the thread's `Marker` (its own connection, the GIL
        # kept: see sqlite_mark) while markers work; through `sqlite3` when there is none,
        # or once one failed or stalled. The two connections count apart, so a mark read
        # through `sqlite3` beside a marker is stored negated: never equal to a marker's.
        seen: _Seen | None = getattr(self._local, "seen", None)
        try:  # not `_errors()`: a context manager is a fifth of this call's cost
            if seen is None:
                seen = self._local.seen = self._seen()
            cursor, marker = seen.cursor, seen.marker
            mark = None
            if marker is not None and self._gil_kept_marks:
                with self._mark_lock:
                    if self._gil_kept_marks:
                        mark = marker.mark()
                        if mark is None:
                            self._stop_marks()
            if mark is None:
                if self._closed:
                    raise StoreUnavailable(f"entity store {self.path}: closed")
                (mark,) = cursor.execute("PRAGMA data_version").fetchone()
                if marker is not None:
                    mark = -1 - mark
            if mark != seen.mark:
                seen.mark, seen.versions = mark, {}
            found = seen.versions.get(tenant)
            if found is not None:
                return found
            row = cursor.execute("SELECT version FROM versions WHERE tenant = ?", (tenant,))
            version = row.fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        found = 0 if version is None else int(version[0])
        if len(seen.versions) < MAX_CACHED_TENANTS:  # tenant names are caller input: bounded
            seen.versions[tenant] = found
        return found

    def _seen(self) -> _Seen:
        cursor = self._connection().cursor()
        return _Seen(cursor, getattr(self._local, "marker", None))

    def _open_marker(self) -> Marker | None:
        if not self._gil_kept_marks:
            return None
        try:
            marker = open_marker(self.path)
        except MarkError as exc:  # declined, not fatal: sqlite3 still reads its open file
            log.warning("entity store %s: no GIL-kept marker (%s)", self.path, exc)
            return None
        if marker is not None:
            self._markers.append(marker)
        return marker

    def _stop_marks(self) -> None:
        # Store-wide and for good: a stall under the GIL stops every thread, so it is
        # paid once, not once per thread or per check (sqlite_mark's docstring).
        self._gil_kept_marks = False
        if self._closed:  # its markers were closed with it: nothing stalled
            return
        log.warning(
            "entity store %s: a data-version read through the GIL-kept marker failed or "
            "stalled; reading through sqlite3 from now on",
            self.path,
        )

    def _read(self) -> AbstractContextManager[Tx]:
        # A deferred transaction reads one snapshot from its first SELECT to its end.
        return self._tx("BEGIN")

    @contextmanager
    def _write(self, tenant: str) -> Iterator[Tx]:
        try:
            with self._tx("BEGIN IMMEDIATE") as tx:
                yield tx
        finally:
            # Before the write is acknowledged: this connection's next `data_version` reads
            # the table again (its own commit does not move its PRAGMA data_version).
            seen: _Seen | None = getattr(self._local, "seen", None)
            if seen is not None:
                seen.versions = {}

    def export(self, tenant: str) -> Iterator[StoredEntity]:
        # Its own connection: the generator holds its snapshot while the caller consumes
        # it, and must not leave this thread's connection inside a transaction.
        with self._errors():
            conn = self._connect()
        try:
            with self._tx("BEGIN", conn) as tx:
                yield from read_export(tx, tenant)
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            # Markers first: the last connection to close checkpoints the log, and a
            # sqlite3 one does that with the GIL released.
            for marker in self._markers:
                marker.close()
            self._markers.clear()
            for conn in self._connections:
                conn.close()
            self._connections.clear()


class _Seen:
    """The data versions one thread read, as of its `PRAGMA data_version` `mark`, the
    cursor it reads them with and the marker it asks the pragma through (one per thread,
    like the connection: no cursor per call)."""

    __slots__ = ("cursor", "marker", "mark", "versions")

    def __init__(self, cursor: sqlite3.Cursor, marker: Marker | None) -> None:
        self.cursor = cursor
        self.marker = marker
        self.mark: int | None = None
        self.versions: dict[str, int] = {}
