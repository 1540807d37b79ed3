"""The manifest's trust keys are checked against the schema when a bundle loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pdp.bundle import load_bundle
from pdp.errors import BundleError

from .support import REPO

SCHEMA = """
entity Tag;
entity Group in [Group, Tag];
entity User in [Group];
entity Doc;
action view appliesTo { principal: User, resource: Doc };
"""
ENTITIES = [
    {"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Doc", "id": "d1"}, "attrs": {}, "parents": []},
]


def problems(tmp_path: Path, **manifest: Any) -> list[str]:
    (tmp_path / "schema.cedarschema").write_text(SCHEMA)
    (tmp_path / "entities.json").write_text(json.dumps(ENTITIES))
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "t", "version": "1", **manifest}))
    with pytest.raises(BundleError) as err:
        load_bundle(tmp_path)
    return [str(p) for p in err.value.problems]


UNDECLARED = "entity type 'Nope' is not declared in the schema"


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            {"request_entities": {"Nope": {}}},
            f"manifest.json: request_entities.Nope: {UNDECLARED}",
        ),
        (
            {"authoritative_types": ["User", "Nope"]},
            f"manifest.json: authoritative_types[1]: {UNDECLARED}",
        ),
        (
            # An action is not an entity type a request could supply.
            {"request_entities": {"Action": {}}},
            "manifest.json: request_entities.Action: entity type 'Action' is not declared in "
            "the schema",
        ),
        (
            {"authoritative_types": ["Group"], "request_entities": {"Group": {}}},
            "manifest.json: request_entities.Group: type Group is also listed in "
            "authoritative_types; a request may never supply it",
        ),
        (
            # User has base entities, so it is authoritative unless the manifest says otherwise.
            {"request_entities": {"User": {}}},
            "manifest.json: request_entities.User: type User has entities in entities.json, so "
            "it is authoritative by default (list authoritative_types to let requests supply "
            "it); a request may never supply it",
        ),
        (
            {"request_entities": {"Group": {"parents": ["Tag", "Doc"]}}},
            "manifest.json: request_entities.Group.parents[1]: the schema does not allow Doc as "
            "a parent of Group",
        ),
        (
            {"request_entities": {"Group": {"parents": ["Nope"]}}},
            f"manifest.json: request_entities.Group.parents[0]: {UNDECLARED}",
        ),
        (
            {"request_entities": "trusted", "authoritative_types": []},
            'manifest.json: authoritative_types: has no effect with "request_entities": '
            '"trusted" (the caller is trusted with every entity it sends)',
        ),
        (
            {"request_entities": {"Group": {"parent": ["Group"]}}},
            "manifest.json: request_entities.Group.parent: Extra inputs are not permitted",
        ),
        (
            {"request_entities": "trustd"},
            'manifest.json: request_entities: Value error, must be "trusted" or an object '
            'mapping entity types to {"parents": [...]}',
        ),
        (
            {"request_entities": None},  # never read as "trusted"
            'manifest.json: request_entities: Value error, must be "trusted" or an object '
            'mapping entity types to {"parents": [...]}',
        ),
    ],
)
def test_trust_keys_are_checked_against_the_schema(
    tmp_path: Path, manifest: dict[str, Any], expected: str
) -> None:
    assert expected in problems(tmp_path, **manifest)


def test_declarations_the_schema_allows_load(tmp_path: Path) -> None:
    (tmp_path / "schema.cedarschema").write_text(SCHEMA)
    (tmp_path / "entities.json").write_text(json.dumps(ENTITIES))
    manifest = {"request_entities": {"Group": {"parents": ["Group", "Tag"]}, "Tag": {}}}
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "t", "version": "1", **manifest}))
    trust = load_bundle(tmp_path).trust
    assert trust.allowed == {"Group": {"Group", "Tag"}, "Tag": set()}
    assert trust.authoritative == {"User", "Doc", "Action"}  # the default: types with entities


def test_the_default_bundle_states_its_trust() -> None:
    manifest = json.loads((REPO / "policies" / "manifest.json").read_text())
    assert manifest["request_entities"] == {}
    trust = load_bundle(REPO / "policies").trust
    # Every entity type of its schema is the bundle's to define.
    assert set(manifest["authoritative_types"]) == trust.authoritative
    assert len(trust.authoritative) == 11
