from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pdp.bundle import load_bundle
from pdp.policytest.lint import lint, lint_report

from .helpers import LINT, REPO, write

TODAY = date(2026, 11, 29)
DEFAULT_REVIEWED = date(2026, 12, 1)  # the default bundle's latest @reviewed


def test_each_rule_once() -> None:
    found = [(f.policy_id, f.rule, f.line) for f in lint(load_bundle(LINT), today=TODAY)]
    assert found == [
        ("policy0", "missing-id", 3),
        ("policy0", "missing-owner", 3),
        ("policy0", "missing-reviewed", 3),
        ("policy0", "unconditioned-permit", 3),
        ("stale", "stale-review", 11),
        ("bad-date", "invalid-reviewed", 17),
        ("unowned", "missing-owner", 23),
        ("dead-permit", "permit-always-overridden", 28),
    ]


def test_messages_name_the_overriding_forbid_and_the_review_age() -> None:
    by_rule = {f.rule: str(f) for f in lint(load_bundle(LINT), today=TODAY)}
    assert by_rule["permit-always-overridden"] == (
        "rules.cedar:28 [dead-permit] permit-always-overridden: "
        "the unconditioned forbid no-interns (rules.cedar:39) covers its whole scope"
    )
    assert by_rule["stale-review"].endswith(
        "last reviewed 2026-08-01 (120 days ago; reviews are due every 90 days)"
    )


def test_review_age_and_required_annotations_are_parameters() -> None:
    bundle = load_bundle(LINT)
    rules = [f.rule for f in lint(bundle, today=TODAY, max_age_days=365, required=())]
    assert "stale-review" not in rules and "missing-owner" not in rules
    future = [f.message for f in lint(bundle, today=date(2026, 7, 1)) if f.policy_id == "fine"]
    assert future == ["@reviewed('2026-11-01') is in the future (today is 2026-07-01)"]


def test_scope_containment_is_sound(tmp_path: Path) -> None:
    write(tmp_path / "b" / "manifest.json", '{"name": "b", "version": "1"}')
    (tmp_path / "b" / "schema.cedarschema").write_text((LINT / "schema.cedarschema").read_text())
    write(
        tmp_path / "b" / "rules.cedar",
        """
        @id("by-type") permit (principal == User::"ann", action == Action::"read", resource is Doc);
        @id("by-group") permit (principal is User in Team::"t", action in [Action::"read"], resource);
        @id("other-action") permit (principal is User, action == Action::"edit", resource);
        @id("conditioned") permit (principal is User, action == Action::"edit", resource)
          when { principal.suspended };
        @id("f1") forbid (principal is User, action in [Action::"read"], resource is Doc);
        @id("f2") forbid (principal in Team::"t", action, resource);
        @id("f3") forbid (principal, action == Action::"edit", resource) when { true };
        """,
    )
    found = {f.policy_id for f in lint(load_bundle(tmp_path / "b"), TODAY, required=())}
    assert found == {"by-type", "by-group"}


def test_the_default_bundle_is_clean_until_its_reviews_are_due() -> None:
    bundle = load_bundle(REPO / "policies")
    assert lint(bundle, today=DEFAULT_REVIEWED) == []
    stale = lint(bundle, today=date(2027, 6, 1))
    assert {f.rule for f in stale} == {"stale-review"}
    assert len(stale) == sum(1 for s in bundle.policies.values() if s.template_id is None)


def test_lint_report_exit_codes_and_json(tmp_path: Path) -> None:
    out, code = lint_report(LINT, today=TODAY, as_json=True)
    assert code == 1
    assert len(json.loads(out)["findings"]) == 8
    out, code = lint_report(REPO / "policies", today=DEFAULT_REVIEWED)
    assert code == 0 and out.endswith("0 finding(s) in 38 policies and templates\n")
    out, code = lint_report(tmp_path / "missing", today=TODAY)
    assert code == 2 and out.startswith("INVALID bundle:")
