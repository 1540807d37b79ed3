"""Cost of rejected requests against good ones of the same size (issue 6 §5), in-process.

    .venv/bin/python bench/bounds.py [N] [--uncapped]

Counts cedarpy calls and times the servicer's path (convert + engine) on the test bundle
`docs`: a 2,001-entity request with one bad entity at the end against the valid one, and a
CheckBatch of 100 items sharing one large context_json against the same batch with a small
context. Figures: bench/RESULTS.md ("Bounded work per request").
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import cedarpy

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import load_bundle
from pdp.engine import Engine, Snapshot, evaluate
from pdp.errors import PdpError
from pdp.grpc import convert

DOCS = Path(__file__).resolve().parents[1] / "service/tests/testdata/bundles/docs"


def user(i: int, level: Any = 1) -> dict[str, Any]:
    return {
        "uid": {"type": "User", "id": f"u{i}"},
        "attrs": {"org": {"__entity": {"type": "Org", "id": "acme"}}, "level": level},
        "parents": [],
    }


def entities_request(n: int, bad_at: int | None) -> pb.CheckRequest:
    ents = [user(i, "high" if i == bad_at else 1) for i in range(n)]
    return pb.CheckRequest(
        tenant="docs",
        principal=vpb.EntityUid(type="User", id="u0"),
        action=vpb.EntityUid(type="Action", id="read"),
        resource=vpb.EntityUid(type="Document", id="doc1"),
        entities_json=json.dumps(ents, indent=1),  # one line per value, as a PEP might send
    )


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Count every cedarpy entry point the engine and the entity locator call."""
    counts = {"calls": 0}
    patched: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts["calls"] += 1
            return original(*args, **kwargs)

        patched.append((owner, name, original))
        setattr(owner, name, counted)

    # `is_authorized` goes through `is_authorized_batch`: every decision and every probe.
    wrap(cedarpy, "is_authorized_batch")
    try:
        yield counts
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)


def timed(fn: Callable[[], Any], runs: int = 5) -> tuple[float, int, str]:
    """Best wall time of `runs` (ms), cedarpy calls of one run, and the outcome."""
    best, calls, outcome = float("inf"), 0, ""
    for _ in range(runs):
        with counting() as counts:
            t = time.perf_counter()
            try:
                fn()
                outcome = "ok"
            except PdpError as exc:
                outcome = exc.message[:90]
            best = min(best, time.perf_counter() - t)
        calls = counts["calls"]
    return best * 1000, calls, outcome


def main() -> None:
    engine = Engine(Snapshot.of({"docs": load_bundle(DOCS)}))
    uncapped = "--uncapped" in sys.argv  # also the 440 KB x 100 batch without caps (~35-60 s)
    args = [a for a in sys.argv[1:] if a != "--uncapped"]
    n = int(args[0]) if args else 2001
    good, bad = entities_request(n, None), entities_request(n, n - 1)
    print(f"entities: {n} per request, {len(good.entities_json)} bytes of entities_json")
    for name, req in (("valid", good), ("bad last", bad)):
        ms, calls, outcome = timed(
            lambda r=req: engine.check(
                "docs",
                convert.check_input(r, replace(convert.DEFAULT_LIMITS, max_request_entities=10**6)),
            )
        )
        print(f"  {name:9} {ms:8.1f} ms  {calls:3d} cedarpy calls  {outcome}")

    big = json.dumps({"tags": [f"t{i:06d}" for i in range(40_000)]})
    small = json.dumps({"tags": ["t"]})
    at_cap = json.dumps({"tags": [f"t{i:06d}" for i in range(470)]})  # 100 x ~5 KB: 512 KiB
    unbounded = convert.Limits(10**6, 10**9, 10**12, 64)
    cases = (("40k-tag, no caps", big, unbounded),) if uncapped else ()
    cases += (("40k-tag", big, convert.DEFAULT_LIMITS),)
    cases += (
        (
            "5k-tag",
            json.dumps({"tags": [f"t{i:06d}" for i in range(5000)]}),
            convert.DEFAULT_LIMITS,
        ),
    )
    cases += (("900-tag, at the batch cap", at_cap, convert.DEFAULT_LIMITS),)
    for name, ctx, limits in (*cases, ("small context", small, convert.DEFAULT_LIMITS)):
        batch = pb.CheckBatchRequest(
            tenant="docs", principal=vpb.EntityUid(type="User", id="alice")
        )
        batch.context_json = ctx
        for _ in range(100):
            batch.items.add(
                action=vpb.EntityUid(type="Action", id="read"),
                resource=vpb.EntityUid(type="Document", id="doc1"),
            )
        bundle = engine.bundle("docs")
        ms, calls, outcome = timed(
            lambda b=batch, lim=limits, bu=bundle: evaluate(bu, convert.batch_inputs(b, lim)),
            runs=1,
        )
        print(f"  batch x100, {name} ({len(ctx)} B): {ms:8.1f} ms {calls} calls  {outcome}")


if __name__ == "__main__":
    main()
