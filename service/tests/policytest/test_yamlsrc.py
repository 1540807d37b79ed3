from __future__ import annotations

from pathlib import Path

import pytest

from pdp.policytest.model import SuiteInvalid
from pdp.policytest.yamlsrc import key_line, load_yaml

from .helpers import write


def test_lines_of_nodes_and_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a_test.yaml",
        """
        name: a
        tests:
          - name: one
            principal: bob
          - name: two
            when: 2026-11-29
        """,
    )
    doc = load_yaml(path, "a_test.yaml")
    assert doc.line(("tests", 1)) == 5
    assert doc.line(("tests", 1, "name")) == 5
    assert doc.line(("tests", 0, "principal")) == 4
    assert doc.line(("tests", 7, "name")) == 3  # deepest existing node: the tests list
    assert key_line(doc.node(("tests", 1)), "when") == 6
    assert doc.data["tests"][1]["when"] == "2026-11-29"  # a timestamp stays a string, as in JSON
    assert str(doc.where(("tests", 0))) == "a_test.yaml:3"


def test_duplicate_key_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d_test.yaml", "name: a\ntests: []\nname: b\n")
    with pytest.raises(SuiteInvalid) as err:
        load_yaml(path, "d_test.yaml")
    assert [str(p) for p in err.value.problems] == ["d_test.yaml:3: duplicate key 'name'"]


def test_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s_test.yaml", "name: a\ntests:\n  - name: [unclosed\n")
    with pytest.raises(SuiteInvalid) as err:
        load_yaml(path, "s_test.yaml")
    (problem,) = err.value.problems
    assert problem.where.file == "s_test.yaml"
    assert problem.where.line == 4
    assert problem.message.startswith("invalid YAML:")
