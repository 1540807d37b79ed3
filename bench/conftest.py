"""Fixtures for the in-process engine benchmarks (collected only by `pytest bench/`).

The main suite's `testpaths = ["service/tests"]` keeps this directory out of a plain
`pytest` run; `make bench` runs `pytest bench/ --benchmark-only`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pdp.bundle import Bundle, compile_bundle
from pdp.bundle_files import read_bundle_files
from pdp.config import default_bundle
from pdp.engine import Engine, Snapshot

# The Cerbos scenario's policy suite (`*_test.yaml`) belongs to its own bundle: the pytest
# plugin would collect it against the default bundle. `pdp test bench/cerbos-scenario
# bench/cerbos-scenario/policy_tests` runs it.
collect_ignore = ["cerbos-scenario"]

# bench/ is not a package: make `import scenario` work whatever the import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    """The default bundle's policies, with the request-entity trust the `-ent` shapes need
    (`scenario.BENCH_TRUST`), compiled once."""
    import scenario

    return compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))


@pytest.fixture(scope="session")
def engine(bundle: Bundle) -> Engine:
    return Engine(Snapshot.of({"default": bundle}))
