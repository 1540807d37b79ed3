from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pdp.cli import main

from .helpers import LINT, REPO, TINY, write
from .suites import DECISIONS_ONLY, PINNED


def pdp(*args: str | Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pdp", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_default_bundle_and_suites_pass_with_full_coverage_and_no_survivors() -> None:
    code, out = pdp("test", "--mutate", "--min-coverage", "100")
    assert code == 0, out
    assert "coverage: 39/39 policies and links (100.0%)" in out
    assert ", 0 survived, 0 invalid" in out
    assert out.rstrip().splitlines()[-1].startswith("result: PASSED (exit 0")


def test_invalid_suite_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    suite = write(
        tmp_path / "bad_test.yaml",
        """
        tests:
          - name: ok
            principal: User::"ann"
            action: read
            resource: Doc::"d1"
            expect: allow
          - name: typo
            principal: User::"ann"
            action: read
            resource: Doc::"d1"
            expect: alow
        """,
    )
    code, out = pdp("test", TINY, suite)
    assert code == 2
    assert f"INVALID {suite}:11: tests[1].expect: 'alow' is not one of" in out


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "pinned" / "a_test.yaml", PINNED)
    write(tmp_path / "loose" / "a_test.yaml", DECISIONS_ONLY)
    write(tmp_path / "failing" / "a_test.yaml", DECISIONS_ONLY.replace("allow}", "deny}", 1))
    assert main(["test", str(TINY), str(tmp_path / "pinned"), "--mutate"]) == 0
    assert main(["test", str(TINY), str(tmp_path / "loose")]) == 0
    assert main(["test", str(TINY), str(tmp_path / "loose"), "--mutate"]) == 1
    assert main(["test", str(TINY), str(tmp_path / "failing")]) == 1
    assert (
        main(["test", str(TINY), str(tmp_path / "loose"), "-k", "owner", "--min-coverage", "50"])
        == 1
    )
    assert main(["test", str(TINY), str(tmp_path / "loose"), "-k", "no such test"]) == 2
    assert main(["test", str(tmp_path / "missing"), str(tmp_path / "loose")]) == 2
    assert main(["lint", str(LINT), "--today", "2026-11-29"]) == 1
    assert main(["lint", "--today", "2026-12-01"]) == 0  # the default bundle's last review
    capsys.readouterr()


def test_json_output_and_junit_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    xml = tmp_path / "out" / "junit.xml"
    code = main(["test", str(TINY), str(tmp_path / "s"), "--format", "json", "--junit", str(xml)])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["passed"] == 6 and doc["coverage"]["percent"] == 100.0
    assert ET.parse(xml).getroot().get("tests") == str(6 + 6)


def test_a_suite_file_alone_runs_against_the_default_bundle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    suite = REPO / "policy_tests" / "billing" / "refunds_test.yaml"
    assert main(["test", str(suite), "-k", "dual control"]) == 0
    out = capsys.readouterr().out
    assert "bundle default" in out and "passed, 0 failed" in out
