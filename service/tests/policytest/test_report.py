from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pdp.policytest.harness import Report
from pdp.policytest.junit import junit
from pdp.policytest.report import as_json, text

from .helpers import TINY, run, write
from .suites import DECISIONS_ONLY, MIXED


@pytest.fixture
def mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Report:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "s" / "mixed_test.yaml", MIXED)
    broken = 'tests:\n  - {name: x, action: read, resource: Doc::"d1", expect: allow}\n'
    write(tmp_path / "s" / "broken_test.yaml", broken)
    return run(Path("s"), min_coverage=50.0)


def normalized(output: str) -> str:
    output = output.replace(str(TINY), "TINY")
    output = re.sub(r"sha256:[0-9a-f]{12}…", "sha256:…", output)
    return re.sub(r"\d+\.\d\d s", "T s", output)


def test_text_report_explains_each_failure(mixed: Report) -> None:
    assert normalized(text(mixed)) == (
        "pdp test: bundle tiny 1.0.0 (TINY, sha256:…)\n"
        "INVALID s/broken_test.yaml:2: tests[0]: 'principal' is a required property\n"
        "FAIL  s/mixed_test.yaml:4  mixed/fails\n"
        '      request:  User::"cat"  Action::"edit"  Doc::"d1"\n'
        "      context:  {}\n"
        "      expected: ALLOW, determined by [owner-edit]\n"
        "      actual:   DENY, no policy applied (denied by default)\n"
        "      - decision: expected ALLOW, got DENY\n"
        "      - determining policies: expected [owner-edit], got []\n"
        "ERROR s/mixed_test.yaml:6  mixed/errs\n"
        '      request:  User::"ann"  Action::"erase"  Doc::"d1"\n'
        "      context:  {}\n"
        "      expected: DENY\n"
        "      - invalid request: action: failed to build request: "
        'action `Action::"erase"` does not exist in the supplied schema\n'
        "SKIP  s/mixed_test.yaml:7  mixed/skipped\n"
        "      skipped: waiting for a policy change\n"
        "1 suite, 4 tests: 1 passed, 1 failed, 1 error, 1 skipped (T s deciding)\n"
        "coverage: 1/6 policies and links (16.7%) — below --min-coverage\n"
        "  not exercised: share-d1-with-cat (link of share)\n"
        "  not exercised: read-public (rules.cedar:2)\n"
        "  not exercised: suspended-deny (rules.cedar:13)\n"
        "  not exercised: suspended-no-edit (rules.cedar:18)\n"
        "  not exercised: edit-sunset (rules.cedar:23)\n"
        "result: INVALID (exit 2, T s)\n"
    )


def test_verbose_text_lists_passing_tests_and_who_decided(mixed: Report) -> None:
    lines = text(mixed, verbose=True).splitlines()
    assert "PASS  s/mixed_test.yaml:3  mixed/passes" in lines


def test_json_report(mixed: Report) -> None:
    doc = json.loads(json.dumps(as_json(mixed)))
    assert doc["exit_code"] == 2
    assert doc["summary"] == {
        "suites": 1,
        "tests": 4,
        "passed": 1,
        "failed": 1,
        "errors": 1,
        "skipped": 1,
        "seconds": doc["summary"]["seconds"],
    }
    assert doc["problems"] == [
        {
            "file": "s/broken_test.yaml",
            "line": 2,
            "message": "tests[0]: 'principal' is a required property",
        }
    ]
    fails = {t["name"]: t for t in doc["tests"]}["fails"]
    assert fails["status"] == "fail"
    assert fails["request"] == {
        "principal": 'User::"cat"',
        "action": 'Action::"edit"',
        "resource": 'Doc::"d1"',
        "context": {},
    }
    assert fails["expected"]["determining"] == ["owner-edit"]
    assert fails["actual"] == {"decision": "deny", "determining": [], "errors": []}
    assert doc["coverage"]["percent"] == 16.67 and doc["coverage"]["min_coverage"] == 50.0
    assert doc["mutation"] is None and doc["compare"] is None


def test_junit_report_parses_and_counts(mixed: Report) -> None:
    root = ET.fromstring(junit(mixed))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["mixed", "s/broken_test.yaml", "coverage"]
    m = suites["mixed"]
    assert (m.get("tests"), m.get("failures"), m.get("errors"), m.get("skipped")) == (
        "4",
        "1",
        "1",
        "1",
    )
    cases = {c.get("name"): c for c in m.findall("testcase")}
    failure = cases["fails"].find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "decision: expected ALLOW, got DENY; determining policies: expected [owner-edit], got []"
    )
    assert 'request:  User::"cat"  Action::"edit"  Doc::"d1"' in (failure.text or "")
    assert cases["fails"].get("file") == "s/mixed_test.yaml" and cases["fails"].get("line") == "4"
    assert cases["errs"].find("error") is not None
    assert cases["skipped"].find("skipped") is not None
    assert cases["passes"].find("*") is None
    broken = suites["s/broken_test.yaml"].find("testcase/error")
    assert broken is not None and "'principal' is a required property" in broken.get("message", "")
    coverage = suites["coverage"]
    assert coverage.get("skipped") == "5" and coverage.get("failures") == "1"
    assert root.get("tests") == str(4 + 1 + 7) and root.get("failures") == "2"


def test_junit_lists_mutants_and_survivors_fail(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    root = ET.fromstring(junit(run(tmp_path / "s", mutate=True)))
    mutation = [s for s in root.findall("testsuite") if s.get("name") == "mutation"][0]
    assert mutation.get("tests") == "13" and mutation.get("failures") == "2"
    failed = [c.get("name") for c in mutation.findall("testcase") if c.find("failure") is not None]
    assert failed == [
        "remove suspended-no-edit (rules.cedar:18)",
        "flip suspended-no-edit (rules.cedar:18)",
    ]


def test_text_report_of_mutation_and_change_impact(tmp_path: Path) -> None:
    from .helpers import TINY_V2

    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    out = normalized(text(run(tmp_path / "s", mutate=True, compare=TINY_V2)))
    tail = out.split("coverage: 6/6 policies and links (100.0%)\n")[1]
    assert tail == (
        "mutation: 13 mutants: 11 killed, 2 survived, 0 invalid (T s)\n"
        "  SURVIVED remove suspended-no-edit (rules.cedar:18): no test notices\n"
        "  SURVIVED flip suspended-no-edit (rules.cedar:18): no test notices\n"
        "change impact against TINY-v2 (tiny 1.1.0): 2 of 6 requests change decision\n"
        f"  a/owner edits ({tmp_path}/s/a_test.yaml:2): ALLOW -> DENY  [owner-edit] -> []\n"
        f"  a/public read ({tmp_path}/s/a_test.yaml:3): ALLOW -> DENY  [read-public] -> []\n"
        "result: FAILED (exit 1, T s)\n"
    )


def test_an_invalid_bundle_is_reported_in_every_format(tmp_path: Path) -> None:
    write(tmp_path / "bundle" / "manifest.json", '{"name": "x", "version": "1"}')
    write(tmp_path / "bundle" / "schema.cedarschema", "entity User;\n")
    write(tmp_path / "bundle" / "p.cedar", "permit(principal, action, resource)\n")
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    report = run(tmp_path / "s", bundle=tmp_path / "bundle")
    assert report.exit_code == 2
    assert "p.cedar:1: unterminated policy (missing `;`)" in text(report)
    assert as_json(report)["bundle_error"]["problems"][0]["file"] == "p.cedar"
    assert ET.fromstring(junit(report)).get("errors") == "1"
