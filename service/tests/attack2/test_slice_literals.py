"""attack2: an entity literal whose data a policy reads must be in every slice, wherever
it sits in the expression (`pdp.read_depth.read_literals`). Through `if`/record literals
the root is lost (the list walk keeps the last operand of the longest chain), so the
literal is left out of the slice and `in`/`has` on the missing entity is silently false:
a `forbid` does not apply and the decision differs from Cedar's on the whole graph."""

from __future__ import annotations

import json
from pathlib import Path

import cedarpy
import pytest

from pdp.read_depth import policy_reach

from ..entity.support import (
    ALLOW,
    DENY,
    check,
    document,
    group,
    org,
    ref,
    store_server,
    user,
    write,
    write_bundle,
)

FALLBACK = (
    '(if context has approver then context.approver else User::"fallback") in Group::"suspended"'
)
RECORD = '{a: User::"fallback", b: principal}.a in Group::"suspended"'

POLICIES = """
@id("all-read")
permit(principal, action == Action::"read", resource);

@id("blocked")
forbid(principal, action == Action::"read", resource) when { %s };
"""


def _est(condition: str) -> dict[str, object]:
    text = POLICIES % condition
    ests = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    return next(e for e in ests.values() if e["effect"] == "forbid")


@pytest.mark.parametrize("condition", [FALLBACK, RECORD])
def test_literal_read_through_if_or_record_is_collected(condition: str) -> None:
    _, literals = policy_reach(_est(condition))
    assert ("User", "fallback") in literals


@pytest.mark.parametrize("condition", [FALLBACK, RECORD])
def test_sliced_decision_equals_whole_graph_for_literal_under_if(
    tmp_path: Path, condition: str
) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    (bundle / "policies.cedar").write_text(POLICIES % condition)
    stored = [
        org("acme"),
        group("suspended"),
        user("fallback", ref("Group", "suspended")),
        user("alice"),
        document("doc1", "alice"),
    ]
    # Cedar on the whole graph: the forbid applies.
    whole = cedarpy.is_authorized(
        {
            "principal": 'User::"alice"',
            "action": 'Action::"read"',
            "resource": 'Document::"doc1"',
            "context": {},
        },
        POLICIES % condition,
        stored,
    )
    assert whole.decision == cedarpy.Decision.Deny
    with store_server(tmp_path) as (_, checks, entities):
        write(entities, stored)
        got = checks.Check(check("alice", "read", "doc1"), timeout=30)
        assert got.decision == DENY, f"slice decided {got.decision} (ALLOW={ALLOW})"
