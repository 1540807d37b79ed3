"""A write acknowledged is on disk: a child process writes a stream of writes, printing
each acknowledged one, and is killed with SIGKILL at random moments; after each kill the
store is reopened and every acknowledged write must be there, and no write half-applied
(one entity of a write without the other, or closure rows that do not match the stored
parents)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pdp.entity_store import open_store
from pdp.entity_store.api import EntityStore, EntityUid

WRITER = Path(__file__).with_name("durable_writer.py")
ROUNDS = {"sqlite": 12, "postgresql": 6}


def check_whole(store: EntityStore, tenant: str, acked: dict[int, int]) -> int:
    """Every acked write is there and every write there is whole; returns writes present."""
    entities = {e.uid: e for e in store.export(tenant)}
    users = {int(u[1]) for u in entities if u[0] == "User"}
    docs = {int(u[1]) for u in entities if u[0] == "Doc"}
    assert users == docs, f"half-applied writes: {sorted(users ^ docs)}"
    missing = sorted(n for n in acked if n not in users)
    assert not missing, f"acknowledged writes lost: {missing}"
    version = store.data_version(tenant)
    assert version == len(users), (version, len(users))  # one version per whole write
    assert max(acked.values(), default=0) <= version
    parents = {u: e.parents for u, e in entities.items()}

    def closure(uid: EntityUid) -> set[EntityUid]:
        out: set[EntityUid] = set()
        todo = list(parents.get(uid, ()))
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(parents.get(p, ()))
        return out

    for uid in entities:
        assert store.ancestors(tenant, uid) == closure(uid), uid
    slice_ = store.slice(tenant, [("User", str(max(users)))], 1) if users else None
    if slice_ is not None:
        assert ("Doc", str(max(users))) in {e.uid for e in slice_.entities}
    return len(users)


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    url = "" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    tenant = f"d-{uuid.uuid4().hex[:12]}"
    rng = random.Random(os.environ.get("PDP_TEST_SEED", "durability"))
    acked: dict[int, int] = {}
    next_n, kills, present = 0, 0, 0
    for _ in range(ROUNDS[backend]):
        child = subprocess.Popen(
            [sys.executable, str(WRITER), url, str(tmp_path), tenant, str(next_n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        want = rng.randint(1, 40)
        seen = 0
        for line in child.stdout:
            _, version, n = line.split()
            acked[int(n)] = int(version)
            seen += 1
            if seen >= want:
                break
        time.sleep(rng.uniform(0, 0.02))  # kill mid-write, not only between writes
        child.send_signal(signal.SIGKILL)
        for line in child.stdout:  # acknowledgements printed before the kill landed
            _, version, n = line.split()
            acked[int(n)] = int(version)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        kills += 1
        store = open_store(url or None, tmp_path)
        try:
            present = check_whole(store, tenant, acked)
        finally:
            store.close()
        next_n = present  # n are 0.. in order: a killed unacknowledged write may be there
    print(f"\n{backend}: {kills} kills, {len(acked)} acknowledged writes, {present} present")
    assert kills == ROUNDS[backend] and len(acked) >= kills
