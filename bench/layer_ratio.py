#!/usr/bin/env python3
"""Python-layer cost of one Check, as ratios to bare cedarpy, robust to a shared machine.

Bare `cedarpy.is_authorized` (the bundle's pre-parsed handles, the `check` shape's exact
request), `Engine.check` and the servicer wire to wire (decode, convert, engine, convert,
encode) are timed in turns inside one process, `--rounds` times `--calls` calls each; the
minimum per-call time of each is kept, so load from other processes inflates all three
alike and the ratios stand (issue 7 §4 asks for Engine.check <= 1.2x, servicer <= 1.5x).

    taskset -c 0 .venv/bin/python bench/layer_ratio.py [--rounds 30 --calls 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cedarpy  # noqa: E402
import scenario  # noqa: E402

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.grpc.servicer import AuthorizationServicer  # noqa: E402


class _NoContext:
    def time_remaining(self) -> float | None:
        return None  # no deadline

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # no caller metadata (no traceparent)

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"servicer aborted: {code} {details}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args(argv)
    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    engine = Engine(Snapshot.of({"default": bundle}))
    shape = scenario.SHAPES["check"]
    [i] = scenario.check_inputs(shape)
    request = {
        "principal": i.principal.as_cedar(),
        "action": i.action.as_cedar(),
        "resource": i.resource.as_cedar(),
        "context": i.context,
    }
    check = AuthorizationServicer(engine, max_batch_items=100).Check
    wire, ctx = shape.message.SerializeToString(), _NoContext()
    ps, ents, schema = bundle.policy_set, bundle.entities, bundle.schema

    def bare() -> Any:
        return cedarpy.is_authorized(request, ps, ents, schema)

    def engine_check() -> Any:
        return engine.check("", i)

    def servicer() -> Any:
        return check(pb.CheckRequest.FromString(wire), ctx).SerializeToString()

    kinds: dict[str, Callable[[], Any]] = {
        "bare cedarpy.is_authorized": bare,
        "Engine.check": engine_check,
        "servicer wire to wire": servicer,
    }
    best = dict.fromkeys(kinds, float("inf"))
    for _ in range(a.rounds):
        for name, fn in kinds.items():
            t0 = time.perf_counter()
            for _ in range(a.calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / a.calls)
    floor = best["bare cedarpy.is_authorized"]
    for name, t in best.items():
        print(f"{name:28s} {t * 1e6:8.1f} µs  {t / floor:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
