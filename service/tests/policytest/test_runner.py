from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pdp.bundle import Bundle, load_bundle
from pdp.engine import evaluate as engine_evaluate
from pdp.model import CheckInput, CheckResult
from pdp.policytest import runner
from pdp.policytest.loader import load_suites
from pdp.policytest.model import Status

from .helpers import TINY, run, write


@pytest.fixture(scope="module")
def tiny() -> Bundle:
    return load_bundle(TINY)


def outcomes(tmp_path: Path, tests: str) -> dict[str, tuple[Status, tuple[str, ...]]]:
    write(tmp_path / "s" / "x_test.yaml", "tests:\n" + tests)
    report = run(tmp_path / "s")
    assert report.problems == ()
    return {o.case.name: (o.status, o.failures) for o in report.outcomes}


def test_every_unmet_expectation_is_listed(tmp_path: Path) -> None:
    got = outcomes(
        tmp_path,
        """
  - {name: decision, principal: User::"cat", action: edit, resource: Doc::"d1", expect: allow}
  - {name: exact, principal: User::"ann", action: read, resource: Doc::"d2",
     expect: {decision: allow, determining: [read-public]}}
  - {name: exact wrong, principal: User::"ann", action: read, resource: Doc::"d1",
     expect: {decision: allow, determining: [read-public]}}
  - {name: includes, principal: User::"ann", action: read, resource: Doc::"d1",
     expect: {decision: allow, determining_includes: [owner-edit, read-public]}}
  - {name: deny by default, principal: User::"cat", action: edit, resource: Doc::"d1",
     expect: {decision: deny, determining: []}}
  - {name: link, principal: User::"cat", action: read, resource: Doc::"d1",
     expect: {decision: allow, determining: [share-d1-with-cat]}}
  - {name: skipped, principal: User::"cat", action: edit, resource: Doc::"d1", expect: allow,
     skip: not yet}
""",
    )
    assert got == {
        "decision": (Status.FAIL, ("decision: expected ALLOW, got DENY",)),
        "exact": (Status.PASS, ()),
        "exact wrong": (
            Status.FAIL,
            ("determining policies: expected [read-public], got [owner-edit]",),
        ),
        "includes": (
            Status.FAIL,
            ("determining policies: missing [read-public], got [owner-edit]",),
        ),
        "deny by default": (Status.PASS, ()),
        "link": (Status.PASS, ()),
        "skipped": (Status.SKIP, ("not yet",)),
    }


def test_evaluation_errors_and_annotations(tmp_path: Path) -> None:
    # An unknown principal: suspended-deny errs on it, and the engine fails closed.
    ghost = 'principal: User::"ghost", action: read, resource: Doc::"d2"'
    got = outcomes(
        tmp_path,
        f"""
  - {{name: unexpected errors, {ghost}, expect: deny}}
  - {{name: some errors, {ghost}, expect: {{decision: deny, errors: true}}}}
  - {{name: errors from, {ghost}, expect: {{decision: deny, errors: [suspended-deny]}}}}
  - {{name: wrong errors, {ghost}, expect: {{decision: deny, errors: [read-public]}}}}
  - {{name: no errors, principal: User::"ann", action: read, resource: Doc::"d2",
     expect: {{decision: allow, errors: true}}}}
  - {{name: owner, principal: User::"ann", action: read, resource: Doc::"d2",
     expect: {{decision: allow, annotations: {{owner: docs}}}}}}
  - {{name: not owner, principal: User::"ann", action: read, resource: Doc::"d2",
     expect: {{decision: allow, annotations: {{owner: security, reviewed: x}}}}}}
""",
    )
    assert got == {
        "unexpected errors": (
            Status.FAIL,
            ("evaluation errors: expected none, got [suspended-deny]",),
        ),
        "some errors": (Status.PASS, ()),
        "errors from": (Status.PASS, ()),
        "wrong errors": (
            Status.FAIL,
            ("evaluation errors: expected in [read-public], got [suspended-deny]",),
        ),
        "no errors": (Status.FAIL, ("evaluation errors: expected some, got none",)),
        "owner": (Status.PASS, ()),
        "not owner": (
            Status.FAIL,
            (
                "annotation @owner: expected 'security' on a determining policy, got docs",
                "annotation @reviewed: expected 'x' on a determining policy, got none",
            ),
        ),
    }


def test_all_cases_go_to_the_engine_in_one_call(
    tmp_path: Path, tiny: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "s" / "a_test.yaml",
        """
        principals:
          dan: {uid: User::"dan", attrs: {suspended: false}}
        tests:
          - {name: a, principal: dan, action: read, resource: Doc::"d2", expect: allow}
          - {name: b, principal: User::"ann", action: read, resource: Doc::"d1", expect: allow}
        """,
    )
    write(
        tmp_path / "s" / "b_test.yaml",
        """
        principals:
          dan: {uid: User::"dan", attrs: {suspended: false}}
        matrix:
          - {name: m, principals: [dan, User::"cat"], resources: [Doc::"d2"], actions: [read, edit],
             allow: [{principal: dan, resource: Doc::"d2", actions: [read]},
                     {principal: User::"cat", resource: Doc::"d2", actions: [read]}]}
        """,
    )
    calls: list[int] = []
    real = engine_evaluate

    def counting(bundle: Bundle, requests: Sequence[CheckInput], **kw: bool) -> list[CheckResult]:
        calls.append(len(requests))
        return real(bundle, requests, **kw)

    monkeypatch.setattr("pdp.policytest.runner.evaluate", counting)
    suites, problems = load_suites([tmp_path / "s"], tiny)
    assert problems == []
    cases = [c for s in suites for c in s.cases]
    # Suites with the same fixtures share one RequestEntities value: one engine group.
    assert len({c.request.entities for c in cases}) == 1
    run_ = runner.run_cases(tiny, cases)
    assert calls == [6]
    assert {o.status for o in run_.outcomes} == {Status.PASS}


def test_an_invalid_request_is_set_aside_and_the_rest_rerun(
    tmp_path: Path, tiny: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "s" / "a_test.yaml",
        """
        tests:
          - {name: a, principal: User::"ann", action: read, resource: Doc::"d1", expect: allow}
          - {name: b, principal: User::"ann", action: nope, resource: Doc::"d1", expect: allow}
          - {name: c, principal: User::"ann", action: edit, resource: Doc::"d1", expect: allow}
        """,
    )
    calls: list[int] = []
    real = engine_evaluate

    def counting(bundle: Bundle, requests: Sequence[CheckInput], **kw: bool) -> list[CheckResult]:
        calls.append(len(requests))
        return real(bundle, requests, **kw)

    monkeypatch.setattr("pdp.policytest.runner.evaluate", counting)
    suites, _ = load_suites([tmp_path / "s"], tiny)
    run_ = runner.run_cases(tiny, suites[0].cases)
    assert calls == [3, 2]
    assert [o.status for o in run_.outcomes] == [Status.PASS, Status.ERROR, Status.PASS]
