"""attack2 reproducer (not a test: it takes minutes): one EntityService-sized write of a
parent chain costs superlinearly (closure table n(n-1)/2 rows, recomputed in Python).
Run: cd service && ../.venv/bin/python tests/attack2/chain_cost.py"""

import tempfile
import time
from pathlib import Path

from pdp.entity_store import open_store

store = open_store(None, Path(tempfile.mkdtemp()))
for n in (500, 1000, 2000, 4000):
    chain = [
        {
            "uid": {"type": "G", "id": f"c{n}_{i}"},
            "attrs": {},
            "parents": [{"type": "G", "id": f"c{n}_{i - 1}"}] if i else [],
        }
        for i in range(n)
    ]
    t = time.perf_counter()
    store.write(f"t{n}", chain, [])
    print(n, f"{time.perf_counter() - t:.2f}s", n * (n - 1) // 2, "closure rows", flush=True)
