"""An acknowledged write survives kill -9 of the server; an unacknowledged one is all or
nothing. A real `pdp serve` with its SQLite store, killed during a stream of writes, then
restarted on the same data directory, a few times over."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc

from pdp._proto.v1 import entity_pb2 as epb
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc

from .support import group, org, ref, store_server, user, write

ROUNDS = 3
ACKED_BEFORE_KILL = 25  # then the server is killed while the writer keeps writing


def stored(entities: epb_grpc.EntityServiceStub) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    token = ""
    while True:
        page = entities.List(epb.ListEntitiesRequest(page_size=1000, page_token=token))
        out |= {(e["uid"]["type"], e["uid"]["id"]) for e in json.loads(page.entities_json)}
        token = page.next_page_token
        if not token:
            return out


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    acked: list[int] = []  # write n: User::"w<n>" in Group::"g<n>", in one write
    sent: list[int] = []
    n = 0
    for _ in range(ROUNDS):
        with store_server(tmp_path) as (server, _, entities):
            if n == 0:
                write(entities, [org("acme")])
            stop = threading.Event()

            def writer(
                entities: epb_grpc.EntityServiceStub = entities, stop: threading.Event = stop
            ) -> None:
                nonlocal n
                while not stop.is_set():
                    n += 1
                    sent.append(n)
                    batch = [group(f"g{n}"), user(f"w{n}", ref("Group", f"g{n}"))]
                    try:
                        write(entities, batch)
                    except grpc.RpcError:
                        return  # the server is gone: this write was never acknowledged
                    acked.append(n)

            thread = threading.Thread(target=writer)
            thread.start()
            deadline = time.monotonic() + 60
            start = len(acked)
            while len(acked) < start + ACKED_BEFORE_KILL and time.monotonic() < deadline:
                time.sleep(0.005)
            server.proc.kill()  # SIGKILL: no shutdown, no flush, mid-write
            server.proc.wait()
            stop.set()
            thread.join(timeout=30)
        with store_server(tmp_path) as (_, _, entities):
            found = stored(entities)
        for i in acked:
            assert ("User", f"w{i}") in found and ("Group", f"g{i}") in found, i
        for i in sent:
            # All or nothing: never the group without its user or the reverse.
            assert (("User", f"w{i}") in found) == (("Group", f"g{i}") in found), i
    assert len(acked) >= ROUNDS * ACKED_BEFORE_KILL
