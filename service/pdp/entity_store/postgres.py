"""The shared entity store: PostgreSQL through psycopg 3 and a psycopg_pool pool.

Every replica of a fleet opens the same database. Writes to one tenant are serialised by
a transaction-scoped advisory lock (the closure of a tenant must be recomputed from one
state); they commit with PostgreSQL's default `synchronous_commit = on`, so a write is on
disk (WAL flushed) before `write` returns. Reads run in a REPEATABLE READ READ ONLY
transaction: a slice's queries see one snapshot, and never wait for a writer.

Other replicas learn of writes by `subscribe`: each write NOTIFYs `pdp_entities` with
`tenant:version` in its transaction (delivered at commit), and the listener also polls
the versions every second, in case a notification was lost with its connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import psycopg_pool

from pdp.entity_store.api import StoredEntity, StoreLimits
from pdp.entity_store.sql import Backend, Tx, read_export, transaction
from pdp.errors import StoreUnavailable

log = logging.getLogger(__name__)

CHANNEL = "pdp_entities"
POLL_SECONDS = 1.0
LOCK_CLASS = 0x7064  # advisory lock namespace of tenant write locks ("pd")

# COLLATE "C": rows order by bytes, as in SQLite, so `list` pages the same on both.
SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    tenant TEXT COLLATE "C" PRIMARY KEY, version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    tenant TEXT COLLATE "C" NOT NULL, uid TEXT COLLATE "C" NOT NULL,
    type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL,
    attrs TEXT NOT NULL, parents TEXT NOT NULL,
    PRIMARY KEY (tenant, uid));
CREATE INDEX IF NOT EXISTS entities_by_type ON entities (tenant, type, id);
CREATE TABLE IF NOT EXISTS edges (
    tenant TEXT COLLATE "C" NOT NULL, child TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C" NOT NULL, PRIMARY KEY (tenant, child, parent));
CREATE TABLE IF NOT EXISTS closure (
    tenant TEXT COLLATE "C" NOT NULL, descendant TEXT COLLATE "C" NOT NULL,
    ancestor TEXT COLLATE "C" NOT NULL, PRIMARY KEY (tenant, descendant, ancestor));
CREATE INDEX IF NOT EXISTS closure_by_ancestor ON closure (tenant, ancestor, descendant);
CREATE TABLE IF NOT EXISTS refs (
    tenant TEXT COLLATE "C" NOT NULL, source TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL, PRIMARY KEY (tenant, source, target));
"""


class PostgresEntityStore(Backend):
    percent = True

    def __init__(self, url: str, limits: StoreLimits | None = None, *, pool_size: int = 8) -> None:
        self.url = url
        self.limits = limits or StoreLimits()
        with self._errors():
            self._pool = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True},
                open=True,
                timeout=10.0,
            )
        self._callbacks: list[Callable[[str, int], None]] = []
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()
        with self._tx("BEGIN") as tx:
            # Two replicas starting at once must not race creating the same tables.
            tx.run("SELECT pg_advisory_xact_lock(?, 0)", [LOCK_CLASS + 1])
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    tx.run(statement)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"entity store (PostgreSQL): {exc}") from exc

    @contextmanager
    def _tx(self, begin: str) -> Iterator[Tx]:
        with (
            self._errors(),
            self._pool.connection() as conn,
            transaction(conn.cursor(), begin, percent=True) as tx,
        ):
            yield tx

    def _read(self) -> AbstractContextManager[Tx]:
        return self._tx("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    @contextmanager
    def _write(self, tenant: str) -> Iterator[Tx]:
        with self._tx("BEGIN") as tx:
            # READ COMMITTED after the lock: each statement sees the previous writer's rows.
            tx.run("SELECT pg_advisory_xact_lock(?, hashtext(?))", [LOCK_CLASS, tenant])
            yield tx

    def _written(self, tx: Tx, tenant: str, version: int) -> None:
        tx.run("SELECT pg_notify(?, ?)", [CHANNEL, f"{tenant}:{version}"])

    def export(self, tenant: str) -> Iterator[StoredEntity]:
        with self._read() as tx:
            yield from read_export(tx, tenant)

    # -- SupportsNotify -----------------------------------------------------------------

    def subscribe(self, callback: Callable[[str, int], None]) -> Callable[[], None]:
        with self._guard:
            self._callbacks.append(callback)
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="pdp-entity-listener", daemon=True
                )
                self._listener.start()

        def unsubscribe() -> None:
            with self._guard:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def _listen(self) -> None:
        seen: dict[str, int] = {}
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    seen.update(self._poll(conn, seen, initial=not seen))
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=POLL_SECONDS, stop_after=100):
                            tenant, _, version = note.payload.rpartition(":")
                            self._tell(seen, tenant, int(version))
                        seen.update(self._poll(conn, seen))
            except psycopg.Error as exc:
                log.warning("entity store listener: %s; reconnecting", exc)
                self._stop.wait(POLL_SECONDS)

    def _poll(self, conn: Any, seen: dict[str, int], initial: bool = False) -> dict[str, int]:
        rows = conn.execute("SELECT tenant, version FROM versions").fetchall()
        for tenant, version in rows:
            if initial:
                seen[tenant] = int(version)
            else:
                self._tell(seen, tenant, int(version))
        return seen

    def _tell(self, seen: dict[str, int], tenant: str, version: int) -> None:
        if version <= seen.get(tenant, 0):
            return
        seen[tenant] = version
        with self._guard:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(tenant, version)
            except Exception:
                log.exception("entity store subscriber failed")

    def close(self) -> None:
        self._stop.set()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(timeout=2 * POLL_SECONDS + 1)
