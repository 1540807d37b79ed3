"""Attacks on the policy index: the cost of a request the caller picks."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pdp.bundle import Bundle, load_bundle
from pdp.engine import Engine, Snapshot
from pdp.model import CheckInput, Decision, EntityRef
from pdp.policy_index import PolicyIndex

GENERAL, PER_USER = 2000, 300


def general_policies(n: int) -> list[str]:
    """`n` policies whose scope matches every read (each principal's sub-set holds them)."""
    return [
        f'permit (principal, action == Action::"read", resource) when '
        f"{{ context has x && context.x == {i} }};"
        for i in range(n)
    ]


def write_bundle(root: Path, policies: list[str], links: list[Any] | None = None) -> Bundle:
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"name": "idx", "version": "1"}))
    (root / "schema.cedarschema").write_text(
        "entity User; entity Doc;\n"
        "action read appliesTo { principal: [User], resource: [Doc], context: { x?: Long } };\n"
    )
    (root / "policies.cedar").write_text("\n".join(policies) + "\n")
    if links is not None:
        (root / "links.json").write_text(json.dumps(links))
    bundle = load_bundle(root)
    assert bundle.index is not None
    return bundle


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[policies the index has parsed on the request path (`PolicyIndex._parse`)]"""
    count = [0]
    original = PolicyIndex._parse  # noqa: SLF001

    def counted(self: PolicyIndex, statics: tuple[int, ...]) -> Any:
        count[0] += len(statics)
        return original(self, statics)

    monkeypatch.setattr(PolicyIndex, "_parse", counted)
    return count


def test_a_callers_choice_of_principal_does_not_reparse_the_bundle(
    tmp_path: Path, parsed: list[int]
) -> None:
    # A sub-set of static policies is built by parsing every policy in it again
    # (`PolicyIndex._parse`, ~0.03 ms a policy here). In a bundle with many scope-general
    # policies and per-user static ones, each principal the caller names selects its own
    # sub-set (general + its one policy), so every new principal costs a parse of all the
    # general policies: ~73 ms a Check against ~5.6 ms for the whole set unindexed
    # (in-process, 20 distinct users, 2000 general + 300 per-user policies). Past the LRU
    # bounds (MAX_BASES 256, MAX_SUBSETS 1024: distinct users x per-resource policies
    # reach them at once) it never stops.
    policies = general_policies(GENERAL) + [
        f'permit (principal == User::"u{i}", action == Action::"read", resource);'
        for i in range(PER_USER)
    ]
    engine = Engine(Snapshot.of({"default": write_bundle(tmp_path / "b", policies)}))
    checks = 20
    for i in range(checks):
        user = EntityRef("User", f"u{i}")
        engine.check("", CheckInput(user, EntityRef("Action", "read"), EntityRef("Doc", "d")))
    # Amortised: at most a few whole bundles' worth of policies parsed for 20 checks.
    assert parsed[0] <= 3 * (GENERAL + PER_USER), f"{parsed[0]} policies parsed for {checks} checks"


def test_a_sub_set_with_links_and_many_statics_is_linked_onto_the_loaded_set(
    tmp_path: Path, parsed: list[int]
) -> None:
    # Where a request's static policies are too many to parse on the request path
    # (`MAX_PARSED`), its links are linked onto the bundle's static set parsed at load
    # (a superset of what can match, as exact): nothing is parsed, the answers are the
    # whole set's, and the links of other documents still stay out.
    general, users, docs = 100, 30, 40  # general > MAX_PARSED
    policies = general_policies(general) + [
        f'@id("user-{i}")\nforbid (principal == User::"u{i}", action, resource == Doc::"d0");'
        for i in range(users)
    ]
    policies.append(
        '@id("share")\npermit (principal == ?principal, action == Action::"read", '
        "resource == ?resource);"
    )
    links = [
        {
            "template_id": "share",
            "new_id": f"share-d{d}-u{u}",
            "values": {
                "?principal": {"type": "User", "id": f"u{u}"},
                "?resource": {"type": "Doc", "id": f"d{d}"},
            },
        }
        for d in range(docs)
        for u in range(users)
        if (d + u) % 3 == 0
    ]
    bundle = write_bundle(tmp_path / "b", policies, links)
    assert bundle.index is not None
    indexed = Engine(Snapshot.of({"default": bundle}))
    whole = Engine(Snapshot.of({"default": dataclasses.replace(bundle, index=None)}))
    read = EntityRef("Action", "read")
    requests = [
        CheckInput(EntityRef("User", f"u{u}"), read, EntityRef("Doc", f"d{d}"))
        for u in range(users)
        for d in range(0, docs, 7)
    ]
    seen: Counter[str] = Counter()
    for r in requests:
        got, want = indexed.check("", r), whole.check("", r)
        assert (got.decision, sorted(got.determining_policies)) == (
            want.decision,
            sorted(want.determining_policies),
        ), r
        seen[str(got.decision)] += 1
        seen["shared"] += any(p.startswith("share-") for p in got.determining_policies)
    assert parsed[0] == 0, f"{parsed[0]} policies parsed for {len(requests)} checks"
    assert bundle.index.built >= 50  # sub-sets (one per link chosen), not the whole set
    assert seen["shared"] >= 20 and seen[str(Decision.DENY)] >= 20, seen
