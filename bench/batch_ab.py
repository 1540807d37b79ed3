"""In process, one run, interleaved A/B: a base revision's batch-path functions beside this
tree's (issue 7), on the Cerbos race's shape b; every output asserted equal first.

- `convert.batch_inputs`, `engine._result` x40, `convert.check_response` x40;
- `SqliteEntityStore.data_version` on one file, nothing written meanwhile (then: a write by
  another connection is seen by the next call, for both).

    git worktree add /tmp/wt-base 640bf3c
    .venv/bin/python bench/batch_ab.py /tmp/wt-base [--rounds 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

import cedarpy  # noqa: E402

from pdp import engine  # noqa: E402
from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp.bundle import load_bundle  # noqa: E402
from pdp.entity_store import sqlite  # noqa: E402
from pdp.grpc import convert  # noqa: E402


def load(name: str, path: Path) -> ModuleType:
    """A module of the base tree, under its own name (its imports are this tree's)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("base", type=Path, help="a checkout of the base revision")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    src = args.base / "service" / "pdp"
    convert0 = load("convert0", src / "grpc" / "convert.py")
    engine0 = load("engine0", src / "engine.py")
    sqlite0 = load("sqlite0", src / "entity_store" / "sqlite.py")

    bundle = load_bundle(ROOT / "bench" / "cerbos-scenario")
    body = (ROOT / "bench" / "cerbos-requests" / "b.bin").read_bytes()[5:]  # gRPC frame
    req = pb.CheckBatchRequest.FromString(body)
    inputs = convert.batch_inputs(req)
    assert inputs == convert0.batch_inputs(req)
    assert inputs[0].entities is not None
    contexts: dict[int, str] = {}
    batch = [engine._cedar_request(r, contexts) for r in inputs]
    ents = cedarpy.Entities.from_json_str(inputs[0].entities.json, bundle.schema)
    outs = engine._authorize(batch, bundle, ents, bundle.schema, engine._Pace(len(batch), None))

    def results(module: Any) -> list[Any]:
        return [module._result(bundle, o, i) for i, o in enumerate(outs)]

    def same(r: Any) -> tuple[Any, ...]:
        return (r.decision, r.determining_policies, r.errors, r.data_version)

    assert [same(r) for r in results(engine)] == [same(r) for r in results(engine0)]
    decided = results(engine)
    assert [convert.check_response(r) for r in decided] == [
        convert0.check_response(r) for r in decided
    ]

    work = Path(tempfile.mkdtemp(prefix="pdp-batch-ab-"))
    store0 = sqlite0.SqliteEntityStore(work / "e.sqlite3")
    store = sqlite.SqliteEntityStore(work / "e.sqlite3")
    writer = sqlite.SqliteEntityStore(work / "e.sqlite3")
    entity = [{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}]
    writer.write("default", entity, [])

    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any], int]] = {
        "batch_inputs (40 items)": (
            lambda: convert0.batch_inputs(req),
            lambda: convert.batch_inputs(req),
            20,
        ),
        "_result x40": (lambda: results(engine0), lambda: results(engine), 20),
        "check_response x40": (
            lambda: [convert0.check_response(r) for r in decided],
            lambda: [convert.check_response(r) for r in decided],
            20,
        ),
        "data_version (1 call)": (
            lambda: store0.data_version("default"),
            lambda: store.data_version("default"),
            2000,
        ),
    }
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for _ in range(args.rounds):
        for name, (base, this, n) in pairs.items():
            samples[name][0].append(min(timeit.repeat(base, number=n, repeat=3)) / n)
            samples[name][1].append(min(timeit.repeat(this, number=n, repeat=3)) / n)
    print(f"{args.rounds} interleaved rounds; median microseconds, base -> this")
    for name, (a, b) in samples.items():
        ma, mb = statistics.median(a) * 1e6, statistics.median(b) * 1e6
        print(f"  {name:24} {ma:8.1f} -> {mb:8.1f}   {mb / ma:5.2f}x")
    for reader in (store0, store):
        for _ in range(20):
            version = writer.write("default", entity, [])
            assert reader.data_version("default") == version
    print("  a write by another connection is seen by the next data_version: both")


if __name__ == "__main__":
    main()
