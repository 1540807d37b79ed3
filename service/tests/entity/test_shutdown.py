"""SIGTERM during a stream of entity writes and store-backed checks: the server stops
cleanly (exit 0, no crash), and every write it acknowledged is in the store after.

The store used to be closed while a call cancelled at the end of the grace period was
still inside SQLite on its pool thread: the process could die of SIGSEGV at shutdown."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc

from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc

from ..support import ServerProcess, running_server
from .support import ADMIN_ENV, check, entity_stub, group, org, ref, store_server, user, write
from .test_durability import stored

ROUNDS = 4
WRITERS = 4
CHECKERS = 2
BATCH = 100  # entities a write: long enough inside SQLite to be caught there
ACKED_FIRST = 8  # writes acknowledged in a round before SIGTERM


def _writer(
    entities: epb_grpc.EntityServiceStub, prefix: str, stop: threading.Event, acked: list[str]
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        name = f"{prefix}n{n}"
        batch = [group(name)] + [user(f"{name}u{i}", ref("Group", name)) for i in range(BATCH)]
        try:
            write(entities, batch)
        except grpc.RpcError:
            return  # the server is going: not acknowledged
        acked.append(name)


def _checker(authz: pb_grpc.AuthorizationServiceStub, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            authz.Check(check("someone", "read", "doc"), timeout=5)
        except grpc.RpcError:
            return


def _round(
    server: ServerProcess,
    authz: pb_grpc.AuthorizationServiceStub,
    entities: epb_grpc.EntityServiceStub,
    r: int,
    acked: list[str],
) -> int:
    """Writers and checkers running, SIGTERM once a few writes were acknowledged; the
    server's exit code."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=_writer, args=(entities, f"r{r}w{w}", stop, acked))
        for w in range(WRITERS)
    ]
    threads += [threading.Thread(target=_checker, args=(authz, stop)) for _ in range(CHECKERS)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        start = len(acked)
        while len(acked) < start + ACKED_FIRST and time.monotonic() < deadline:
            time.sleep(0.005)
        server.proc.send_signal(signal.SIGTERM)
        return server.proc.wait(timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def test_sigterm_during_writes_stops_cleanly_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    acked: list[str] = []  # the group of each acknowledged write
    for r in range(ROUNDS):
        # No drain and no grace: calls in flight are cancelled at once, while their
        # threads may still be inside the store.
        args = ("--drain-seconds", "0", "--shutdown-grace-seconds", "0")
        with store_server(tmp_path, *args) as (server, authz, entities):
            if r == 0:
                write(entities, [org("acme")])
            code = _round(server, authz, entities, r, acked)
            assert code == 0, f"round {r}: exit {code}; log:\n{server.log()}"
            server.wait_for_log(r"\bstopped\b")
    assert len(acked) >= ROUNDS * ACKED_FIRST
    with (
        running_server(
            ["--bundle", f"default={tmp_path / 'bundle'}", "--no-watch"],
            env={"PDP_DATA_DIR": str(tmp_path / "data"), **ADMIN_ENV},
        ) as server,
        entity_stub(server) as entities,
    ):
        found = stored(entities)
    missing = [name for name in acked if ("Group", name) not in found]
    assert not missing, f"acknowledged writes lost: {missing[:5]}"
