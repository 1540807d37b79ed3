"""Attacks on the decision cache's bounds."""

from __future__ import annotations

import sys

from pdp.bundle import load_bundle

from .support import DOCS_BUNDLE
from .test_decision_cache import cache_of, cached_engine, req


def test_the_bytes_bound_holds_for_non_ascii_ids() -> None:
    # `put` sizes an entry by len() of its key strings: characters. A principal id of
    # astral characters costs 4 bytes a character in CPython (and 4 bytes each on the
    # wire), so the cache holds ~4x its `decision_cache_bytes` (256 MiB for the default
    # 64 MiB, with ids a 4 MiB message carries).
    docs = load_bundle(DOCS_BUNDLE)
    budget = 256 * 1024
    engine = cached_engine(docs, max_entries=1_000_000, max_bytes=budget)
    for i in range(40):
        engine.check("", req(f"{i}-" + "\U0001f600" * 16_000))
    cache = cache_of(engine)
    held = sum(sys.getsizeof(s) for key in cache._entries for s in key)  # noqa: SLF001
    assert cache.bytes <= budget
    assert held <= budget, f"{held} bytes of key strings held under a {budget}-byte bound"


def test_batch_level_entities_are_canonicalised_once_not_per_item(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # `Engine.check_batch` computes every item's key before deciding, and each key
    # canonicalises the item's request entities in full (the memo takes only texts of
    # <= 512 chars): a batch-level `entities_json` of ~4 MB used by 100 items is parsed 100
    # times (~0.09 s each here: ~9 s of CPU for one call), even when the bundle accepts no
    # request entities at all and Cedar would refuse them at once (the trust check comes
    # after the keys). Cedar itself parses them once per batch.
    import json

    import pdp.canonical_json as cj
    from pdp.model import RequestEntities

    parsed = [0]
    decode = cj._DECODER.decode  # noqa: SLF001

    class Counting:
        def decode(self, text: str) -> object:
            parsed[0] += len(text)
            return decode(text)

    monkeypatch.setattr(cj, "_DECODER", Counting())
    docs = load_bundle(DOCS_BUNDLE)
    engine = cached_engine(docs)
    ents = [{"uid": {"type": "Tag", "id": f"t{i}"}, "attrs": {}, "parents": []} for i in range(50)]
    text = json.dumps(ents)
    shared = RequestEntities(text, ents)
    batch = [req("alice", resource=f"doc{i}", entities=shared) for i in range(100)]
    try:
        engine.check_batch("", batch)
    except Exception:  # noqa: BLE001 - refused or decided: the cost is what is measured
        pass
    assert parsed[0] <= 3 * len(text), f"{parsed[0]} bytes parsed for {len(text)} of entities"
