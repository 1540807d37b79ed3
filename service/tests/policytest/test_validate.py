from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.policytest.validate import _validator, checker, conforms, suite_schema, validate
from pdp.policytest.yamlsrc import load_yaml

from .helpers import write


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path / "x_test.yaml", text)
    return [str(p) for p in validate(load_yaml(path, "x_test.yaml"))]


def test_valid_suite_has_no_problems(tmp_path: Path) -> None:
    assert (
        problems(
            tmp_path,
            """
            name: ok
            now: "2026-11-29T10:00:00Z"
            principals:
              ann: User::"ann"
              zed: {uid: {type: User, id: zed}, attrs: {suspended: false}, parents: [Team::"staff"]}
            tests:
              - name: t
                principal: ann
                actions: [read, Action::"edit"]
                resource: Doc::"d1"
                expect: {decision: allow, determining: [owner-edit], errors: false}
            matrix:
              - name: m
                principals: [ann]
                resources: [Doc::"d1"]
                actions: [read]
                allow: [{principal: ann, resource: Doc::"d1", actions: [read]}]
            """,
        )
        == []
    )


def test_each_problem_names_the_line_of_its_cause(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        name: bad
        tests:
          - name: typo
            principle: ann
            principal: ann
            action: read
            resource: d1
            expect: allow
          - name: decision
            principal: ann
            action: read
            resource: d1
            expect: {decision: maybe}
          - name: both
            principal: ann
            action: read
            actions: [edit]
            resource: d1
            expect: deny
        matrix:
          - name: m
            principals: []
            resources: [d1]
            actions: [read]
        """,
    )
    assert found == [
        "x_test.yaml:4: tests[0]: Additional properties are not allowed "
        "('principle' was unexpected)",
        "x_test.yaml:13: tests[1].expect.decision: 'maybe' is not one of "
        "['allow', 'deny', 'ALLOW', 'DENY', 'Allow', 'Deny']",
        "x_test.yaml:14: tests[2]: give either `action` or `actions`, not both",
        "x_test.yaml:22: matrix[0].principals: [] should be non-empty",
    ]


def test_a_suite_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "- a\n- b\n") == [
        "x_test.yaml:1: must be a mapping (name, tests, matrix, fixtures...)"
    ]


# The fast path must never accept what the schema refuses.
_parts: dict[str, Any] = {
    "name": st.sampled_from(["t", "", 3, None, "a b"]),
    "description": st.sampled_from(["d", 1]),
    "principal": st.sampled_from(
        [
            "bob",
            'User::"bob"',
            'Ns::User::"b"',
            "bad name!",
            {"type": "User", "id": "b"},
            5,
            "User::bob",
        ]
    ),
    "resource": st.sampled_from(["d1", 'Doc::"d1"', "", ["d1"], {"type": "Doc"}]),
    "action": st.sampled_from(["read", 'Action::"read"', "re ad", "", ["read"], None]),
    "actions": st.lists(st.sampled_from(["read", "edit", 'Action::"x"', "b a d", 1]), max_size=3),
    "context": st.sampled_from([{}, {"a": 1}, [], "x"]),
    "entities": st.sampled_from([[], ["set"], ["set", "set"], ["bad name"], "set"]),
    "skip": st.sampled_from(["", "reason", 1]),
    "expect": st.sampled_from(
        [
            "allow",
            "DENY",
            "maybe",
            {"decision": "allow"},
            {"decision": "allow", "determining": ["a"]},
            {"decision": "allow", "determining": ["a", "a"]},
            {"decision": "allow", "determining_includes": [""]},
            {"decision": "x"},
            {"determining": []},
            {"decision": "deny", "errors": True},
            {"decision": "deny", "errors": ["p"]},
            {"decision": "deny", "errors": "yes"},
            {"decision": "deny", "annotations": {"k": "v"}},
            {"decision": "deny", "annotations": {"k": 1}},
            {"decision": "deny", "extra": 1},
        ]
    ),
    "extra": st.just(1),
}
_items = st.fixed_dictionaries(
    {"name": _parts["name"], "principal": _parts["principal"], "resource": _parts["resource"]},
    optional={k: v for k, v in _parts.items() if k not in ("name", "principal", "resource")},
)


# No deadline: speed is measured in bench/, never asserted; on a loaded machine the first
# example (it imports jsonschema) took 268 ms and failed the 200 ms default.
@settings(deadline=None)
@given(_items)
def test_fast_reading_agrees_with_jsonschema(item: dict[str, Any]) -> None:
    valid = not list(_validator("#/$defs/test").iter_errors(item))
    assert conforms(item, "test") == valid


def test_the_shipped_schema_is_a_valid_json_schema() -> None:
    jsonschema.validators.validator_for(suite_schema()).check_schema(suite_schema())


def test_fast_reading_takes_the_usual_forms() -> None:
    usual = {
        "name": "t",
        "principal": "bob",
        "action": "read",
        "resource": 'Doc::"d1"',
        "context": {"n": 1},
        "entities": ["set"],
        "expect": {"decision": "deny", "determining": [], "errors": ["p"]},
    }
    assert conforms(usual, "test")
    assert conforms({**usual, "expect": "allow"}, "test")
    assert not conforms({**usual, "actions": ["read"]}, "test")
    assert not checker({"not": {}})(usual)  # a keyword it does not know: ask jsonschema


_uids = st.sampled_from(['User::"a"', {"type": "User", "id": "a"}, {"type": "", "id": "a"}, "a", 1])
_entities = st.fixed_dictionaries(
    {"uid": _uids},
    optional={
        "attrs": st.sampled_from([{}, {"org": {"type": "Org", "id": "x"}}, []]),
        "parents": st.lists(_uids, max_size=2),
        "tags": st.sampled_from([{}, "t"]),
        "extra": st.just(True),
    },
)
_matrices = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["m", ""]),
        "principals": st.lists(_parts["principal"], max_size=2),
        "resources": st.lists(_parts["resource"], max_size=2),
        "actions": st.lists(_parts["action"], max_size=2),
    },
    optional={
        "allow": st.lists(
            st.fixed_dictionaries(
                {"principal": _parts["principal"], "resource": _parts["resource"]},
                optional={"actions": _parts["actions"]},
            ),
            max_size=2,
        ),
        "entities": _parts["entities"],
        "context": _parts["context"],
    },
)


@settings(deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": _parts["name"],
            "principals": st.dictionaries(
                st.sampled_from(["ann", "bad name", 3]), _uids | _entities
            ),
            "entity_sets": st.dictionaries(
                st.sampled_from(["s", "t"]), st.lists(_entities, max_size=2)
            ),
            "now": st.sampled_from(
                ["2026-01-01", {"value": "x", "format": "epoch"}, {"format": "x"}]
            ),
            "matrix": st.lists(_matrices, max_size=2),
            "entities": _parts["entities"],
        },
    )
)
def test_fast_reading_agrees_with_jsonschema_on_whole_documents(doc: dict[str, Any]) -> None:
    valid = not list(_validator(None).iter_errors(doc))
    assert conforms(doc) == valid
