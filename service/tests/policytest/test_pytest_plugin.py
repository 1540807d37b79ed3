from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers import TINY, write
from .suites import DECISIONS_ONLY


def pytest_run(*args: str | Path, cwd: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "pdp.policytest.pytest_plugin",
            "-p",
            "no:cacheprovider",
        ]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_suites_under_policy_tests_become_items(tmp_path: Path) -> None:
    failing = DECISIONS_ONLY.replace("expect: allow}", "expect: deny}", 1)
    write(tmp_path / "policy_tests" / "ok_test.yaml", DECISIONS_ONLY)
    write(tmp_path / "policy_tests" / "sub" / "failing_test.yaml", failing)
    write(tmp_path / "policy_tests" / "testdata" / "notes.txt", "not a fixture\n")
    write(tmp_path / "elsewhere" / "ignored_test.yaml", "not: a suite\n")
    code, out = pytest_run("--pdp-bundle", TINY, "-q", "-rf", tmp_path, cwd=tmp_path)
    assert code == 1, out
    assert "1 failed, 11 passed" in out
    assert "failing_test.yaml:2: failing/owner edits (fail)" in out
    assert "- decision: expected DENY, got ALLOW" in out
    assert "actual:   ALLOW, determined by owner-edit (rules.cedar:8)" in out


def test_an_invalid_suite_is_a_collection_error(tmp_path: Path) -> None:
    write(tmp_path / "policy_tests" / "bad_test.yaml", "tests: [{name: x}]\n")
    code, out = pytest_run("--pdp-bundle", TINY, "-q", tmp_path / "policy_tests", cwd=tmp_path)
    assert code == 2, out
    assert (
        "invalid suite: " in out
        and "bad_test.yaml:1: tests[0]: 'principal' is a required property" in out
    )
