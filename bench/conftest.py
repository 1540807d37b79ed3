"""Fixtures for the in-process engine benchmarks (collected only by `pytest bench/`).

The main suite's `testpaths = ["service/tests"]` keeps this directory out of a plain
`pytest` run; `make bench` runs `pytest bench/ --benchmark-only`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pdp.bundle import Bundle, load_bundle
from pdp.config import default_bundle
from pdp.engine import Engine, Snapshot

# bench/ is not a package: make `import scenario` work whatever the import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    """The default bundle (the repository's policies/), compiled once."""
    return load_bundle(default_bundle())


@pytest.fixture(scope="session")
def engine(bundle: Bundle) -> Engine:
    return Engine(Snapshot.of({"default": bundle}))
