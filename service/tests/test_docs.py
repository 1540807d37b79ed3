"""The docs are true: every `pdp check` in the README, run against the default bundle,
prints the decision and determining policies the README shows; docs/checklist.md places
every policy of the bundle and names only tests that exist."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from pdp.bundle import load_bundle
from pdp.cli import main

from .support import REPO

_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
_PROMPT = "$ .venv/bin/pdp "
_VERDICT = re.compile(r"^(ALLOW|DENY)  \(determined by: (.*)\)$")


def walkthrough() -> list[tuple[list[str], str, set[str]]]:
    """(pdp arguments, decision, determining policies) of each `pdp check` in the README."""
    out = []
    for block in _BLOCK.findall((REPO / "README.md").read_text()):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith(_PROMPT + "check "):
                i += 1
                continue
            command = lines[i][len(_PROMPT) :]
            while True:  # continued with a backslash, or inside an open quote
                try:
                    args = shlex.split(command)
                    if not command.endswith("\\"):
                        break
                except ValueError:
                    pass
                i += 1
                command = command.removesuffix("\\") + "\n" + lines[i]
            i += 1
            verdict = _VERDICT.match(lines[i])
            assert verdict, f"no decision line after {command!r}"
            out.append((args, verdict[1], set(verdict[2].split(", "))))
    return out


EXAMPLES = walkthrough()


def test_the_walkthrough_has_its_examples() -> None:
    # The README promises step-up and agent retrieval examples, allowed and denied.
    said = {p for _, _, ps in EXAMPLES for p in ps}
    assert {"step-up-mfa", "agent-retrieve-allowlisted-source", "agent-token-ceiling"} <= said
    assert len(EXAMPLES) >= 9


@pytest.mark.parametrize(("args", "decision", "determining"), EXAMPLES)
def test_each_example_prints_what_the_readme_shows(
    args: list[str],
    decision: str,
    determining: set[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(args)
    first = capsys.readouterr().out.splitlines()[0]
    verdict = _VERDICT.match(first)
    assert verdict, first
    assert (verdict[1], set(verdict[2].split(", "))) == (decision, determining)
    assert code == (0 if decision == "ALLOW" else 1)


CHECKLIST = REPO / "docs" / "checklist.md"
_SUITE_REF = re.compile(r"`([\w/]+_test\.yaml)` › ([^;|]*)")
_PYTEST_REF = re.compile(r"`(service/tests/[\w/]+\.py)` › ([^;|]*)")
_NAMES = re.compile(r"`([^`]+)`")


def test_the_checklist_places_every_policy_of_the_bundle() -> None:
    text = CHECKLIST.read_text()
    bundle = load_bundle(REPO / "policies")
    ids = {s.policy_id for s in bundle.policies.values() if s.template_id is None}  # no links
    assert "grant-document-access" in ids and len(ids) == 38
    assert sorted(i for i in ids if f"`{i}`" not in text) == []


def test_the_checklist_names_only_tests_that_exist() -> None:
    text = CHECKLIST.read_text()
    suites = _SUITE_REF.findall(text)
    pytests = _PYTEST_REF.findall(text)
    assert len(suites) >= 30 and len(pytests) >= 5  # the patterns still match the table
    for path, names in suites:
        doc = yaml.safe_load((REPO / "policy_tests" / path).read_text())
        known = {t["name"] for t in doc.get("tests", []) + doc.get("matrix", [])}
        missing = set(_NAMES.findall(names)) - known
        assert not missing, f"{path}: {missing}"
    for path, names in pytests:
        source = (REPO / path).read_text()
        missing = {n for n in _NAMES.findall(names) if f"def {n}(" not in source}
        assert not missing, f"{path}: {missing}"
