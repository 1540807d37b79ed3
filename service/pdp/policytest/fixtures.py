"""Test fixtures: named principals and resources, and entity sets, from testdata/ and suites.

A fixture entity is written in Cedar's JSON entity format, or in a compact form where
a uid (and each parent) may be the text `Type::"id"`. A named principal or resource
is either such an entity (defined for the tests) or just a uid (an alias of an entity
the bundle already has). Entities are checked against the bundle's schema here, so a
mistake is reported at the fixture's file:line with Cedar's reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from pdp.bundle import Bundle, entity_error, json_list_lines
from pdp.model import EntityRef, RequestEntities
from pdp.policytest.model import Problem, SuiteInvalid, Where
from pdp.policytest.validate import validate
from pdp.policytest.yamlsrc import Document, load_yaml, shown_path

_UID = re.compile(r'(?P<type>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)::"(?P<id>(?:[^"\\]|\\.)*)"', re.S)
FIXTURE_KEYS = ("principals", "resources", "entity_sets")


def parse_uid(value: Any) -> EntityRef:
    """`Type::"id"`, `{type, id}` or Cedar's `{"__entity": {type, id}}`."""
    if isinstance(value, str):
        m = _UID.fullmatch(value.strip())
        if m is None:
            raise ValueError(f'{value!r} is not an entity uid like User::"alice"')
        return EntityRef(m["type"], re.sub(r"\\(.)", r"\1", m["id"]))
    if isinstance(value, dict):
        inner = value.get("__entity", value)
        if isinstance(inner, dict) and isinstance(inner.get("type"), str):
            if isinstance(inner.get("id"), str):
                return EntityRef(inner["type"], inner["id"])
    raise ValueError(f"{value!r} is not an entity uid")


def uid_json(uid: EntityRef) -> dict[str, str]:
    return {"type": uid.type, "id": uid.id}


@dataclass(frozen=True)
class Entity:
    uid: EntityRef
    cedar: Mapping[str, Any]  # the entity in Cedar's JSON format
    where: Where


@dataclass(frozen=True)
class Named:
    uid: EntityRef
    entity: Entity | None  # None: an alias of an entity of the bundle


@dataclass(frozen=True)
class Fixtures:
    principals: Mapping[str, Named] = field(default_factory=dict)
    resources: Mapping[str, Named] = field(default_factory=dict)
    sets: Mapping[str, tuple[Entity, ...]] = field(default_factory=dict)

    def under(self, top: Fixtures) -> Fixtures:
        """These fixtures overridden, name by name, by `top`'s."""
        return Fixtures(
            {**self.principals, **top.principals},
            {**self.resources, **top.resources},
            {**self.sets, **top.sets},
        )

    def definitions(self) -> Iterator[Entity]:
        for named in (*self.principals.values(), *self.resources.values()):
            if named.entity is not None:
                yield named.entity


def entity(data: Mapping[str, Any], where: Where) -> Entity:
    """An entity in the compact or the Cedar JSON form (the schema checked its shape)."""
    uid = parse_uid(data["uid"])
    cedar: dict[str, Any] = {
        "uid": uid_json(uid),
        "attrs": data.get("attrs", {}),
        "parents": [uid_json(parse_uid(p)) for p in data.get("parents", [])],
    }
    if "tags" in data:
        cedar["tags"] = data["tags"]
    return Entity(uid, cedar, where)


def fixtures_of(doc: Document) -> Fixtures:
    """The fixtures a (schema-valid) suite or testdata document defines."""
    data: Mapping[str, Any] = doc.data
    named: list[dict[str, Named]] = []
    for key in ("principals", "resources"):
        out: dict[str, Named] = {}
        for name, value in (data.get(key) or {}).items():
            where = doc.where((key, name))
            if isinstance(value, dict) and "uid" in value:
                ent = entity(value, where)
                out[name] = Named(ent.uid, ent)
            else:
                out[name] = Named(parse_uid(value), None)
        named.append(out)
    sets = {
        name: tuple(entity(e, doc.where(("entity_sets", name, i))) for i, e in enumerate(items))
        for name, items in (data.get("entity_sets") or {}).items()
    }
    return Fixtures(named[0], named[1], sets)


def load_testdata(folder: Path) -> tuple[Fixtures, list[Problem]]:
    """Every fixture file of a testdata/ folder: *.yaml / *.yml, and *.json entity lists."""
    merged = Fixtures()
    problems: list[Problem] = []
    seen: dict[tuple[str, str], Where] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            if path.suffix in (".yaml", ".yml"):
                found = _yaml_fixtures(path)
            elif path.suffix == ".json":
                found = _json_fixtures(path)
            else:
                continue
        except SuiteInvalid as exc:
            problems.extend(exc.problems)
            continue
        for kind, names in (
            ("principal", found.principals),
            ("resource", found.resources),
            ("entity set", found.sets),
        ):
            for name in names:
                where = Where(shown_path(path))
                if (kind, name) in seen:
                    msg = f"{kind} {name!r} defined twice (also in {seen[kind, name]})"
                    problems.append(Problem(where, msg))
                seen[kind, name] = where
        merged = merged.under(found)
    return merged, problems


def _yaml_fixtures(path: Path) -> Fixtures:
    doc = load_yaml(path, shown_path(path))
    problems = validate(doc)
    if isinstance(doc.data, dict):
        for key in doc.data:
            if key not in FIXTURE_KEYS:
                where = doc.where((key,))
                problems.append(Problem(where, f"{key}: a testdata file holds only fixtures"))
    if problems:
        raise SuiteInvalid(problems)
    return fixtures_of(doc)


def _json_fixtures(path: Path) -> Fixtures:
    """A Cedar JSON entity list: an entity set named after the file."""
    shown = shown_path(path)
    try:
        items = json_list_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SuiteInvalid([Problem(Where(shown), f"not a JSON list of entities: {exc}")]) from exc
    out: list[Entity] = []
    for line, value in items:
        try:
            if not isinstance(value, dict):
                raise ValueError("an entity must be a JSON object")
            out.append(Entity(parse_uid(value.get("uid")), value, Where(shown, line)))
        except ValueError as exc:
            raise SuiteInvalid([Problem(Where(shown, line), str(exc))]) from exc
    return Fixtures(sets={path.stem: tuple(out)})


class RequestEntitiesBuilder:
    """Request entities for each combination of fixtures, checked once against the bundle."""

    def __init__(self, bundle: Bundle) -> None:
        self._bundle = bundle
        self._cache: dict[str, RequestEntities | list[Problem]] = {}
        self._base: set[EntityRef] | None = None

    def build(self, entities: Sequence[Entity]) -> RequestEntities | None:
        """Raises SuiteInvalid if an entity is invalid or two fixtures define one entity."""
        if not entities:
            return None
        chosen: dict[EntityRef, Entity] = {}
        problems: list[Problem] = []
        for ent in entities:
            first = chosen.setdefault(ent.uid, ent)
            if first is not ent and first.cedar != ent.cedar:
                what = f"{ent.uid} is defined twice, differently (also at {first.where})"
                problems.append(Problem(ent.where, what))
        if problems:
            raise SuiteInvalid(problems)
        text = json.dumps([e.cedar for e in chosen.values()], separators=(",", ":"))
        cached = self._cache.get(text)
        if cached is None:
            cached = self._check(text, list(chosen.values()))
            self._cache[text] = cached
        if isinstance(cached, list):
            raise SuiteInvalid(cached)
        return cached

    def _check(self, text: str, entities: list[Entity]) -> RequestEntities | list[Problem]:
        bundle = self._bundle
        try:
            if bundle.entity_count == 0:
                cedarpy.Entities.from_json_str(text, bundle.schema)
            else:
                bundle.entities.with_added_json_str(text, bundle.schema)
            return RequestEntities(text)
        except ValueError as exc:
            problems = [Problem(e.where, f"{e.uid}: {r}") for e in entities if (r := self._why(e))]
            return problems or [Problem(entities[0].where, f"request entities refused: {exc}")]

    def _why(self, ent: Entity) -> str | None:
        """Cedar's own reason an entity does not fit the schema, or that it redefines one."""
        reason = entity_error(json.dumps([ent.cedar]), self._bundle.schema)
        if reason is not None:
            return reason
        if ent.uid in self._base_uids():
            return "redefines an entity of the bundle (request entities may only add entities)"
        return None

    def _base_uids(self) -> set[EntityRef]:
        if self._base is None:
            # str(Entities) renders Cedar JSON (a documented cedarpy behaviour).
            self._base = {parse_uid(e["uid"]) for e in json.loads(str(self._bundle.entities))}
        return self._base
