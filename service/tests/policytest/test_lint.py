from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from pdp.bundle import load_bundle
from pdp.cli import main
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


# --- reviews: the date alone never fails; a change without a fresh review does --------

DUE = date(2027, 2, 14)  # 91 days after the default bundle's @reviewed("2026-11-15")
REFUND = "billing/refunds.cedar"
REFUND_RULE = (
    'permit (principal in Role::"billing-admin", action == Action::"refund", resource is Invoice);'
)


def _copy_with_ledger(tmp_path: Path) -> Path:
    """The default bundle in tmp_path/policies, its ledger in tmp_path/policy_tests."""
    bundle = tmp_path / "policies"
    shutil.copytree(REPO / "policies", bundle)
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED, record=True)
    assert code == 0 and out.startswith("recorded 38 policies and templates in "), out
    return bundle


def _edit(bundle: Path, old: str, new: str) -> None:
    path = bundle / REFUND
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def _rules(out: str) -> list[tuple[str, str]]:
    found = json.loads(out)["findings"]
    return [(f["policy_id"], f["rule"]) for f in found]


def test_stale_reviews_are_reported_but_fail_only_with_strict() -> None:
    out, code = lint_report(REPO / "policies", today=DUE)
    assert code == 0, out
    assert out.count("stale-review: last reviewed 2026-11-15 (91 days ago") == 23
    assert out.endswith("(23 advisory: stale-review; --strict fails on them)\n")
    out, code = lint_report(REPO / "policies", today=DUE, strict=True)
    assert code == 1 and "advisory" not in out


def test_ci_lint_does_not_depend_on_the_date(capsys: pytest.CaptureFixture[str]) -> None:
    """`make policy-test` runs `pdp lint`: it must pass after the reviews fall due."""
    assert main(["lint", "--today", DUE.isoformat()]) == 0
    assert main(["lint", "--today", "2031-01-01"]) == 0
    assert main(["lint", "--today", DUE.isoformat(), "--strict"]) == 1
    capsys.readouterr()


def test_the_checked_in_ledger_matches_the_default_bundle() -> None:
    out, code = lint_report(REPO / "policies", today=DEFAULT_REVIEWED, as_json=True)
    assert code == 0 and json.loads(out)["ledger"] == str(REPO / "policy_tests" / "reviews.json")


def test_a_policy_changed_without_a_fresh_review_fails(tmp_path: Path) -> None:
    bundle = _copy_with_ledger(tmp_path)
    _edit(bundle, REFUND_RULE, REFUND_RULE.replace("resource is Invoice", "resource"))
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED, as_json=True)
    assert code == 1
    assert _rules(out) == [("billing-admin-refund", "changed-without-review")]
    text, _ = lint_report(bundle, today=DEFAULT_REVIEWED)
    line = next(line for line in text.splitlines() if "changed-without-review" in line)
    assert line.startswith(f"{REFUND}:19 [billing-admin-refund] changed-without-review: ")
    assert "review of 2026-11-15" in line and "@reviewed is 2026-11-15" in line
    # A date that is not newer than the ledger's is not a fresh review either.
    _edit(
        bundle,
        '@reviewed("2026-11-15")\npermit (principal in Role::"billing-admin", action == Action::"refund"',
        '@reviewed("2026-11-01")\npermit (principal in Role::"billing-admin", action == Action::"refund"',
    )
    assert _rules(lint_report(bundle, today=DEFAULT_REVIEWED, as_json=True)[0]) == [
        ("billing-admin-refund", "changed-without-review")
    ]


def test_a_fresh_review_passes_and_recording_it_clears_the_note(tmp_path: Path) -> None:
    bundle = _copy_with_ledger(tmp_path)
    _edit(bundle, REFUND_RULE, REFUND_RULE.replace("resource is Invoice", "resource"))
    _edit(
        bundle,
        '@reviewed("2026-11-15")\npermit (principal in Role::"billing-admin", action == Action::"refund"',
        '@reviewed("2026-11-28")\npermit (principal in Role::"billing-admin", action == Action::"refund"',
    )
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED, as_json=True)
    assert code == 0, out
    assert _rules(out) == [("billing-admin-refund", "review-not-recorded")]
    assert lint_report(bundle, today=DEFAULT_REVIEWED, strict=True)[1] == 1
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED, record=True)
    assert code == 0 and out.endswith(" 0 finding(s) in 38 policies and templates\n"), out
    ledger = json.loads((tmp_path / "policy_tests" / "reviews.json").read_text())
    assert ledger["policies"]["billing-admin-refund"]["reviewed"] == "2026-11-28"


def test_a_policy_missing_from_the_ledger_fails(tmp_path: Path) -> None:
    bundle = _copy_with_ledger(tmp_path)
    write(
        bundle / "billing" / "new.cedar",
        """
        @id("new-rule")
        @owner("growth-billing")
        @reviewed("2026-11-28")
        forbid (principal, action == Action::"refund", resource) when { context.amount_cents < 0 };
        """,
    )
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED)
    assert code == 1
    assert "billing/new.cedar:1 [new-rule] changed-without-review: not in the review ledger " in out


def test_a_bad_ledger_is_refused_by_name(tmp_path: Path) -> None:
    bundle = _copy_with_ledger(tmp_path)
    ledger = tmp_path / "policy_tests" / "reviews.json"
    body = json.loads(ledger.read_text())
    ledger.write_text(json.dumps({**body, "bundle": "other"}))
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED)
    assert code == 2 and "the ledger is for bundle 'other', not 'default'" in out
    body["policies"]["billing-admin-refund"]["sha256"] = "abc"
    ledger.write_text(json.dumps(body))
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED)
    assert code == 2 and out.startswith(
        f"INVALID ledger: {ledger}: policies.billing-admin-refund.sha256: "
    )
    out, code = lint_report(bundle, today=DEFAULT_REVIEWED, ledger=tmp_path / "nope.json")
    assert code == 2 and "cannot read the review ledger" in out
