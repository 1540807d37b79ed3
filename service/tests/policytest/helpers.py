"""Shared test helpers: the small bundles in testdata/ and writing suites into tmp folders."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from pdp.policytest.harness import Options, Report, run_harness

HERE = Path(__file__).parent
REPO = HERE.parents[2]
BUNDLES = HERE / "testdata" / "bundles"
TINY = BUNDLES / "tiny"
TINY_V2 = BUNDLES / "tiny-v2"
LINT = BUNDLES / "lint"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run(suites: Path, bundle: Path = TINY, **options: Any) -> Report:
    """`pdp test BUNDLE SUITES` in-process; options as in `Options` (pattern, mutate, ...)."""
    return run_harness(Options(bundle, (suites,), **options))
