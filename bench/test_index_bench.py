"""Policy index benchmarks (pytest-benchmark): one Engine.check, indexed vs the whole set.

    .venv/bin/pytest bench/test_index_bench.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,mean,rounds

Group `index`: the default bundle and the 10,000-link sharing bundle
(`service/tests/sharing.py`), each indexed and with `index=None` (every policy evaluated).
Each call takes the next request of a cycle over many documents (`index_figures.py` says
which), so the sub-set cache sees a spread, not one hot key. `index_figures.py` measures
the same variants interleaved in one run, plus load time and memory.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_figures import (  # noqa: E402
    DEFAULT_REQUESTS,
    ROOT,
    sharing_requests,
    spread_requests,
)
from tests.sharing import sharing_bundle_files  # noqa: E402

from pdp.bundle import Bundle, compile_bundle, load_bundle  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.model import CheckInput  # noqa: E402


@pytest.fixture(scope="module")
def default_bundle() -> Bundle:
    return load_bundle(ROOT / "policies")


@pytest.fixture(scope="module")
def sharing_bundle() -> Bundle:
    return compile_bundle(sharing_bundle_files())


def run(
    benchmark: Any, bundle: Bundle, requests: list[CheckInput], indexed: bool, slow: bool = False
) -> None:
    engine = Engine(
        Snapshot.of({"default": bundle if indexed else dataclasses.replace(bundle, index=None)})
    )
    for r in requests[:2_000]:  # warm (a spread larger than the cache cannot stay warm)
        engine.check("", r)
    cycle = itertools.cycle(requests)
    if slow:  # the whole 10,000-policy set costs ~10 ms a call: a fixed, small number of rounds
        benchmark.pedantic(lambda: engine.check("", next(cycle)), rounds=30, iterations=1)
    else:
        benchmark(lambda: engine.check("", next(cycle)))


@pytest.mark.benchmark(group="index")
@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "whole"])
def test_check_default_bundle(benchmark: Any, default_bundle: Bundle, indexed: bool) -> None:
    run(benchmark, default_bundle, DEFAULT_REQUESTS, indexed)


@pytest.mark.benchmark(group="index")
@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "whole"])
def test_check_sharing_bundle(benchmark: Any, sharing_bundle: Bundle, indexed: bool) -> None:
    requests = sharing_requests(300, ("read", "comment", "edit"))
    run(benchmark, sharing_bundle, requests, indexed, slow=not indexed)


@pytest.mark.benchmark(group="index")
def test_check_sharing_bundle_spread(benchmark: Any, sharing_bundle: Bundle) -> None:
    # Every call builds its sub-set: 20,000 distinct ones through a 1,024-entry cache.
    run(benchmark, sharing_bundle, spread_requests(), True)
