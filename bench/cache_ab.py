"""Interleaved A/B of the decision cache, servicer wire to wire, in process.

    .venv/bin/python bench/cache_ab.py [ROUNDS]      # default 3000
    .venv/bin/python bench/cache_ab.py alone         # a warm hit alone, per shape

Each round calls every variant once, in turn, so a busy machine slows them alike: the
cache off, a warm hit, a miss on texts seen before (a one-entry cache, two requests
alternating), and off/miss on a context text never seen before (each round its own).
Prints min, p10 and median per variant. Shape `check` of `scenario.py`.

`alone`: only warm hits, 20 loops of 1,000 calls per shape (`check`, `check-ent`), best
loop's mean: the hit path with the CPU's caches warm, as a server answering mostly hits
has them (interleaved with misses, each hit above also pays for caches the misses cooled).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenario  # noqa: E402

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.decision_cache import DecisionCache  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.grpc.servicer import AuthorizationServicer  # noqa: E402
from pdp.grpc.wire import keeping  # noqa: E402


class _NoContext:
    def time_remaining(self) -> float | None:
        return None  # no deadline

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # no caller metadata (no traceparent)

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"servicer aborted: {code} {details}")


def main() -> None:
    if sys.argv[1:] == ["alone"]:
        hits_alone()
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    snapshot = Snapshot.of({"default": bundle})
    ctx = _NoContext()

    def servicer(cache: DecisionCache | None) -> AuthorizationServicer:
        return AuthorizationServicer(Engine(snapshot, cache=cache), 100)

    decode = keeping(pb.CheckRequest)  # the server's own deserializer for Check

    def call(srv: AuthorizationServicer, wire: bytes) -> bytes:
        return bytes(srv.Check(decode(wire), ctx).SerializeToString())

    def variant(**changes: str) -> bytes:
        m = pb.CheckRequest()
        m.CopyFrom(scenario.SHAPES["check"].message)
        for k, v in changes.items():
            if k == "action":
                m.action.id = v
            else:
                setattr(m, k, v)
        return m.SerializeToString()

    base, other = variant(), variant(action="read")
    new_texts = [
        variant(context_json=scenario.CONTEXT_JSON.replace('"2m"', f'"{i}s"'))
        for i in range(rounds)
    ]
    fixed: dict[str, tuple[AuthorizationServicer, Iterator[bytes]]] = {
        "off": (servicer(None), itertools.cycle([base, other])),
        "hit": (servicer(DecisionCache(1000, 1 << 26, 3600)), itertools.cycle([base])),
        "miss, texts seen before": (
            servicer(DecisionCache(1, 1 << 26, 3600)),
            itertools.cycle([base, other]),
        ),
    }
    fresh = {
        "off, new text": servicer(None),
        "miss, new text": servicer(DecisionCache(1, 1 << 26, 3600)),
    }
    times: dict[str, list[int]] = {k: [] for k in [*fixed, *fresh]}
    for srv, calls in fixed.values():
        call(srv, next(calls))  # warm
    for i in range(rounds):
        for name, (srv, calls) in fixed.items():
            wire = next(calls)
            t0 = time.perf_counter_ns()
            call(srv, wire)
            times[name].append(time.perf_counter_ns() - t0)
        for name, srv in fresh.items():
            t0 = time.perf_counter_ns()
            call(srv, new_texts[i])
            times[name].append(time.perf_counter_ns() - t0)
    print_summary(times)


def hits_alone() -> None:
    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    engine = Engine(Snapshot.of({"default": bundle}), cache=DecisionCache(1000, 1 << 26, 3600))
    srv, ctx, decode = AuthorizationServicer(engine, 100), _NoContext(), keeping(pb.CheckRequest)
    for name in ("check", "check-ent"):
        wire = scenario.SHAPES[name].message.SerializeToString()
        for _ in range(3):  # a miss, a canonical hit that stores the exact entry, an exact hit
            srv.Check(decode(wire), ctx)
        best = float("inf")
        for _ in range(20):
            t0 = time.perf_counter_ns()
            for _ in range(1000):
                srv.Check(decode(wire), ctx).SerializeToString()
            best = min(best, (time.perf_counter_ns() - t0) / 1000)
        print(f"{name:10s} hit alone  {best / 1000:6.1f} µs (best of 20 loops of 1,000)")


def print_summary(times: dict[str, list[int]]) -> None:
    """min, p10 and median of each variant's times (ns), in µs; shared by the A/B scripts."""
    for name, ns in times.items():
        ns.sort()
        print(
            f"{name:25s} min {ns[0] / 1000:8.1f} µs  p10 {ns[len(ns) // 10] / 1000:8.1f}"
            f"  median {ns[len(ns) // 2] / 1000:8.1f}"
        )


if __name__ == "__main__":
    main()
