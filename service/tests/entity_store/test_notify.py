"""PostgreSQL replicas learn of each other's writes (`SupportsNotify.subscribe`)."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import psycopg

from pdp.entity_store import open_store
from pdp.entity_store.api import SupportsNotify

from .test_cli import pdp


def test_a_write_by_another_process_is_announced_within_a_second(
    postgres_url: str, tmp_path: Path, tenant: str
) -> None:
    store = open_store(postgres_url, tmp_path)
    heard: queue.Queue[tuple[str, int]] = queue.Queue()
    try:
        assert isinstance(store, SupportsNotify)
        unsubscribe = store.subscribe(lambda t, v: heard.put((t, v)))
        time.sleep(0.5)  # the listener connects
        # Another process writes (through NOTIFY).
        path = tmp_path / "one.json"
        path.write_text(json.dumps([{"uid": {"type": "U", "id": "a"}, "attrs": {}, "parents": []}]))
        assert pdp("import", str(path), "--tenant", tenant, "--store", postgres_url).returncode == 0
        assert _next_for(heard, tenant) == 1
        # A change without a notification (a lost one) is found by polling the versions.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE versions SET version = version + 1 WHERE tenant = %s", [tenant])
        assert _next_for(heard, tenant) == 2
        unsubscribe()
        assert (
            store.write(tenant, [{"uid": {"type": "U", "id": "b"}, "attrs": {}, "parents": []}], [])
            == 3
        )
        time.sleep(1.5)
        assert all(t != tenant for t, _ in _drain(heard))
    finally:
        store.close()


def _next_for(heard: queue.Queue[tuple[str, int]], tenant: str) -> int:
    """The next version announced for `tenant`, within 5 s: five times the 1 s promised
    (a loaded machine), far below what a listener that never polls or listens would take."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        t, v = heard.get(timeout=max(0.01, deadline - time.monotonic()))
        if t == tenant:
            return v
    raise AssertionError("no notification")


def _drain(heard: queue.Queue[tuple[str, int]]) -> list[tuple[str, int]]:
    out = []
    while not heard.empty():
        out.append(heard.get_nowait())
    return out
