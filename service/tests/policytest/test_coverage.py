from __future__ import annotations

from pathlib import Path

from .helpers import run, write
from .suites import DECISIONS_ONLY


def test_every_policy_and_link_is_covered(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    cov = run(tmp_path / "s").coverage
    assert cov is not None
    assert (cov.covered, cov.total, cov.percent) == (6, 6, 100.0)
    by_id = {u.policy_id: u for u in cov.policies}
    assert by_id["share-d1-with-cat"].kind == "link"
    assert by_id["share-d1-with-cat"].template == "share"
    assert by_id["suspended-deny"].tests == 2
    assert "share" not in by_id  # the template is exercised through its link
    assert cov.unlinked_templates == ()


def test_unexercised_policies_are_listed_and_min_coverage_fails(tmp_path: Path) -> None:
    suite = DECISIONS_ONLY.split("  - {name: sunset")[0]
    write(tmp_path / "s" / "a_test.yaml", suite)
    report = run(tmp_path / "s", min_coverage=90.0)
    assert report.coverage is not None
    assert [(u.policy_id, u.file, u.line) for u in report.coverage.uncovered] == [
        ("edit-sunset", "rules.cedar", 23)
    ]
    assert round(report.coverage.percent, 1) == 83.3
    assert report.exit_code == 1
    assert run(tmp_path / "s", min_coverage=80.0).exit_code == 0


def test_filtered_runs_measure_what_they_ran(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    report = run(tmp_path / "s", pattern="SUSPENDED*nothing")
    assert [o.case.name for o in report.outcomes] == [
        "suspended reads nothing",
        "suspended edits nothing",
    ]
    assert report.coverage is not None and report.coverage.covered == 2
