"""Entity store figures: bulk import (entities/s), size on disk, slice latency p50/p99, at
1k, 100k and 1M stored entities (issue 9). For the lead, on a quiet machine:

    .venv/bin/python bench/entity_store.py                      # SQLite, 1k, 100k, 1M
    .venv/bin/python bench/entity_store.py --sizes 1000,100000 --url postgresql://...

The graph is the issue's: users in groups in organisations, documents in folders (in
folders, in an organisation), each document referencing its owner and its organisation,
each user her manager. Entities are imported parents first, in writes of --batch
entities, without schema validation (the store's own cost). A slice is what a check
asks: a random user and a random document, references followed 2 hops. Every size gets a
fresh store in a temp dir (SQLite) or a fresh tenant (PostgreSQL).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pdp.entity_store import open_store
from pdp.entity_store.api import EntityStore


def uid(kind: str, n: int) -> dict[str, str]:
    return {"type": kind, "id": f"{kind.lower()}-{n}"}


def ref(kind: str, n: int) -> dict[str, Any]:
    return {"__entity": uid(kind, n)}


def counts(total: int) -> dict[str, int]:
    orgs = max(1, total // 1000)
    groups = max(2, total // 50)
    folders = max(2, total // 20)
    users = total // 2
    docs = total - orgs - groups - folders - users
    return {"Org": orgs, "Group": groups, "Folder": folders, "User": users, "Doc": docs}


def graph(total: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """The entities of a store of `total`, parents before children."""
    c = counts(total)
    for i in range(c["Org"]):
        yield {"uid": uid("Org", i), "attrs": {"name": f"org {i}"}, "parents": []}
    for i in range(c["Group"]):
        yield {"uid": uid("Group", i), "attrs": {}, "parents": [uid("Org", i % c["Org"])]}
    for i in range(c["Folder"]):
        # The first tenth are top folders (in an org); the others are in a folder before them.
        top = i < max(1, c["Folder"] // 10)
        parent = uid("Org", i % c["Org"]) if top else uid("Folder", rng.randrange(i // 2 + 1))
        yield {"uid": uid("Folder", i), "attrs": {}, "parents": [parent]}
    for i in range(c["User"]):
        groups = {rng.randrange(c["Group"]) for _ in range(2)}
        yield {
            "uid": uid("User", i),
            "attrs": {"manager": ref("User", rng.randrange(i + 1)), "level": i % 7},
            "parents": [uid("Group", g) for g in sorted(groups)],
        }
    for i in range(c["Doc"]):
        yield {
            "uid": uid("Doc", i),
            "attrs": {
                "owner": ref("User", rng.randrange(c["User"])),
                "org": ref("Org", i % c["Org"]),
                "tags": ["a", "b"],
            },
            "parents": [uid("Folder", rng.randrange(c["Folder"]))],
        }


def size_on_disk(store: EntityStore, path: Path | None, url: str | None) -> int:
    if path is not None:
        return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
    import psycopg

    assert url is not None
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(c)) FROM unnest("
            "ARRAY['versions','entities','edges','closure','refs']::regclass[]) AS c"
        ).fetchone()
    return int(row[0]) if row else 0


def run(total: int, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(total)
    tmp = Path(tempfile.mkdtemp(prefix="pdp-store-bench-"))
    store = open_store(args.url, tmp)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        start = time.perf_counter()
        batch: list[dict[str, Any]] = []
        for entity in graph(total, rng):
            batch.append(entity)
            if len(batch) == args.batch:
                store.write(tenant, batch, [])
                batch = []
        if batch:
            store.write(tenant, batch, [])
        seconds = time.perf_counter() - start
        c = counts(total)
        lat: list[float] = []
        sizes: list[int] = []
        for _ in range(args.slices):
            asked = [
                ("User", f"user-{rng.randrange(c['User'])}"),
                ("Action", "read"),
                ("Doc", f"doc-{rng.randrange(c['Doc'])}"),
            ]
            t = time.perf_counter()
            s = store.slice(tenant, asked, 2)
            lat.append(time.perf_counter() - t)
            sizes.append(len(s.entities))
        lat.sort()
        path = tmp / "entities.sqlite3" if args.url is None else None
        return {
            "entities": total,
            "import_s": seconds,
            "import_per_s": total / seconds,
            "disk_mb": size_on_disk(store, path, args.url) / 1e6,
            "slice_p50_ms": 1000 * statistics.median(lat),
            "slice_p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "slice_entities_mean": statistics.mean(sizes),
        }
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)  # a 1M store is ~1 GB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="1000,100000,1000000")
    p.add_argument("--url", help="postgresql://... (default: SQLite in a temp dir)")
    p.add_argument("--batch", type=int, default=10_000, help="entities per write")
    p.add_argument("--slices", type=int, default=2000, help="slices timed per size")
    args = p.parse_args()
    backend = "PostgreSQL" if args.url else "SQLite"
    print(f"{backend}: import in writes of {args.batch}; {args.slices} slices of depth 2")
    print("entities   import s  entities/s  disk MB  slice p50 ms  p99 ms  entities/slice")
    for total in (int(s) for s in args.sizes.split(",")):
        r = run(total, args)
        print(
            f"{r['entities']:>9,}  {r['import_s']:>8.1f}  {r['import_per_s']:>10,.0f}"
            f"  {r['disk_mb']:>7.1f}  {r['slice_p50_ms']:>12.3f}  {r['slice_p99_ms']:>6.3f}"
            f"  {r['slice_entities_mean']:>14.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
