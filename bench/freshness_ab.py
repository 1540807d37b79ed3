"""Interleaved A/B of what `max_bundle_age` adds to a decision: Engine.check on a warm
decision-cache hit (the cheapest decision, so the added staleness check weighs most) and on
the cache off, each with freshness off (the default) and on (a fresh tenant: the check
runs, the policies decide).

    .venv/bin/python bench/freshness_ab.py [ROUNDS]      # default 20000

Each round calls every variant once, in turn (the order reversed every other round), so a
busy machine slows them alike. Prints
min, p10 and median per variant, in microseconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_ab import print_summary  # noqa: E402

from pdp.bundle import load_bundle  # noqa: E402
from pdp.config import default_bundle  # noqa: E402
from pdp.decision_cache import DecisionCache  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.freshness import Freshness  # noqa: E402
from pdp.model import CheckInput, EntityRef  # noqa: E402

REQUEST = CheckInput(
    EntityRef("User", "bob"), EntityRef("Action", "edit"), EntityRef("Document", "doc-1")
)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    snapshot = Snapshot.of({"default": load_bundle(default_bundle())})
    fresh = Freshness(3600.0)
    fresh.confirm("default")
    engines = {
        "hit, freshness off": Engine(snapshot, DecisionCache(1000, 1 << 24, 3600)),
        "hit, freshness on": Engine(snapshot, DecisionCache(1000, 1 << 24, 3600), fresh),
        "no cache, freshness off": Engine(snapshot),
        "no cache, freshness on": Engine(snapshot, freshness=fresh),
    }
    times: dict[str, list[int]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.check("default", REQUEST)  # warm the cache
    order = list(engines.items())
    for i in range(rounds):
        # The order alternates: the first call of a round is slower, whichever it is.
        for name, engine in order if i % 2 else order[::-1]:
            start = time.perf_counter_ns()
            result = engine.check("default", REQUEST)
            times[name].append(time.perf_counter_ns() - start)
            assert result.reason == ""
    print_summary(times)


if __name__ == "__main__":
    main()
