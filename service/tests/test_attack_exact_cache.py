"""Attacks on the exact-bytes decision cache (`Engine.cached_exact`)."""

from __future__ import annotations

import gc
import json
import tracemalloc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp.bundle import load_bundle
from pdp.grpc import convert

from .support import DOCS_BUNDLE
from .test_decision_cache import cache_of, cached_engine


def _request(i: int, entities: int) -> pb.CheckRequest:
    ents = [
        {"uid": {"type": "Org", "id": f"o{i}-{j}"}, "attrs": {}, "parents": []}
        for j in range(entities)
    ]
    req = pb.CheckRequest(entities_json=json.dumps(ents, separators=(",", ":")))
    req.principal.type, req.principal.id = "User", "alice"
    req.action.type, req.action.id = "Action", "read"
    req.resource.type, req.resource.id = "Document", f"doc{i}"
    return req


def test_the_bytes_bound_holds_for_exact_entries_with_request_entities() -> None:
    # An exact-bytes entry keeps the converted request (`Cached.request`), and with it
    # `RequestEntities.items`, the parsed entity list. `_request_size` counts that as
    # 2 x the text, but a parsed list of small entities takes ~10 x its text in CPython
    # (four dicts, a list and strings each), so the cache holds several times its
    # `decision_cache_bytes`. Measured with tracemalloc, beside the cache's own count.
    docs = load_bundle(DOCS_BUNDLE)
    budget = 2 * 1024 * 1024
    engine = cached_engine(docs, max_entries=1_000_000, max_bytes=budget)
    cache = cache_of(engine)
    tracemalloc.start()
    try:
        for i in range(30):
            msg = _request(i, 1000)
            data = msg.SerializeToString()
            for _ in range(2):  # the second is a canonical hit: it stores the exact entry
                check = convert.check_input(pb.CheckRequest.FromString(data))
                engine.check("", check, exact=data)
            del check, msg, data
        exact = sum(1 for k in cache._entries if len(k) == 4)  # noqa: SLF001
        entries, counted = cache.entries, cache.bytes
        gc.collect()
        filled = tracemalloc.get_traced_memory()[0]
        cache.drop_tenant("default")  # what the cache alone held is what this frees
        gc.collect()
        held = filled - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert exact > 0, "no exact entry was stored: the test reaches nothing"
    assert counted <= budget
    assert held <= 2 * budget, (
        f"{held} bytes held by {entries} entries ({exact} exact) under a "
        f"{budget}-byte bound (cache.bytes says {counted})"
    )
