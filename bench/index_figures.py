"""Policy index figures: Check p50 indexed vs whole set, load time, index memory.

    .venv/bin/python bench/index_figures.py [--rounds 7] [--calls 300]

Bundles: the default bundle (`policies/`), and the sharing bundle (the default bundle plus
10,000 `grant-document-access` links, 5 users on each of 2,000 documents, with those users
and documents as entities: `service/tests/sharing.py`).

Check latencies are in process (`Engine.check`), measured as A/B pairs interleaved in one
run (each round times every variant once, in turn), so load from other jobs on the machine
falls on all variants alike; each figure is the median over rounds of a round's p50.

Requests cycle over many documents so the sub-set cache sees a realistic spread:
* default: 6 requests of the benchmark shapes (allow and deny, documents, invoice refund);
* sharing: read/comment/edit on 300 documents, each by a user it is shared with and by one
  it is not: 1,800 distinct requests, 600 sub-sets with links (fewer than the 1,024 cached);
* sharing, spread: every share read and commented in turn, 20,000 distinct sub-sets cycled
  through a 1,024-entry LRU: every call builds its sub-set (the cache's worst case).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from tests.sharing import DOCUMENTS, SHARED_WITH, shared_user, sharing_bundle_files  # noqa: E402

from pdp.bundle import Bundle, compile_bundle, load_bundle  # noqa: E402
from pdp.bundle_files import BundleFiles, read_bundle_files  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.model import CheckInput, EntityRef  # noqa: E402

CONTEXT = {
    "mfa": True,
    "device_trusted": True,
    "session_age": {"__extn": {"fn": "duration", "arg": "20m"}},
    "idle": {"__extn": {"fn": "duration", "arg": "2m"}},
}


def req(p: str, a: str, r: str, **context: Any) -> CheckInput:
    pt, pid = p.split(":")
    rt, rid = r.split(":")
    return CheckInput(
        EntityRef(pt, pid), EntityRef("Action", a), EntityRef(rt, rid), context=CONTEXT | context
    )


DEFAULT_REQUESTS = [
    req("User:bob", "edit", "Document:doc-1"),
    req("User:alice", "read", "Document:globex-doc-1"),
    req("User:carol", "read", "Document:doc-1"),
    req("User:dave", "read", "Document:doc-1"),
    req("User:bob", "delete", "Project:apollo"),
    req("User:dave", "refund", "Invoice:inv-1001", amount_cents=5000, currency="EUR"),
]


def sharing_requests(documents: int, actions: tuple[str, ...]) -> list[CheckInput]:
    out = []
    for d in range(0, DOCUMENTS, DOCUMENTS // documents):
        for a in actions:
            out.append(req(f"User:{shared_user(d, 0)}", a, f"Document:d{d}"))  # shared
            out.append(req(f"User:{shared_user(d, 25)}", a, f"Document:d{d}"))  # not shared
    return out


def spread_requests() -> list[CheckInput]:
    """Every share, read and comment: 20,000 distinct sub-sets, cycled (every call misses)."""
    return [
        req(f"User:{shared_user(d, k)}", a, f"Document:d{d}")
        for d in range(DOCUMENTS)
        for k in range(SHARED_WITH)
        for a in ("read", "comment")
    ]


def p50_us(engine: Engine, requests: list[CheckInput], calls: int, start: int) -> float:
    times = []
    n = len(requests)
    for i in range(calls):
        r = requests[(start + i) % n]
        t = time.perf_counter_ns()
        engine.check("", r)
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_compile(files: BundleFiles) -> tuple[Bundle, float]:
    gc.collect()
    t = time.perf_counter()
    bundle = compile_bundle(files)
    return bundle, time.perf_counter() - t


def without_index(files: BundleFiles) -> BundleFiles:
    manifest = {**json.loads(files.files["manifest.json"]), "index_policies": False}
    return BundleFiles(
        files.source, {**files.files, "manifest.json": json.dumps(manifest).encode()}
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    default_files = read_bundle_files(ROOT / "policies")
    sharing_files = sharing_bundle_files()
    print("load (compile_bundle), seconds, indexed vs index_policies=false:")
    for name, files in (("default", default_files), ("sharing", sharing_files)):
        on = [timed_compile(files)[1] for _ in range(3)]
        off = [timed_compile(without_index(files))[1] for _ in range(3)]
        print(f"  {name}: {statistics.median(on):.3f} vs {statistics.median(off):.3f}")

    # The index's own Python memory (tracemalloc sees Python objects, not Cedar's).
    sharing = compile_bundle(sharing_files)
    from pdp import bundle as bundle_module

    tracemalloc.start()
    kept = bundle_module._index(sharing.manifest, sharing.schema, sharing.policies, sharing.trust)
    index_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    print(f"index memory, sharing bundle (Python objects): {index_bytes / 1e6:.1f} MB")

    default = load_bundle(ROOT / "policies")
    engines = {
        "default indexed": (Engine(Snapshot.of({"default": default})), DEFAULT_REQUESTS),
        "default whole": (
            Engine(Snapshot.of({"default": dataclasses.replace(default, index=None)})),
            DEFAULT_REQUESTS,
        ),
        "sharing indexed": (
            Engine(Snapshot.of({"default": sharing})),
            sharing_requests(300, ("read", "comment", "edit")),
        ),
        "sharing indexed, spread": (
            Engine(Snapshot.of({"default": sharing})),
            spread_requests(),
        ),
    }
    whole_sharing = Engine(Snapshot.of({"default": dataclasses.replace(sharing, index=None)}))
    # Warm the caches (the spread variant cannot be warm: it needs more than the cache).
    before = rss_mb()
    for engine, requests in engines.values():
        for r in requests[:2_500]:
            engine.check("", r)
    assert sharing.index is not None
    print(
        f"sub-sets built while warming: {sharing.index.built}; max RSS {before:.0f} -> "
        f"{rss_mb():.0f} MB (the cache full: {len(sharing.index._subsets)} sub-sets)"
    )
    results: dict[str, list[float]] = {name: [] for name in [*engines, "sharing whole"]}
    for round_ in range(args.rounds):
        for name, (engine, requests) in engines.items():
            results[name].append(p50_us(engine, requests, args.calls, round_ * args.calls))
        # The whole 10,000-policy set costs ~50 ms a call: a few calls per round suffice.
        results["sharing whole"].append(
            p50_us(whole_sharing, engines["sharing indexed"][1], 5, round_ * 5)
        )
    print(f"Check p50 (µs), median of {args.rounds} interleaved rounds:")
    for name, values in results.items():
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"  {name:26s} {statistics.median(values):9.1f}  (rounds: {spread})")
    ratio = statistics.median(results["sharing indexed"]) / statistics.median(
        results["default indexed"]
    )
    print(f"sharing indexed / default indexed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
