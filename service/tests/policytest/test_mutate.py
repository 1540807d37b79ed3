from __future__ import annotations

from pathlib import Path

import pytest

from pdp.bundle import compile_bundle, load_bundle
from pdp.bundle_files import read_bundle_files
from pdp.policytest.mutate import _effect_at, mutants

from .helpers import TINY, run, write
from .suites import DECISIONS_ONLY, PINNED


def test_a_policy_no_test_pins_survives(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY)
    report = run(tmp_path / "s", mutate=True)
    m = report.mutation
    assert m is not None
    assert (len(m.results), m.count("killed"), m.count("survived"), m.count("invalid")) == (
        13,
        11,
        2,
        0,
    )
    assert [str(r.mutant) for r in m.survivors] == [
        "remove suspended-no-edit (rules.cedar:18)",
        "flip suspended-no-edit (rules.cedar:18)",
    ]
    killed = {str(r.mutant): r.killed_by for r in m.results if r.status == "killed"}
    assert killed["unlink share-d1-with-cat (links.json)"] == ("a/share",)
    assert killed["remove suspended-deny (rules.cedar:13)"] == ("a/suspended reads nothing",)
    assert report.exit_code == 1  # all tests pass, but mutants survive


def test_pinning_the_determining_policies_kills_every_mutant(tmp_path: Path) -> None:
    write(tmp_path / "s" / "a_test.yaml", PINNED)
    report = run(tmp_path / "s", mutate=True)
    assert report.mutation is not None and report.mutation.survivors == ()
    assert report.exit_code == 0


def test_failing_tests_do_not_kill_mutants(tmp_path: Path) -> None:
    write(
        tmp_path / "s" / "a_test.yaml", DECISIONS_ONLY.replace("expect: allow}", "expect: deny}", 1)
    )
    report = run(tmp_path / "s", mutate=True)
    assert report.mutation is not None
    # "owner edits" fails on the bundle itself, so nothing pins owner-edit any more.
    status = {str(r.mutant): r.status for r in report.mutation.results}
    assert status["remove owner-edit (rules.cedar:8)"] == "survived"
    assert status["flip owner-edit (rules.cedar:8)"] == "survived"


def test_mutants_compile_and_keep_ids_and_lines() -> None:
    files = read_bundle_files(TINY)
    bundle = load_bundle(TINY)
    made = list(mutants(files, bundle))
    kinds = [(m.kind, m.policy_id) for m in made]
    assert ("unlink", "share-d1-with-cat") in kinds and ("flip", "share") in kinds
    for m in made:
        mutated = compile_bundle(m.files)
        ids = {(s.policy_id, s.line) for s in mutated.policies.values() if s.template_id is None}
        original = {
            (s.policy_id, s.line) for s in bundle.policies.values() if s.template_id is None
        }
        if m.kind == "unlink":
            assert ids == original - {("share-d1-with-cat", 27)}
        else:
            assert ids == original
        if m.kind == "flip":
            flipped = {s.policy_id: s.effect for s in mutated.policies.values()}
            before = {s.policy_id: s.effect for s in bundle.policies.values()}
            assert flipped[m.policy_id] != before[m.policy_id]


@pytest.mark.parametrize(
    "statement",
    [
        "permit(principal, action, resource);",
        '\n// forbid( in a comment\n@id("a;permit(")\n@x\n forbid (principal, action, resource);',
        '@note("say \\"permit(\\" twice") @id ("b")\npermit(principal, action, resource);',
    ],
)
def test_the_effect_keyword_is_found_past_comments_and_annotations(statement: str) -> None:
    last = max(statement.rfind("permit("), statement.rfind("forbid ("))
    assert _effect_at(statement) == last
