"""Policies that read deeper than a decision's slice are refused at bundle load."""

from __future__ import annotations

import json

import cedarpy
import pytest

from pdp.bundle import compile_bundle
from pdp.bundle_files import BundleFiles
from pdp.errors import BundleError
from pdp.read_depth import policy_reach

SCHEMA = b"""
entity Group in [Group];
entity User in [Group] { manager?: User, level: Long, address: { city: String } };
action read appliesTo { principal: User, resource: User, context: { boss?: User } };
"""


def files(policy: str) -> BundleFiles:
    return BundleFiles(
        "test",
        {
            "manifest.json": b'{"name": "t", "version": "1"}',
            "schema.cedarschema": SCHEMA,
            "p.cedar": policy.encode(),
        },
    )


def reach(text: str) -> tuple[int, str]:
    est = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]["policy0"]
    r, _ = policy_reach(est)
    return r.depth, r.chain


def test_a_chain_past_the_depth_is_refused_naming_policy_line_and_chain() -> None:
    deep = (
        '\n@id("deep-forbid")\nforbid(principal, action, resource) when '
        "{ principal has manager && principal.manager has manager && "
        "principal.manager.manager has manager && "
        'principal.manager.manager.manager in Group::"suspended" };\n'
    )
    with pytest.raises(BundleError) as err:
        compile_bundle(files(deep))
    [problem] = err.value.problems
    assert str(problem).startswith("p.cedar:2 [deep-forbid]: reads 3 entity hops deep")
    assert "principal.manager.manager.manager in …" in problem.message
    assert "past the slice depth 2" in problem.message
    # A deployment that raises the depth admits it.
    assert compile_bundle(files(deep), 3).slice_depth == 3


def test_reads_within_the_depth_load() -> None:
    within = (
        "permit(principal, action, resource) when { principal has manager && "
        "principal.manager has manager && principal.manager.manager.level > 1 };"
    )
    assert compile_bundle(files(within)).slice_depth == 2


@pytest.mark.parametrize(
    ("policy", "depth"),
    [
        ("permit(principal, action, resource);", 0),
        ('permit(principal in Group::"g", action, resource);', 0),
        ("permit(principal, action, resource) when { principal.level > 1 };", 0),
        # Without types, a record field counts as a hop: over-approximated, never under.
        ('permit(principal, action, resource) when { principal.address.city == "x" };', 1),
        ("permit(principal, action, resource) when { principal.manager.manager.level > 1 };", 2),
        ('permit(principal, action, resource) when { principal.manager in Group::"g" };', 1),
        (
            'permit(principal, action, resource) when { principal.manager is User in Group::"g" };',
            1,
        ),
        ("permit(principal, action, resource) when { context.boss.manager has level };", 2),
        ('permit(principal, action, resource) when { principal.manager.getTag("t") == 1 };', 1),
        # Where an entity comes from is not tracked through `if`: its chains count.
        (
            "permit(principal, action, resource) when "
            "{ (if principal.level > 1 then principal.manager else resource).level > 1 };",
            1,
        ),
        ('permit(principal, action, resource) when { User::"boss".manager.level > 1 };', 1),
    ],
)
def test_the_count(policy: str, depth: int) -> None:
    assert reach(policy)[0] == depth


def test_every_literal_of_scope_and_conditions_is_collected() -> None:
    # Fail closed: a literal not read directly may still be read through `if`/records
    # (tests/attack2/test_slice_literals.py), so every one is a slice seed.
    est = json.loads(
        cedarpy.policies_to_json_str(
            'permit(principal == User::"a", action, resource in Group::"g") when '
            '{ User::"boss".level > 1 && User::"x" in Group::"h" && resource == User::"y" };'
        )
    )["staticPolicies"]["policy0"]
    _, literals = policy_reach(est)
    assert literals == {
        ("User", "a"),
        ("Group", "g"),
        ("User", "boss"),
        ("User", "x"),
        ("Group", "h"),
        ("User", "y"),
    }
