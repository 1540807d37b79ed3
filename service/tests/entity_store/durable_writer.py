"""Child process of the durability test: writes forever, printing each acknowledged write.

Usage: durable_writer.py STORE_URL DATA_DIR TENANT FIRST_N

Write n upserts User::n (in Group::(n % 5), referencing Doc::n) and Doc::n (in
Folder::(n % 3)) and moves Group::(n % 5) to Org::(n % 2): one write that touches the
closure rows of many entities. After `write` returns it prints `ACK <version> <n>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pdp.entity_store import open_store


def uid(kind: str, eid: object) -> dict[str, str]:
    return {"type": kind, "id": str(eid)}


def main() -> None:
    url, data_dir, tenant, first = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    store = open_store(url or None, data_dir)
    print("READY", flush=True)
    n = first
    while True:
        version = store.write(
            tenant,
            [
                {
                    "uid": uid("User", n),
                    "attrs": {"doc": {"__entity": uid("Doc", n)}},
                    "parents": [uid("Group", n % 5)],
                },
                {"uid": uid("Doc", n), "attrs": {}, "parents": [uid("Folder", n % 3)]},
                {"uid": uid("Group", n % 5), "attrs": {}, "parents": [uid("Org", n % 2)]},
            ],
            [],
        )
        print(f"ACK {version} {n}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
