"""Checking a write's entities with Cedar's own entity parsing, with or without a schema.

Cedar decides what a well-formed entity is and what the schema allows (unknown type,
missing or mistyped attribute, a parent of a type the schema does not allow); this module
only finds *which* entity of a write Cedar refused (`pdp.bundle.locate_entity_errors`
bisects with Cedar) and says so as an `EntityRejected`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import cedarpy

from pdp.bundle import locate_entity_errors
from pdp.entity_store.api import Validator
from pdp.errors import EntityRejected

FIELD = "upserts"


def entity_list_text(upserts: Sequence[Mapping[str, Any]]) -> str:
    """A JSON list with entity i on line i + 2 (json.dumps escapes newlines in strings), so
    a line Cedar's bisection reports names the entity's index."""
    return "[\n" + ",\n".join(json.dumps(e, separators=(",", ":")) for e in upserts) + "\n]"


def parse_entities(upserts: Sequence[Mapping[str, Any]], schema: Any = None) -> Any:
    """`cedarpy.Entities` of the upserts, or `EntityRejected` naming the first refused one."""
    text = entity_list_text(upserts)
    try:
        return cedarpy.Entities.from_json_str(text, schema, release_gil=True)
    except ValueError as exc:
        problem = locate_entity_errors(FIELD, text, schema, str(exc))[0]
        if problem.line is None or not 2 <= problem.line < len(upserts) + 2:
            raise EntityRejected(FIELD, problem.message) from None
        index = problem.line - 2
        uid = _uid_of(upserts[index])
        # locate_entity_errors prefixes the entity's uid as JSON; EntityRejected names it.
        label = json.dumps(upserts[index].get("uid")) + ": "
        reason = problem.message.removeprefix(label) if uid is not None else problem.message
        raise EntityRejected(f"{FIELD}[{index}]", reason, index=index, uid=uid) from None


def schema_validator(schema: Any) -> Validator:
    """A `validate` for `EntityStore.write`: every upsert must parse with `schema` (a
    `cedarpy.Schema`, as a bundle holds it)."""

    def validate(upserts: Sequence[Mapping[str, Any]]) -> None:
        if upserts:
            parse_entities(upserts, schema)

    return validate


def _uid_of(entity: Mapping[str, Any]) -> tuple[str, str] | None:
    """The uid an entity names, if it names one plainly (for the error message only)."""
    uid = entity.get("uid") if isinstance(entity, Mapping) else None
    if isinstance(uid, Mapping) and isinstance(uid.get("__entity"), Mapping):
        uid = uid["__entity"]
    if isinstance(uid, Mapping) and isinstance(uid.get("type"), str):
        if isinstance(uid.get("id"), str):
            return uid["type"], uid["id"]
    return None
