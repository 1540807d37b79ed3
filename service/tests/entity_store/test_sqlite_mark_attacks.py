"""Attacks on the GIL-kept data-version marker (`sqlite_mark`) and on
`SqliteEntityStore.data_version`, from the review of the change that added it: real SQLite
files, real threads and processes. Each asserts the behaviour the marker promises, or the
behaviour of `gil_kept_marks=False` (`sqlite3` alone) where the two must agree."""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pdp.entity_store import sqlite_mark
from pdp.entity_store.sqlite import SqliteEntityStore
from pdp.entity_store.sqlite_mark import open_marker
from pdp.errors import StoreUnavailable

SERVICE = str(Path(__file__).resolve().parents[2])
TENANT = "docs"


def user(i: int | str) -> dict[str, Any]:
    return {"uid": {"type": "User", "id": f"u{i}"}, "attrs": {}, "parents": []}


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def python(
    code: str, *args: str, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SERVICE, **kw.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=timeout, env=env, **kw,
    )  # fmt: skip


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
for _ in range(100000):  # readers hold a read mark for microseconds at a time
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 123)
        break
    except OSError:
        time.sleep(0.0001)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@contextmanager
def read_marks_locked(path: Path, seconds: float) -> Iterator[None]:
    """Another process holds every WAL read mark (bytes 123-127 of -shm) for `seconds`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"{path}-shm", str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.wait(60)
        holder.stdout.close()


# --- 1. SQLite semantics the marker relies on -------------------------------------------


def test_a_marker_sees_commits_of_this_threads_own_sqlite3_connection(tmp_path: Path) -> None:
    """The marker is another connection: a commit by this thread's sqlite3 connection moves
    it (while that connection's own PRAGMA data_version stays), and so do checkpoints that
    restart or truncate the WAL followed by a commit."""
    path = tmp_path / "e.sqlite3"
    SqliteEntityStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    marker = open_marker(path)
    assert marker is not None
    try:
        own = conn.execute("PRAGMA data_version").fetchone()[0]
        mark = marker.mark()
        assert mark is not None and marker.mark() == mark
        for i in range(30):
            conn.execute("INSERT OR REPLACE INTO versions VALUES ('t', ?)", (i,))
            assert conn.execute("PRAGMA data_version").fetchone()[0] == own
            new = marker.mark()
            assert new is not None and new != mark, i
            mark = new
            if i % 3 == 0:
                mode = ("PASSIVE", "RESTART", "TRUNCATE")[i // 3 % 3]
                conn.execute(f"PRAGMA wal_checkpoint({mode})")
                mark = marker.mark()  # may move (a restart rewrites the WAL header): fine
    finally:
        marker.close()
        conn.close()


# --- 2. staleness under concurrent writers ----------------------------------------------

REMOTE_WRITER = """
import sqlite3, sys
from pathlib import Path
from pdp.entity_store.sqlite import SqliteEntityStore
store = SqliteEntityStore(Path(sys.argv[1]))
ck = sqlite3.connect(sys.argv[1], isolation_level=None)
for i in range(int(sys.argv[2])):
    tenant = ("a", "b")[i % 2]
    v = store.write(tenant, [{"uid": {"type": "User", "id": f"p{i}"}, "attrs": {}, "parents": []}], [])
    print(tenant, v, flush=True)   # acknowledged
    if i % 5 == 0:
        ck.execute("PRAGMA wal_checkpoint(%s)" % ("PASSIVE", "RESTART", "TRUNCATE")[i % 3])
store.close()
"""


@pytest.mark.parametrize("transition", [False, True], ids=["markers", "markers-then-fallback"])
def test_no_read_is_older_than_an_acknowledged_write(
    tmp_path: Path, transition: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers: this store on its own thread, another store object, another process (with
    checkpoints of every kind), and a reader writing itself. Readers: threads of the store.
    Every read must be >= every write acknowledged before the read started. With
    `transition`, markers stall mid-run (read marks locked) and the store falls back;
    without, the stall bound is raised so that the marker path really runs throughout
    (with 10 ms it switches itself off within a second here: see the defect below)."""
    if not transition:
        monkeypatch.setattr(sqlite_mark, "STALL_SECONDS", 60.0)
    path = tmp_path / "e.sqlite3"
    store = SqliteEntityStore(path)
    other = SqliteEntityStore(path)
    acked = {"a": 0, "b": 0}
    lock = threading.Lock()
    violations: list[str] = []
    done = threading.Event()

    def ack(tenant: str, version: int) -> None:
        with lock:
            acked[tenant] = max(acked[tenant], version)

    def writer(s: SqliteEntityStore, name: str) -> None:
        i = 0
        while not done.is_set():
            tenant = ("a", "b")[i % 2]
            ack(tenant, s.write(tenant, [user(f"{name}{i}")], []))
            i += 1

    def reader(k: int) -> None:
        i = 0
        while not done.is_set():
            tenant = ("a", "b")[i % 2]
            if k == 0 and i % 25 == 0:  # this thread writes, then must read its own write
                mine = store.write(tenant, [user(f"r{i}")], [])
                ack(tenant, mine)
                got = store.data_version(tenant)
                if got < mine:
                    violations.append(f"own write {mine}, read {got}")
            with lock:
                floor = acked[tenant]
            got = store.data_version(tenant)
            if got < floor:
                violations.append(f"{tenant}: acknowledged {floor}, read {got}")
            i += 1

    remote = subprocess.Popen(
        [sys.executable, "-c", REMOTE_WRITER, str(path), "120"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SERVICE},
    )  # fmt: skip
    assert remote.stdout is not None

    def relay() -> None:
        assert remote.stdout is not None
        for line in remote.stdout:
            tenant, version = line.split()
            ack(tenant, int(version))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    threads += [
        threading.Thread(target=writer, args=(store, "w")),
        threading.Thread(target=writer, args=(other, "o")),
    ]
    relayer = threading.Thread(target=relay)
    try:
        for t in [*threads, relayer]:
            t.start()
        if transition:
            time.sleep(0.5)
            with read_marks_locked(path, 1.5):  # over STALL_SECONDS: a stall
                pass
        assert remote.wait(120) == 0
        relayer.join(10)
        done.set()
        for t in threads:
            t.join(30)
        assert violations == []
        assert store._gil_kept_marks is not transition
        for tenant in ("a", "b"):  # a final read, after everyone stopped
            assert store.data_version(tenant) == acked[tenant]
    finally:
        done.set()
        remote.kill()
        for t in threads:
            t.join(30)
        remote.wait(30)
        relayer.join(10)
        remote.stdout.close()
        store.close()
        other.close()


# --- 3. close from another thread while threads read and write --------------------------

WARM_CLOSE_RACE = """
import sys, threading, time
from pathlib import Path
from pdp.entity_store.sqlite import SqliteEntityStore
from pdp.errors import StoreUnavailable
from pdp.entity_store import sqlite_mark
sqlite_mark.STALL_SECONDS = 60.0   # the markers kept on whatever the machine's load
bad = []
for r in range(60):
    s = SqliteEntityStore(Path(sys.argv[1]) / f"e{r}.sqlite3")
    s.write("t", [{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}], [])
    warm = threading.Barrier(6)
    def loop():
        for i in range(20): s.data_version(f"x{i}")   # every later read is a marker hit
        warm.wait()
        while True:
            try:
                s.data_version(f"x{r % 20}")
            except StoreUnavailable:
                return
            except BaseException as e:
                bad.append(repr(e)); return
    ts = [threading.Thread(target=loop) for _ in range(5)]
    for t in ts: t.start()
    warm.wait()
    time.sleep(0.001 * (r % 7))
    s.close()   # the sqlite3 connections are idle: only the markers are in use
    for t in ts: t.join(20)
    assert not any(t.is_alive() for t in ts)
# markers alone: 8 threads marking, the main thread closing them
for r in range(200):
    m = sqlite_mark.open_marker(Path(sys.argv[1]) / "e0.sqlite3")
    stop = False
    def spin():
        while not stop:
            if m.mark() is None:
                return
    ts = [threading.Thread(target=spin) for _ in range(8)]
    for t in ts: t.start()
    m.close()
    stop = True
    for t in ts: t.join(20)
    assert m.mark() is None
print("bad", bad)
"""


def test_closing_a_store_whose_threads_only_hit_markers_is_safe(tmp_path: Path) -> None:
    """The marker's own part of the close race: its lock keeps close() from finalizing the
    statement under a running mark; every read after close raises StoreUnavailable."""
    done = python(WARM_CLOSE_RACE, str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "bad []"


def test_waiting_for_the_gil_is_not_taken_for_a_stall(tmp_path: Path) -> None:
    """The stall bound is measured in Python around the call, so it includes waits for the
    GIL. One reader beside one pure-Python CPU-bound thread (no SQLite, no lock): marks
    "took" 10-35 ms that way, and a 10 ms bound turned the markers off within ~0.3 s. The
    bound (STALL_SECONDS) is far above such waits: the markers stay on."""
    store = SqliteEntityStore(tmp_path / "e.sqlite3")
    stop = threading.Event()

    def spinner() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    def reader() -> None:
        while not stop.is_set():
            store.data_version(TENANT)

    threads = [threading.Thread(target=reader), threading.Thread(target=spinner)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and store._gil_kept_marks:
            time.sleep(0.01)
        assert store._gil_kept_marks, "markers switched off by a GIL wait, not a stall"
    finally:
        stop.set()
        for t in threads:
            t.join()
        store.close()


# --- 4. file descriptors: stores opened and closed, thread exit, no close ---------------


def test_many_stores_opened_and_closed_leak_no_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    SqliteEntityStore(path).close()
    before = fds()
    for i in range(40):
        store = SqliteEntityStore(path)
        readers = [threading.Thread(target=store.data_version, args=(TENANT,)) for _ in range(3)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        store.write(TENANT, [user(i)], [])
        store.close()
    assert fds() == before


def test_a_store_dropped_without_close_leaves_no_marker_open(tmp_path: Path) -> None:
    """A store garbage collected without close() releases its connections (a
    sqlite3.Connection closes itself), and its markers too (`Marker.__del__`): no
    descriptor or lock on the file stays for the life of the process."""
    path = tmp_path / "e.sqlite3"
    SqliteEntityStore(path).close()
    grown = {}
    for kept in (False, True):
        gc.collect()
        before = fds()
        for _ in range(20):
            store = SqliteEntityStore(path, gil_kept_marks=kept)
            store.data_version(TENANT)
            del store
        gc.collect()
        grown[kept] = fds() - before
    assert grown == {False: 0, True: 0}


# --- 5. the SQLite copy ------------------------------------------------------------------

COPY_CHECK = """
import ctypes, sqlite3
from pdp.entity_store import sqlite_mark
if not sqlite_mark.available():
    print("declined")
else:
    addr = lambda f: ctypes.cast(f, ctypes.c_void_p).value
    glob = ctypes.CDLL(None)   # the global scope, searched first when _sqlite3 was bound
    lib = sqlite_mark._LIB
    for name, f in [("sqlite3_step", lib.step), ("sqlite3_open_v2", lib.open_v2)]:
        g = getattr(glob, name, None)
        print(name, "same" if g is None or addr(g) == addr(f) else "DIFFERENT")
"""


def test_the_marker_declines_when_another_sqlite_copy_is_global(
    tmp_path: Path,
) -> None:
    """A second copy of SQLite 3.40.1 in the global scope (here LD_PRELOAD of Debian's
    library under another soname; in life an extension loaded RTLD_GLOBAL): `_sqlite3`'s
    calls bind to it, `dlsym(_sqlite3 handle)` finds the other one. The version check passes
    and the marker runs a different copy than the sqlite3 module (sqlite.org/howtocorrupt
    2.2.1). The marker declines then (`_load` compares the global scope's addresses)."""
    # The libsqlite3 this process runs (test_sqlite_mark asserts it links one).
    with open("/proc/self/maps") as maps:
        mapped = {line.split()[-1] for line in maps if "/libsqlite3" in line}
    assert len(mapped) == 1, mapped
    data = Path(mapped.pop()).read_bytes()
    assert data.count(b"libsqlite3.so.0\0") == 1
    copy = tmp_path / "libsqlitX.so.0"
    copy.write_bytes(data.replace(b"libsqlite3.so.0\0", b"libsqlitX.so.0\0\0"))  # its soname
    plain = python(COPY_CHECK)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["sqlite3_step", "same", "sqlite3_open_v2", "same"]
    preloaded = python(COPY_CHECK, env={"LD_PRELOAD": str(copy)})
    assert preloaded.returncode == 0, preloaded.stderr
    assert preloaded.stdout.strip() == "declined", preloaded.stdout


# --- 6. the file deleted, replaced; read-only ---------------------------------------------


def _replace_with_a_copy(path: Path, drop_wal: bool) -> None:
    backup = path.with_name("backup.sqlite3")
    src, dst = sqlite3.connect(path), sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    if drop_wal:  # a restore that also removes the old -wal/-shm
        for suffix in ("-wal", "-shm"):
            os.remove(f"{path}{suffix}")
    os.replace(backup, path)


@pytest.mark.parametrize("drop_wal", [False, True], ids=["replaced", "replaced-wal-removed"])
@pytest.mark.parametrize("kept", [False, True], ids=["sqlite3", "marker"])
def test_a_replaced_file_never_makes_a_thread_stale(
    tmp_path: Path, kept: bool, drop_wal: bool
) -> None:
    """The file is replaced under a running store (which SQLite does not support). Had the
    marker opened at the first read, after the replacement, while the thread's connection
    opened in __init__ before it, the SELECT would read the old file and the marker watch
    the new one: another store's acknowledged write was never seen. Both open together."""
    path = tmp_path / "e.sqlite3"
    _each_write_seen_across(path, kept, lambda: _replace_with_a_copy(path, drop_wal))


@pytest.mark.parametrize("kept", [False, True], ids=["sqlite3", "marker"])
def test_a_deleted_file_leaves_an_open_thread_reading_it(tmp_path: Path, kept: bool) -> None:
    """The file (and -wal, -shm) is deleted while the store runs. A thread's connection still
    reads the open file, as with sqlite3 alone; a marker that cannot be opened is declined
    (a warning), never an error on every call."""
    path = tmp_path / "e.sqlite3"

    def delete() -> None:
        for suffix in ("", "-wal", "-shm"):
            os.remove(f"{path}{suffix}")

    _each_write_seen_across(path, kept, delete)


def _each_write_seen_across(path: Path, kept: bool, event: Callable[[], None]) -> None:
    """A store built before `event()` sees another store's writes from before and after it."""
    store = SqliteEntityStore(path, gil_kept_marks=kept)
    other = SqliteEntityStore(path)
    try:
        version = other.write(TENANT, [user(0)], [])
        event()
        assert store.data_version(TENANT) == version
        version = other.write(TENANT, [user(1)], [])
        assert store.data_version(TENANT) == version
    finally:
        store.close()
        other.close()


READ_ONLY_CHILD = """
import os, sys, threading
from pathlib import Path
from pdp.entity_store.sqlite import SqliteEntityStore
import pdp.errors
if os.geteuid() == 0:  # root may write anything: nobody, on root's file and directory
    os.setgid(65534); os.setuid(65534)
out = {}
for kept in (False, True):
    try:
        s = SqliteEntityStore(Path(sys.argv[1]), gil_kept_marks=kept)
        r = []
        t = threading.Thread(target=lambda: r.append(s.data_version("t"))); t.start(); t.join()
        out[kept] = (s.data_version("t"), r[0], s._gil_kept_marks)
        print("read", flush=True)
        sys.stdin.readline()          # the parent writes meanwhile
        out[kept] += (s.data_version("t"),)
        s.close()
    except Exception as e:
        out[kept] = type(e).__name__ + ": " + str(e)
        print("read", flush=True); sys.stdin.readline()
print(repr(out), flush=True)
"""


@pytest.mark.parametrize("held", [False, True], ids=["not-open-elsewhere", "open-elsewhere"])
def test_a_read_only_database_answers_as_with_sqlite3(held: bool) -> None:
    import tempfile

    directory = Path(tempfile.mkdtemp(dir="/tmp"))
    # As root the child runs as nobody: root's 0755 directory and 0644 file are read-only to
    # it. As anyone else the child is the same user, so both are made read-only instead,
    # after the owner opened the file (its open descriptors keep writing).
    root = os.geteuid() == 0
    os.chmod(directory, 0o755)
    path = directory / "e.sqlite3"
    owner = SqliteEntityStore(path)
    try:
        owner.write("t", [user(0)], [])
        if not held:
            owner.close()
        if not root:
            os.chmod(path, 0o444)
            os.chmod(directory, 0o555)
        child = subprocess.Popen(
            [sys.executable, "-c", READ_ONLY_CHILD, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": SERVICE},
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        for i in range(2):
            assert child.stdout.readline() == "read\n"
            if held:
                owner.write("t", [user(f"x{i}")], [])
            child.stdin.write("\n")
            child.stdin.flush()
        result = child.stdout.readline()
        child.stdin.close()
        errors = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
        assert child.wait(60) == 0, errors
        out = eval(result)  # noqa: S307 (our child's repr)
        if held:  # it reads, and sees the writes made meanwhile, both ways
            assert out == {False: (1, 1, False, 2), True: (2, 2, True, 3)}, out
        else:  # neither way can open it (no -wal/-shm can be made): the same error
            assert out[False] == out[True], out
            assert isinstance(out[False], str) and "StoreUnavailable" in out[False], out
    finally:
        owner.close()
        os.chmod(directory, 0o755)
        shutil.rmtree(directory)


# --- 7. the stall bound -------------------------------------------------------------------


def _longest_freeze(store: SqliteEntityStore, path: Path, threads: int, hold: float) -> float:
    """`threads` threads call data_version in a loop while another process holds every read
    mark for `hold` seconds; the longest time a ticker thread could not run."""
    stop = threading.Event()
    go = threading.Event()
    ticks: list[float] = []

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    def reader() -> None:
        store.data_version(TENANT)  # its marker opens
        go.wait()
        while not stop.is_set():
            try:
                store.data_version(TENANT)
            except StoreUnavailable:
                pass

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    workers.append(threading.Thread(target=ticker))
    for t in workers:
        t.start()
    time.sleep(0.2)
    with read_marks_locked(path, hold):
        go.set()
    time.sleep(0.3)
    stop.set()
    for t in workers:
        t.join(60)
    return max(b - a for a, b in zip(ticks, ticks[1:], strict=False))


def test_a_short_lock_freezes_the_whole_process_for_its_length(tmp_path: Path) -> None:
    """As documented: the stall bound only decides whether the answer is used and whether
    the markers stay on; the process is frozen for as long as SQLite retries under the GIL
    (up to ~10 s), here for the 0.5 s the lock is held, and a lock that short is not taken
    for a stall."""
    path = tmp_path / "e.sqlite3"
    store, other = SqliteEntityStore(path), SqliteEntityStore(path)
    try:
        other.write(TENANT, [user(0)], [])
        assert _longest_freeze(store, path, threads=4, hold=0.5) >= 0.4
        assert store._gil_kept_marks is True  # under STALL_SECONDS: not taken for a stall
    finally:
        store.close()
        other.close()


def test_a_long_lock_stalls_once_per_store_not_once_per_thread(tmp_path: Path) -> None:
    """Another process holds the read marks 12 s. The first mark gives up after SQLite's
    ~10 s of retries. Without the store's mark lock, that thread could give the GIL away
    before recording the stall, and the next thread's marker would stall again (seen: the
    whole 22 s of a 22 s hold, in 5 runs of 6): a hostile holder froze the process up to
    threads x 10 s. With it, the process is frozen once, for under ~10.5 s."""
    path = tmp_path / "e.sqlite3"
    store, other = SqliteEntityStore(path), SqliteEntityStore(path)
    try:
        other.write(TENANT, [user(0)], [])
        frozen = _longest_freeze(store, path, threads=16, hold=12.0)
        assert frozen < 10.5, f"frozen {frozen:.1f} s in one piece"
    finally:
        store.close()
        other.close()


# --- 8. close(): the final checkpoint -----------------------------------------------------

CLOSE_CHECKPOINT = """
import os, sqlite3, sys, threading, time
from pathlib import Path
from pdp.entity_store.sqlite import SqliteEntityStore
p = Path(sys.argv[1]); kept = sys.argv[2] == "1"
store = SqliteEntityStore(p, gil_kept_marks=kept)
store.data_version("t")
bulk = sqlite3.connect(p, isolation_level=None)
pin = sqlite3.connect(p, isolation_level=None)
pin.execute("BEGIN"); pin.execute("SELECT * FROM versions").fetchall()  # no checkpoint meanwhile
bulk.execute("CREATE TABLE junk(x)")
bulk.execute("BEGIN")
bulk.executemany("INSERT INTO junk VALUES (?)", ((os.urandom(4000),) for _ in range(8000)))
bulk.execute("COMMIT"); pin.execute("COMMIT"); pin.close(); bulk.close()  # a 33 MB WAL
stop = threading.Event(); ticks = []
def ticker():
    while not stop.is_set():
        ticks.append(time.perf_counter()); time.sleep(0.001)
t = threading.Thread(target=ticker); t.start(); time.sleep(0.05)
store.close()          # the last connection to close checkpoints the WAL into the file
time.sleep(0.05); stop.set(); t.join()
print(max(b - a for a, b in zip(ticks, ticks[1:])))
"""


def test_the_final_checkpoint_runs_with_the_gil_released(tmp_path: Path) -> None:
    """The last connection to close checkpoints the whole WAL (and syncs). Were that a
    marker, it would run under the GIL (seen: 72-136 ms frozen for a 33 MB WAL); close()
    closes the markers first, so a sqlite3 connection does it, as with markers off."""
    frozen = {}
    for kept in ("0", "1"):
        done = python(CLOSE_CHECKPOINT, str(tmp_path / f"e{kept}.sqlite3"), kept)
        assert done.returncode == 0, done.stderr
        frozen[kept] = float(done.stdout)
    assert frozen["1"] < max(0.02, 5 * frozen["0"]), frozen
