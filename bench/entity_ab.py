"""In process, interleaved A/B rounds: what the entity slices cost on the decision path.

1. Request entities against a bundle of 10 vs 50,000 base entities: before issue 9 the base
   was copied per request (`with_added_json_str`: ~100 ms at 50,000); now each check builds
   its slice, so both sizes should cost about the same.
2. The usual check (no request entities) with no store, and with an empty SQLite store (one
   data-version read per check: what read-your-writes costs when nothing is stored), and
   with the same entities stored rather than in the bundle (the same check repeated: its
   slice comes from the slice cache after the first; `entity_scale.py` measures misses).

    .venv/bin/python bench/entity_ab.py [--rounds 20] [--block 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import BundleFiles  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.entity_store import open_store  # noqa: E402
from pdp.model import CheckInput, EntityRef, RequestEntities  # noqa: E402

SCHEMA = b"""
entity Org;
entity Team in [Org];
entity User in [Team] { org: Org, level: Long };
entity Guest { org: Org };
entity Doc { org: Org, owner: User };
action read appliesTo { principal: [User, Guest], resource: Doc };
"""
POLICIES = b"""
@id("same-org")
permit(principal, action, resource) when { principal.org == resource.org };
@id("team-read")
permit(principal in Team::"t0", action, resource);
"""


def entities(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"uid": {"type": "Org", "id": "o"}, "attrs": {}, "parents": []}]
    teams = max(1, n // 100)
    for i in range(teams):
        out.append(
            {
                "uid": {"type": "Team", "id": f"t{i}"},
                "attrs": {},
                "parents": [{"type": "Org", "id": "o"}],
            }
        )
    for i in range(n - len(out)):
        out.append(
            {
                "uid": {"type": "User", "id": f"u{i}"},
                "attrs": {"org": {"__entity": {"type": "Org", "id": "o"}}, "level": i % 10},
                "parents": [{"type": "Team", "id": f"t{i % teams}"}],
            }
        )
    out.append(
        {
            "uid": {"type": "Doc", "id": "d"},
            "attrs": {
                "org": {"__entity": {"type": "Org", "id": "o"}},
                "owner": {"__entity": {"type": "User", "id": "u0"}},
            },
            "parents": [],
        }
    )
    return out


def bundle(base: list[dict[str, Any]], manifest: dict[str, Any]) -> Any:
    files = {
        "manifest.json": json.dumps({"name": "ab", "version": "1", **manifest}).encode(),
        "schema.cedarschema": SCHEMA,
        "policies.cedar": POLICIES,
        "entities.json": json.dumps(base).encode(),
    }
    return compile_bundle(BundleFiles("ab", files))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=200)
    args = ap.parse_args()
    guest = RequestEntities(
        json.dumps(
            [
                {
                    "uid": {"type": "Guest", "id": "g"},
                    "attrs": {"org": {"__entity": {"type": "Org", "id": "o"}}},
                    "parents": [],
                }
            ]
        )
    )
    trusted = {"request_entities": {"Guest": {}}}
    with_guest = CheckInput(
        EntityRef("Guest", "g"), EntityRef("Action", "read"), EntityRef("Doc", "d"), entities=guest
    )
    usual = CheckInput(EntityRef("User", "u1"), EntityRef("Action", "read"), EntityRef("Doc", "d"))

    work = Path(tempfile.mkdtemp(prefix="pdp-entity-ab-"))
    empty = open_store(None, work / "empty")
    full = open_store(None, work / "full")
    stored = entities(10_000)
    for start in range(0, len(stored), 5000):
        full.write("ab", stored[start : start + 5000], [])
    small, large = bundle(entities(10), trusted), bundle(entities(50_000), trusted)
    in_bundle = bundle(stored, {})
    bare = bundle([], {})

    def deciding(b: Any, request: CheckInput, store: Any = None) -> Callable[[], Any]:
        engine = Engine(Snapshot.of({"ab": b}), store=store)
        return lambda: engine.check("ab", request)

    cases = {
        "request entities, 10 base entities": deciding(small, with_guest),
        "request entities, 50,000 base entities": deciding(large, with_guest),
        "10,000 entities in the bundle, no store": deciding(in_bundle, usual),
        "10,000 entities in the bundle, empty store": deciding(in_bundle, usual, empty),
        "10,000 entities in the store (slice cached)": deciding(bare, usual, full),
    }
    expected = {name: f().decision for name, f in cases.items()}
    assert len(set(expected.values())) == 1, expected  # all Allow: the same decision
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, f in cases.items():
            block = samples[name]
            for _ in range(args.block):
                start = time.perf_counter()
                f()
                block.append(time.perf_counter() - start)
    print(f"{args.rounds} interleaved rounds x {args.block} checks each; microseconds")
    for name, block in samples.items():
        ordered = sorted(block)
        p99 = ordered[int(0.99 * len(ordered))]
        print(f"  {name:45} p50 {statistics.median(block) * 1e6:8.1f}   p99 {p99 * 1e6:8.1f}")


if __name__ == "__main__":
    main()
