"""The store's data version read through `sqlite_mark` (the GIL kept) answers as the one read
through `sqlite3` does: it moves on every commit by anyone, and where its lock is busy the
store falls back to `sqlite3`, which waits, without ever taking one connection's count for
the other's."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pdp.entity_store.sqlite import SqliteEntityStore
from pdp.entity_store.sqlite_mark import MarkError, _load, available, open_marker
from pdp.errors import StoreUnavailable

TENANT = "docs"


def user(i: int) -> dict[str, Any]:
    return {"uid": {"type": "User", "id": f"u{i}"}, "attrs": {}, "parents": []}


def test_the_marker_runs_the_sqlite_copy_of_the_sqlite3_module() -> None:
    # This interpreter's `_sqlite3` links libsqlite3 (Debian's, pyenv's, python.org's): the
    # marker must be on, else the store quietly runs the slow path everywhere.
    assert available()
    lib = _load()
    assert lib is not None


@pytest.mark.parametrize("kept", [True, False], ids=["marker", "sqlite3"])
def test_both_ways_see_every_commit_of_another_connection(tmp_path: Path, kept: bool) -> None:
    path = tmp_path / "e.sqlite3"
    store = SqliteEntityStore(path, gil_kept_marks=kept)
    other = SqliteEntityStore(path)
    try:
        assert store.data_version(TENANT) == 0
        assert (store._local.seen.marker is not None) is kept
        for i in range(20):
            version = other.write(TENANT, [user(i)], [])
            assert store.data_version(TENANT) == version
            assert store.data_version(TENANT) == version  # and again, from the cache
    finally:
        store.close()
        other.close()


# WAL readers share-lock one of the read marks in the -shm file (bytes 123-127); another
# process (POSIX locks are per process) holds all five exclusively, as a checkpoint does
# for an instant, here for SECONDS. SQLite's reader retries meanwhile, sleeping.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 123)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@contextmanager
def read_marks_locked(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    shm = path.with_name(path.name + "-shm")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(shm), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        assert holder.wait(30) == 0
        holder.stdout.close()


def test_a_stalled_mark_falls_back_to_sqlite3_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mark that waited on a lock (here ~1.5 s with every thread stopped) is not used: the
    store asks `sqlite3` and answers what was committed, uses `sqlite3` from then on, and
    does not take one connection's count for the other's (later commits are still seen)."""
    path = tmp_path / "e.sqlite3"
    store = SqliteEntityStore(path)
    other = SqliteEntityStore(path)
    try:
        version = store.write(TENANT, [user(0)], [])
        assert store.data_version(TENANT) == version  # this thread's marker opens
        # A write of this thread's own `sqlite3` connection moves its marker's count but
        # not that connection's: now the two counts differ by one, so after the next
        # commit `sqlite3`'s equals the marker's mark kept now, and a store that compared
        # them unmarked would keep the version it read before that commit.
        version = store.write(TENANT, [user(1)], [])
        assert store.data_version(TENANT) == version
        version = other.write(TENANT, [user(2)], [])
        with read_marks_locked(path, 1.5):
            started = time.perf_counter()
            assert store.data_version(TENANT) == version
            assert time.perf_counter() - started >= 1.0  # it did wait for the lock
        assert store._gil_kept_marks is False
        assert "stalled; reading through sqlite3" in caplog.text
        for i in range(3, 6):
            version = other.write(TENANT, [user(i)], [])
            assert store.data_version(TENANT) == version
        seen: list[int] = []  # another thread: its first mark is sqlite3's too
        reader = threading.Thread(target=lambda: seen.append(store.data_version(TENANT)))
        reader.start()
        reader.join(10)
        assert seen == [version]
        assert store._local.seen.marker.mark() is not None  # the marker itself still works
    finally:
        store.close()
        other.close()


def test_a_marker_answers_none_once_closed(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    SqliteEntityStore(path).close()
    marker = open_marker(path)
    assert marker is not None
    assert marker.mark() is not None
    marker.close()
    assert marker.mark() is None
    marker.close()  # twice: nothing freed twice


def test_a_closed_store_refuses_the_read(tmp_path: Path) -> None:
    store = SqliteEntityStore(tmp_path / "e.sqlite3")
    assert store.data_version(TENANT) == 0
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join()
    with pytest.raises(StoreUnavailable):
        store.data_version(TENANT)


def test_a_marker_on_a_missing_file_is_a_precise_error(tmp_path: Path) -> None:
    with pytest.raises(MarkError, match="unable to open"):
        open_marker(tmp_path / "absent" / "e.sqlite3")
