from __future__ import annotations

from pathlib import Path

from .helpers import BUNDLES, TINY_V2, run, write
from .suites import DECISIONS_ONLY


def test_requests_whose_decision_changes_are_listed(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    report = run(tmp_path / "s", compare=TINY_V2)
    c = report.comparison
    assert c is not None
    assert (c.other.name, c.other.version, c.requests) == ("tiny", "1.1.0", 6)
    assert [(ch.case.name, ch.before, ch.after) for ch in c.decisions] == [
        ("owner edits", "ALLOW", "DENY"),
        ("public read", "ALLOW", "DENY"),
    ]
    assert c.decisions[0].determining_before == ("owner-edit",)
    assert c.decisions[0].determining_after == ()
    assert report.exit_code == 0  # change impact informs a review; it does not fail the run


def test_requests_the_other_schema_refuses_are_listed(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    report = run(tmp_path / "s", compare=BUNDLES / "other-schema")
    c = report.comparison
    assert c is not None
    assert len(c.decisions) == 6
    assert all(ch.after.startswith("invalid: ") for ch in c.decisions)
