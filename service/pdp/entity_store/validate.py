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


COMPACT = json.JSONEncoder(separators=(",", ":"))


def entity_texts(upserts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each entity as compact JSON (ASCII: its length is its size in bytes)."""
    return [COMPACT.encode(e) for e in upserts]


def parse_entities(
    upserts: Sequence[Mapping[str, Any]], schema: Any = None, texts: Sequence[str] | None = None
) -> Any:
    """`cedarpy.Entities` of the upserts (`texts`: their `entity_texts`, if made already),
    or `EntityRejected` naming the first one Cedar refused."""
    # Entity i on line i + 2 (JSON escapes newlines inside strings), so the line Cedar's
    # bisection reports names the entity's index.
    text = "[\n" + ",\n".join(entity_texts(upserts) if texts is None else texts) + "\n]"
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


class SchemaValidator:
    """A `validate` for `EntityStore.write`: every upsert must parse with `schema` (a
    `cedarpy.Schema`, as a bundle holds it). A store that knows this class parses a write
    once, with the schema, instead of validating and then parsing again."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def __call__(self, upserts: Sequence[Mapping[str, Any]]) -> None:
        if upserts:
            parse_entities(upserts, self.schema)


def schema_validator(schema: Any) -> Validator:
    return SchemaValidator(schema)


def _uid_of(entity: Mapping[str, Any]) -> tuple[str, str] | None:
    """The uid an entity names, if it names one plainly (for the error message only)."""
    uid = entity.get("uid") if isinstance(entity, Mapping) else None
    if isinstance(uid, Mapping) and isinstance(uid.get("__entity"), Mapping):
        uid = uid["__entity"]
    if isinstance(uid, Mapping) and isinstance(uid.get("type"), str):
        if isinstance(uid.get("id"), str):
            return uid["type"], uid["id"]
    return None
