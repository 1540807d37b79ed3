"""`PRAGMA data_version` without giving up the GIL, through the SQLite library that Python's
own `sqlite3` module runs.

Why: the store's data version is read on every check (read-your-writes), cache hits
included. Python's `sqlite3` releases the GIL around each statement, and in a server with
16 threads the call then waits for the GIL to come back: measured, the read costs ~16 µs a
call in the server for ~1.5 µs of work, 11 % of the cache-hit throughput
(bench/RESULTS.md). The same statement called through ctypes' `PyDLL` keeps the GIL, as
any C extension does for a short call (it is a shared lock on the file and a read of the
WAL-index header, no table).

What it relies on, and where it is silent it declines (`open_marker` returns None, and the
store keeps reading through `sqlite3`):
- The functions are looked up through `_sqlite3`'s own handle, so they are the copy that
  module runs (its shared libsqlite3, or its own statically linked copy if it exports
  them). Two copies of SQLite in one process would each keep their own POSIX lock table
  and could corrupt the file (sqlite.org/howtocorrupt.html, 2.2.1); one copy cannot.
- The version strings of that copy and of `sqlite3.sqlite_version` agree, and no other
  copy of the functions is in the global symbol scope (where `_sqlite3`'s references
  would bind first).

The risk it takes, and its bound: while the call runs, no other thread of the process
runs. SQLite's own locks are held for microseconds, but another process holding a WAL
read-mark lock (stopped in a checkpoint, or hostile) makes the read retry for ~10 s before
failing (`SQLITE_PROTOCOL`; measured). So a mark that fails, or takes longer than
STALL_SECONDS, answers None: the store then asks `sqlite3` (which waits with the GIL
released, and raises its own error) and stops using markers for good, under a lock that
keeps a second thread from starting a mark meanwhile. The worst case is one such stall
per store, not one per check or per thread.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SQLITE_OK = 0
SQLITE_ROW = 100
SQLITE_OPEN_READWRITE = 0x00000002
SQLITE_OPEN_FULLMUTEX = 0x00010000
# Timed in Python, so a wait for the GIL between the clock and the call counts too (up to
# the switch interval, 5 ms, per runnable thread): far above that, far below SQLite's
# ~10 s of retries. A mark slower than this is not used, and turns the markers off.
STALL_SECONDS = 1.0

_c_void_p = ctypes.c_void_p
_INT, _TEXT = ctypes.c_int, ctypes.c_char_p

# The C functions used: name -> (return type, argument types).
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "sqlite3_libversion": (_TEXT, []),
    "sqlite3_open_v2": (_INT, [_TEXT, ctypes.POINTER(_c_void_p), _INT, _TEXT]),
    "sqlite3_prepare_v2": (
        _INT, [_c_void_p, _TEXT, _INT, ctypes.POINTER(_c_void_p), _c_void_p],
    ),
    "sqlite3_step": (_INT, [_c_void_p]),
    "sqlite3_column_int64": (ctypes.c_int64, [_c_void_p, _INT]),
    "sqlite3_reset": (_INT, [_c_void_p]),
    "sqlite3_finalize": (_INT, [_c_void_p]),
    "sqlite3_close_v2": (_INT, [_c_void_p]),
    "sqlite3_errmsg": (_TEXT, [_c_void_p]),
}  # fmt: skip


def _typed(dll: ctypes.CDLL, name: str) -> Any:
    fn = getattr(dll, name)
    fn.restype, fn.argtypes = _SIGNATURES[name]
    return fn


class _Lib:
    """The C functions used, typed once."""

    def __init__(self, dll: ctypes.PyDLL) -> None:
        self.open_v2 = _typed(dll, "sqlite3_open_v2")
        self.prepare_v2 = _typed(dll, "sqlite3_prepare_v2")
        self.step = _typed(dll, "sqlite3_step")
        self.column_int64 = _typed(dll, "sqlite3_column_int64")
        self.reset = _typed(dll, "sqlite3_reset")
        self.finalize = _typed(dll, "sqlite3_finalize")
        self.close_v2 = _typed(dll, "sqlite3_close_v2")
        self.errmsg = _typed(dll, "sqlite3_errmsg")


def _address(fn: object) -> int | None:
    return ctypes.cast(fn, _c_void_p).value  # type: ignore[arg-type]


def _load() -> _Lib | None:
    import _sqlite3  # the extension module `sqlite3` runs (its file, not a second copy)

    try:
        dll = ctypes.PyDLL(_sqlite3.__file__)  # already loaded: the same handle
        if _typed(dll, "sqlite3_libversion")() != sqlite3.sqlite_version.encode():
            return None
        # _sqlite3's own references bind to a definition in the global scope first (an
        # LD_PRELOAD, an RTLD_GLOBAL extension) and only then to its dependencies, where
        # its handle looks: a global copy at another address is the one it runs.
        everyone = ctypes.CDLL(None)
        for name in _SIGNATURES:
            other = getattr(everyone, name, None)
            if other is not None and _address(other) != _address(getattr(dll, name)):
                return None
        return _Lib(dll)
    except (OSError, AttributeError):  # no such file (frozen, zipped), symbols not exported
        return None


_LIB = _load()


def available() -> bool:
    return _LIB is not None


class MarkError(Exception):
    """SQLite could not open the file or prepare the statement."""


class Marker:
    """One connection and one prepared `PRAGMA data_version`, for one thread."""

    def __init__(self, lib: _Lib, db: int, stmt: int) -> None:
        self._lib, self._db, self._stmt = lib, db, stmt
        # close() may run on another thread (store shutdown): the lock keeps it from
        # freeing the statement between a check of `_stmt` and the call that uses it.
        self._lock = threading.Lock()

    def mark(self) -> int | None:
        """This connection's data version; None if SQLite refused (a lock, an error, a
        closed marker) or took longer than STALL_SECONDS: ask `sqlite3`."""
        lib = self._lib
        with self._lock:
            stmt = self._stmt
            if not stmt:
                return None
            started = time.perf_counter()
            rc = lib.step(stmt)
            value: int = lib.column_int64(stmt, 0) if rc == SQLITE_ROW else 0
            lib.reset(stmt)
            if rc != SQLITE_ROW or time.perf_counter() - started > STALL_SECONDS:
                return None
            return value

    def __del__(self) -> None:
        # A store dropped without close(): the connection's descriptors and its shared
        # lock go with the marker, not with the process.
        self.close()

    def close(self) -> None:
        with self._lock:
            stmt, db = self._stmt, self._db
            self._stmt = self._db = 0
        if stmt:
            self._lib.finalize(stmt)
        if db:
            self._lib.close_v2(db)


def _message(lib: _Lib, db: int, rc: int) -> str:
    text = lib.errmsg(db) if db else None
    return f"sqlite3 error {rc}: {text.decode(errors='replace') if text else '?'}"


def open_marker(path: Path) -> Marker | None:
    """A marker on the database at `path`, or None where this is not possible (the store
    then reads `PRAGMA data_version` through `sqlite3`)."""
    lib = _LIB
    if lib is None:
        return None
    db = _c_void_p()
    flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX  # never creates: the store did
    rc = lib.open_v2(os.fsencode(path), ctypes.byref(db), flags, None)
    if rc != SQLITE_OK:
        message = _message(lib, db.value or 0, rc)
        lib.close_v2(db.value)
        raise MarkError(message)
    stmt = _c_void_p()
    rc = lib.prepare_v2(db.value, b"PRAGMA data_version", -1, ctypes.byref(stmt), None)
    if rc != SQLITE_OK or not stmt.value:
        message = _message(lib, db.value or 0, rc)
        lib.finalize(stmt.value)
        lib.close_v2(db.value)
        raise MarkError(message)
    assert db.value is not None
    return Marker(lib, db.value, stmt.value)
