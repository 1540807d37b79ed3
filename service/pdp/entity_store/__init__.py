"""The entity store: roles, memberships and attributes held by the PDP (issue 9).

`api` is the interface; `sqlite` (the embedded default) and `postgres` (a store shared by
replicas) implement it; `validate` checks writes against a tenant's schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pdp.entity_store.api import EntityStore, StoreLimits

if TYPE_CHECKING:
    from pdp.config import Settings

SQLITE_FILE = "entities.sqlite3"


def open_store(url: str | None, data_dir: Path, limits: StoreLimits | None = None) -> EntityStore:
    """The store `url` names: None -> SQLite at `data_dir`/entities.sqlite3;
    `sqlite:///path` -> SQLite at that path (`sqlite:////abs/path` for an absolute one);
    `postgresql://...` -> PostgreSQL (psycopg's connection URL)."""
    if url is None or url == "":
        from pdp.entity_store.sqlite import SqliteEntityStore

        return SqliteEntityStore(data_dir / SQLITE_FILE, limits)
    if url.startswith("sqlite:///"):
        from pdp.entity_store.sqlite import SqliteEntityStore

        return SqliteEntityStore(Path(url.removeprefix("sqlite:///")), limits)
    if url.startswith(("postgresql://", "postgres://")):
        from pdp.entity_store.postgres import PostgresEntityStore

        return PostgresEntityStore(url, limits)
    raise ValueError("entity_store_url must be sqlite:///PATH or postgresql://...")


def store_from_settings(settings: Settings) -> EntityStore:
    """The store `entity_store_url` / `data_dir` name, with the write caps of `settings`."""
    limits = StoreLimits(
        max_entities_per_write=settings.entity_write_max_entities,
        max_entity_bytes=settings.entity_max_bytes,
        max_ancestors=settings.entity_max_ancestors,
        max_closure_rows=settings.entity_write_max_closure_rows,
    )
    return open_store(settings.entity_store_url, settings.data_dir, limits)
