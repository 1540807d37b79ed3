from __future__ import annotations

from pathlib import Path

import pytest

from pdp.bundle import Bundle, load_bundle
from pdp.model import Decision, EntityRef
from pdp.policytest.loader import discover, load_suites
from pdp.policytest.model import Status

from .helpers import TINY, run, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def problems_of(text: str, tmp_path: Path) -> list[str]:
    write(tmp_path / "s" / "x_test.yaml", text)
    report = run(tmp_path / "s")
    assert report.exit_code == 2
    return [str(p) for p in report.problems]


def test_names_that_resolve_to_nothing_are_suite_errors(tmp_path: Path) -> None:
    assert problems_of(
        """
        principals: {ann: User::"ann"}
        tests:
          - {name: a, principal: anne, action: read, resource: Doc::"d1", expect: allow}
          - {name: b, principal: ann, action: read, resource: Doc::"d1", entities: [nope],
             expect: allow}
          - {name: c, principal: ann, action: read, resource: Doc::"d1",
             expect: {decision: allow, determining: [owner-edit, owner_edit]}}
          - {name: c, principal: ann, action: edit, resource: Doc::"d1", expect: allow}
        """,
        tmp_path,
    ) == [
        "s/x_test.yaml:3: no principal fixture named 'anne' (known: ann)",
        "s/x_test.yaml:4: no entity set named 'nope' (known: none)",
        "s/x_test.yaml:7: the bundle has no policy 'owner_edit' (an @id or a link id)",
    ]


def test_duplicate_test_names(tmp_path: Path) -> None:
    assert problems_of(
        """
        tests:
          - {name: a, principal: User::"ann", action: read, resource: Doc::"d1", expect: allow}
          - {name: a, principal: User::"ann", action: edit, resource: Doc::"d1", expect: allow}
        """,
        tmp_path,
    ) == ["s/x_test.yaml:3: test name 'a' is used twice (also at line 2)"]


def test_matrix_cells_must_lie_in_the_matrix(tmp_path: Path) -> None:
    assert problems_of(
        """
        matrix:
          - name: m
            principals: [User::"ann"]
            resources: [Doc::"d1"]
            actions: [read]
            allow:
              - {principal: User::"ann", resource: Doc::"d2", actions: [read]}
          - name: n
            principals: [User::"ann"]
            resources: [Doc::"d1"]
            actions: [read]
            allow: [{principal: User::"ann", resource: Doc::"d1", actions: [read]}]
            deny: [{principal: User::"ann", resource: Doc::"d1", actions: [read]}]
        """,
        tmp_path,
    ) == [
        's/x_test.yaml:7: Doc::"d2" is not in the matrix\'s resources',
        's/x_test.yaml:13: cell User::"ann" Action::"read" Doc::"d1" is listed in both allow and deny',
    ]


def test_matrix_expands_every_cell_and_unlisted_cells_expect_deny(tmp_path: Path) -> None:
    write(
        tmp_path / "s" / "m_test.yaml",
        """
        principals: {ann: User::"ann", cat: User::"cat"}
        resources: {d1: Doc::"d1"}
        matrix:
          - name: docs
            principals: [ann, cat]
            resources: [d1, Doc::"d2"]
            actions: [read, edit]
            allow:
              - {principal: ann, resource: d1, actions: [read, edit]}
              - {principal: cat, resource: d1, actions: [read]}
              - {principal: User::"ann", resource: Doc::"d2", actions: [read]}
              - {principal: cat, resource: Doc::"d2", actions: [read]}
        """,
    )
    suites, problems = load_suites([tmp_path / "s"], _tiny())
    assert problems == []
    cells = {c.name: c for c in suites[0].cases}
    assert len(cells) == 8
    assert cells["docs [ann edit d1]"].expect.decision is Decision.ALLOW
    assert cells['docs [cat edit Doc::"d2"]'].expect.decision is Decision.DENY
    assert cells["docs [cat read d1]"].request.principal == EntityRef("User", "cat")
    assert cells["docs [cat read d1]"].where.line == 10  # the allow entry that lists it
    assert cells["docs [cat edit d1]"].where.line == 4  # unlisted: the matrix itself
    assert {c.kind for c in suites[0].cases} == {"matrix"}
    report = run(tmp_path / "s")
    assert report.exit_code == 0, [o.failures for o in report.outcomes]


def test_actions_expand_to_one_case_each_and_the_suite_is_named_after_its_file(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "s" / "owner_test.yaml",
        """
        tests:
          - name: owner
            principal: User::"ann"
            actions: [read, Action::"edit"]
            resource: Doc::"d1"
            expect: allow
        """,
    )
    suites, _ = load_suites([tmp_path / "s"], _tiny())
    assert [c.id for c in suites[0].cases] == ["owner/owner [read]", 'owner/owner [Action::"edit"]']


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (
            '"2031-01-01T00:00:00Z"',
            {"now": {"__extn": {"fn": "datetime", "arg": "2031-01-01T00:00:00Z"}}},
        ),
        ("{value: '1970-01-02T00:00:00Z', format: epoch, attribute: t}", {"t": 86400}),
        ("{value: '2031-01-01', format: string}", {"now": "2031-01-01"}),
    ],
)
def test_now_is_a_context_default(tmp_path: Path, now: str, expected: dict[str, object]) -> None:
    write(
        tmp_path / "s" / "n_test.yaml",
        f"""
        now: {now}
        context: {{ticket: T-1}}
        tests:
          - {{name: a, principal: User::"ann", action: edit, resource: Doc::"d1", expect: allow,
             context: {{ticket: T-2}}}}
        """,
    )
    suites, _ = load_suites([tmp_path / "s"], _tiny())
    assert suites[0].cases[0].request.context == {**expected, "ticket": "T-2"}


def test_a_fixed_now_reaches_the_policies(tmp_path: Path) -> None:
    write(
        tmp_path / "s" / "n_test.yaml",
        """
        now: "2031-01-01T00:00:00Z"
        tests:
          - {name: sunset, principal: User::"ann", action: edit, resource: Doc::"d1",
             expect: {decision: deny, determining: [edit-sunset]}}
        """,
    )
    assert run(tmp_path / "s").exit_code == 0


def test_an_invalid_now_is_a_suite_error(tmp_path: Path) -> None:
    assert problems_of("now: tomorrow\ntests: []\n", tmp_path) == [
        "s/x_test.yaml:1: now: 'tomorrow' is not an ISO 8601 date-time"
    ]


def test_discovery_skips_testdata_and_hidden_folders(tmp_path: Path) -> None:
    for rel in (
        "a_test.yaml",
        "b/c_test.yml",
        "testdata/x_test.yaml",
        ".git/y_test.yaml",
        "d.yaml",
    ):
        write(tmp_path / "s" / rel, "tests: []\n")
    found, problems = discover([tmp_path / "s", tmp_path / "missing"])
    assert [f.relative_to(tmp_path / "s").as_posix() for f, _ in found] == [
        "a_test.yaml",
        "b/c_test.yml",
    ]
    assert [str(p) for p in problems] == [f"{tmp_path / 'missing'}: no such suite file or folder"]


def test_no_suites_at_all_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = run(tmp_path / "empty")
    assert report.exit_code == 2
    assert [p.message for p in report.problems] == ["no suite files (*_test.yaml) found"]


def test_suite_names_are_unique(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", "name: same\ntests: []\n")
    write(tmp_path / "s" / "b_test.yaml", "name: same\ntests: []\n")
    _, problems = load_suites([tmp_path / "s"], _tiny())
    assert [str(p) for p in problems] == [
        "s/b_test.yaml:1: suite name 'same' is also used by s/a_test.yaml"
    ]


def test_invalid_requests_are_errors_at_the_tests_line(tmp_path: Path) -> None:
    write(
        tmp_path / "s" / "r_test.yaml",
        """
        tests:
          - {name: fine, principal: User::"ann", action: read, resource: Doc::"d1", expect: allow}
          - {name: action, principal: User::"ann", action: reed, resource: Doc::"d1", expect: allow}
          - {name: type, principal: Usr::"ann", action: read, resource: Doc::"d1", expect: allow}
          - {name: context, principal: User::"ann", action: read, resource: Doc::"d1",
             context: {mfa: true}, expect: allow}
          - {name: also fine, principal: User::"ann", action: edit, resource: Doc::"d1", expect: allow}
        """,
    )
    report = run(tmp_path / "s")
    assert report.exit_code == 2
    status = {o.case.name: (o.status, o.case.where.line, o.failures) for o in report.outcomes}
    assert status["fine"][0] is status["also fine"][0] is Status.PASS
    assert status["action"][:2] == (Status.ERROR, 3)
    assert 'action `Action::"reed"` does not exist' in status["action"][2][0]
    assert status["type"][:2] == (Status.ERROR, 4)
    assert "principal type `Usr` is not declared in the schema" in status["type"][2][0]
    assert status["context"][:2] == (Status.ERROR, 5)
    assert "record attribute `mfa` should not exist" in status["context"][2][0]


def _tiny() -> Bundle:
    return load_bundle(TINY)
