"""Fixtures that run each test of this package against every entity store backend, each for real: SQLite in
a temp dir, PostgreSQL on the session's throwaway server (`postgres_support`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.entity_store import open_store
from pdp.entity_store.api import EntityStore, StoreLimits

from .postgres_support import throwaway_postgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres() as url:
        yield url


def open_backend(
    request: pytest.FixtureRequest, backend: str, path: Path, **limits: Any
) -> EntityStore:
    url = None if backend == "sqlite" else request.getfixturevalue("postgres_url")
    return open_store(url, path, StoreLimits(**limits) if limits else None)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[EntityStore]:
    s = open_backend(request, backend, tmp_path)
    yield s
    s.close()


@pytest.fixture
def tenant() -> str:
    """A tenant of this test alone: PostgreSQL's database is shared by the session."""
    return f"t-{uuid.uuid4().hex[:12]}"


def entity(
    kind: str, eid: str, parents: tuple[tuple[str, str], ...] = (), **attrs: Any
) -> dict[str, Any]:
    return {
        "uid": {"type": kind, "id": eid},
        "attrs": attrs,
        "parents": [{"type": t, "id": i} for t, i in parents],
    }


def ref(kind: str, eid: str) -> dict[str, Any]:
    return {"__entity": {"type": kind, "id": eid}}
