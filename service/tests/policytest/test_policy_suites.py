"""`make test` runs the default bundle's policy suites (policy_tests/): one item per test,
plus the bundle-wide checks the issue asks for (100% coverage, no surviving mutant)."""

from __future__ import annotations

import functools

import pytest

from pdp.policytest.harness import Options, Report, run_harness
from pdp.policytest.loader import load_suites
from pdp.policytest.model import Status
from pdp.policytest.report import explain, policy_places

from .helpers import REPO

BUNDLE = REPO / "policies"
SUITES = REPO / "policy_tests"


@functools.cache
def _report(mutate: bool) -> Report:
    return run_harness(Options(BUNDLE, (SUITES,), mutate=mutate))


def _case_ids() -> list[str]:
    from pdp.bundle import load_bundle

    suites, _ = load_suites([SUITES], load_bundle(BUNDLE))
    return [c.id for s in suites for c in s.cases]


def test_suites_and_fixtures_are_valid() -> None:
    assert [str(p) for p in _report(False).problems] == []


@pytest.mark.parametrize("case_id", _case_ids())
def test_policy_case(case_id: str) -> None:
    report = _report(False)
    (outcome,) = [o for o in report.outcomes if o.case.id == case_id]
    if outcome.status is Status.SKIP:
        pytest.skip(outcome.failures[0])
    if outcome.status is not Status.PASS:
        assert report.bundle is not None
        lines = explain(outcome, policy_places(report.bundle))
        pytest.fail(f"{outcome.case.where}: {case_id}\n" + "\n".join(lines), pytrace=False)


def test_every_policy_and_link_is_exercised() -> None:
    coverage = _report(False).coverage
    assert coverage is not None
    assert [u.policy_id for u in coverage.uncovered] == []
    assert coverage.total == 39


def test_no_mutant_survives() -> None:
    mutation = _report(True).mutation
    assert mutation is not None
    assert [str(r.mutant) for r in mutation.survivors] == []
    assert mutation.count("invalid") == 0


def test_the_matrix_form_covers_tenancy_dual_control_and_agents() -> None:
    cells = {o.case.suite for o in _report(False).outcomes if o.case.kind == "matrix"}
    assert {"org-boundary", "refunds", "agents"} <= cells
