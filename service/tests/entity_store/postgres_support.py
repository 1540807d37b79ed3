"""A real throwaway PostgreSQL for the tests: `PDP_TEST_POSTGRES_URL`, else one started
from Debian's binaries (/usr/lib/postgresql/*/bin) in a temp dir on a free port, stopped at
the end of the session. Without either the PostgreSQL pass is skipped, saying so in the
summary (`-ra`); with CI=true a missing PostgreSQL fails the tests instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NOT_RUN = "PostgreSQL pass not run"


def _binaries() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user() -> tuple[int, int] | None:
    """initdb refuses to run as root: run the server as `postgres` (Debian's package user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root without a `postgres` user to run PostgreSQL as")
    return entry.pw_uid, entry.pw_gid


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """The URL of a PostgreSQL server for this session (skipped or failed without one)."""
    url = os.environ.get("PDP_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bindir = _binaries()
    if bindir is None:
        reason = f"{NOT_RUN}: no PostgreSQL binaries (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL pass: {reason}")
        pytest.skip(reason)
    user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="pdp-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if user is not None:
        for p in (root, sock):
            os.chown(p, *user)

    def run(*args: str) -> None:
        subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user=user[0] if user else None,
            group=user[1] if user else None,
            cwd=root,
            timeout=120,
        )

    port = _free_port()
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=on"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode()}{log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
