from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pdp.model import EntityRef
from pdp.policytest.fixtures import parse_uid

from .helpers import run, write

GOOD_TEST = """
  - name: t
    principal: zed
    action: read
    resource: Doc::"d2"
    expect: allow
"""


def with_good_test(head: str) -> str:
    return textwrap.dedent(head).lstrip("\n") + GOOD_TEST


def problems(tmp_path: Path) -> list[str]:
    report = run(tmp_path / "policy_tests")
    assert report.exit_code == 2
    return [str(p) for p in report.problems]


def test_unknown_entity_type_in_a_suite_fixture_names_file_line_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "policy_tests" / "a_test.yaml",
        with_good_test(
            """
        principals:
          zed:
            uid: Usr::"zed"
            attrs: {}
        tests:
        """
        ),
    )
    (problem,) = problems(tmp_path)
    assert problem.startswith('policy_tests/a_test.yaml:3: Usr::"zed": ')
    assert "has type `Usr` which is not declared in the schema" in problem


def test_wrong_attribute_type_in_testdata_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "policy_tests" / "testdata" / "people.yaml",
        """
        principals:
          ann: User::"ann"
          zed:
            uid: User::"zed"
            attrs: {suspended: "no"}
        """,
    )
    write(tmp_path / "policy_tests" / "a_test.yaml", "tests:" + GOOD_TEST)
    (problem,) = problems(tmp_path)
    assert problem.startswith('policy_tests/testdata/people.yaml:4: User::"zed": ')
    assert "in attribute `suspended`" in problem and "expected to have type bool" in problem


def test_cedar_json_entity_set_is_located_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "policy_tests" / "testdata" / "extra.json",
        """
        [
          {"uid": {"type": "User", "id": "ok"}, "attrs": {"suspended": false}, "parents": []},
          {"uid": {"type": "User", "id": "zed"},
           "attrs": {"suspended": false, "age": 3}, "parents": []}
        ]
        """,
    )
    write(
        tmp_path / "policy_tests" / "a_test.yaml",
        """
        tests:
          - name: t
            principal: User::"zed"
            action: read
            resource: Doc::"d2"
            entities: [extra]
            expect: allow
        """,
    )
    (problem,) = problems(tmp_path)
    assert problem.startswith('policy_tests/testdata/extra.json:3: User::"zed": ')
    assert "age" in problem


def test_fixtures_may_not_redefine_bundle_entities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "policy_tests" / "a_test.yaml",
        with_good_test(
            """
        principals:
          zed: {uid: User::"ann", attrs: {suspended: true}}
        tests:
        """
        ),
    )
    assert problems(tmp_path) == [
        'policy_tests/a_test.yaml:2: User::"ann": redefines an entity of the bundle '
        "(request entities may only add entities)"
    ]


def test_one_entity_defined_twice_differently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "policy_tests" / "a_test.yaml",
        with_good_test(
            """
        principals:
          zed: {uid: User::"zed", attrs: {suspended: true}}
        entity_sets:
          more:
            - {uid: User::"zed", attrs: {suspended: false}}
        entities: [more]
        tests:
        """
        ),
    )
    assert problems(tmp_path) == [
        'policy_tests/a_test.yaml:5: User::"zed" is defined twice, differently '
        "(also at policy_tests/a_test.yaml:2)"
    ]


def test_suite_fixtures_override_testdata_and_deeper_testdata_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "policy_tests"
    write(root / "testdata" / "p.yaml", 'principals: {zed: User::"ben", who: User::"ben"}\n')
    write(root / "sub" / "testdata" / "p.yaml", 'principals: {who: User::"ann"}\n')
    write(
        root / "sub" / "a_test.yaml",
        """
        principals:
          zed: User::"cat"
        tests:
          - {name: suite wins, principal: zed, action: read, resource: Doc::"d1",
             expect: {decision: allow, determining: [share-d1-with-cat]}}
          - {name: deeper testdata wins, principal: who, action: edit, resource: Doc::"d1",
             expect: {decision: allow, determining: [owner-edit]}}
        """,
    )
    report = run(root)
    assert report.problems == ()
    assert [o.status.value for o in report.outcomes] == ["pass", "pass"]


def test_parse_uid_forms() -> None:
    assert parse_uid('User::"a\\"b"') == EntityRef("User", 'a"b')
    assert parse_uid('Ns::User::"x"') == EntityRef("Ns::User", "x")
    assert parse_uid({"type": "User", "id": "x"}) == EntityRef("User", "x")
    assert parse_uid({"__entity": {"type": "User", "id": "x"}}) == EntityRef("User", "x")
    with pytest.raises(ValueError):
        parse_uid("User::x")


def test_a_name_defined_in_two_testdata_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "policy_tests" / "testdata" / "a.yaml", 'principals: {zed: User::"ann"}\n')
    write(tmp_path / "policy_tests" / "testdata" / "b.yaml", 'principals: {zed: User::"ben"}\n')
    write(tmp_path / "policy_tests" / "testdata" / "c.yaml", "tests: []\n")
    write(tmp_path / "policy_tests" / "a_test.yaml", "tests:" + GOOD_TEST)
    assert problems(tmp_path) == [
        "policy_tests/testdata/b.yaml: principal 'zed' defined twice (also in policy_tests/testdata/a.yaml)",
        "policy_tests/testdata/c.yaml:1: tests: a testdata file holds only fixtures",
    ]
