"""Turn a schema-valid suite document into `Case`s: table tests and matrix cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pdp.model import CheckInput, Decision, EntityRef, RequestEntities
from pdp.policytest.fixtures import Entity, Fixtures, RequestEntitiesBuilder, parse_uid
from pdp.policytest.model import Case, Expectation, Problem, Suite, SuiteInvalid, Where
from pdp.policytest.yamlsrc import Document

Path_ = tuple[str | int, ...]
_AXES = ("principals", "actions", "resources")


class _Bad(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def suite_name(doc: Document) -> str:
    stem = doc.file.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = doc.data.get("name")
    return name if isinstance(name, str) else stem.removesuffix("_test")


class SuiteBuilder:
    def __init__(
        self,
        doc: Document,
        fixtures: Fixtures,
        entities: RequestEntitiesBuilder,
        policy_ids: frozenset[str],
    ) -> None:
        self.doc = doc
        self.data: Mapping[str, Any] = doc.data
        self.fixtures = fixtures
        self.entities = entities
        self.policy_ids = policy_ids
        self.name = suite_name(doc)
        self.problems: list[Problem] = []
        self._groups: dict[tuple[str, ...], RequestEntities | None] = {}

    def build(self) -> tuple[Suite, list[Problem]]:
        try:
            context = {**self._now(), **self.data.get("context", {})}
        except _Bad as bad:
            return Suite(self.name, self.doc.file, "", ()), [bad.problem]
        cases: list[Case] = []
        for i, test in enumerate(self.data.get("tests") or []):
            cases.extend(self._guarded(self._test, test, ("tests", i), context))
        for i, matrix in enumerate(self.data.get("matrix") or []):
            cases.extend(self._guarded(self._matrix, matrix, ("matrix", i), context))
        self._unique(cases)
        description = str(self.data.get("description", ""))
        return Suite(self.name, self.doc.file, description, tuple(cases)), self.problems

    def _guarded(self, build: Any, item: Any, path: Path_, context: Any) -> list[Case]:
        try:
            out: list[Case] = build(item, path, context)
            return out
        except _Bad as bad:
            self.problems.append(bad.problem)
        except SuiteInvalid as exc:
            self.problems.extend(exc.problems)
        return []

    def _test(self, t: Mapping[str, Any], path: Path_, context: Any) -> list[Case]:
        principal = self._ref(t["principal"], "principal", (*path, "principal"))
        resource = self._ref(t["resource"], "resource", (*path, "resource"))
        written = [t["action"]] if "action" in t else t["actions"]
        key = "action" if "action" in t else "actions"
        actions = [self._action(a, (*path, key)) for a in written]
        entities = self._request_entities(t, path)
        expect = self._expect(t["expect"], (*path, "expect"))
        ctx = {**context, **t.get("context", {})}
        where = self.doc.where(path)
        out = []
        for action in actions:
            name = t["name"] if len(actions) == 1 else f"{t['name']} [{action[1]}]"
            request = CheckInput(principal[0], action[0], resource[0], ctx, entities)
            labels = (principal[1], action[1], resource[1])
            out.append(Case(self.name, name, where, request, expect, labels, "test", t.get("skip")))
        return out

    def _matrix(self, m: Mapping[str, Any], path: Path_, context: Any) -> list[Case]:
        ps = [
            self._ref(p, "principal", (*path, "principals", i))
            for i, p in enumerate(m["principals"])
        ]
        rs = [
            self._ref(r, "resource", (*path, "resources", i)) for i, r in enumerate(m["resources"])
        ]
        acts = [self._action(a, (*path, "actions", i)) for i, a in enumerate(m["actions"])]
        entities = self._request_entities(m, path)
        axes = ({p[0] for p in ps}, {a[0] for a in acts}, {r[0] for r in rs})
        allowed = self._cells(m.get("allow") or [], (*path, "allow"), axes)
        denied = self._cells(m.get("deny") or [], (*path, "deny"), axes)
        for cell, where in denied.items():
            if cell in allowed:
                raise _Bad(Problem(where, f"cell {_cell(cell)} is listed in both allow and deny"))
        ctx = {**context, **m.get("context", {})}
        out = []
        for p in ps:
            for r in rs:
                for a in acts:
                    cell = (p[0], a[0], r[0])
                    decision = Decision.ALLOW if cell in allowed else Decision.DENY
                    where = allowed.get(cell) or denied.get(cell) or self.doc.where(path)
                    request = CheckInput(p[0], a[0], r[0], ctx, entities)
                    name = f"{m['name']} [{p[1]} {a[1]} {r[1]}]"
                    labels = (p[1], a[1], r[1])
                    exp = Expectation(decision)
                    out.append(Case(self.name, name, where, request, exp, labels, "matrix"))
        return out

    def _cells(
        self, cells: Sequence[Mapping[str, Any]], path: Path_, axes: tuple[set[EntityRef], ...]
    ) -> dict[tuple[EntityRef, EntityRef, EntityRef], Where]:
        out: dict[tuple[EntityRef, EntityRef, EntityRef], Where] = {}
        for i, c in enumerate(cells):
            at = (*path, i)
            p = self._ref(c["principal"], "principal", (*at, "principal"))[0]
            r = self._ref(c["resource"], "resource", (*at, "resource"))[0]
            for j, a in enumerate(c["actions"]):
                act = self._action(a, (*at, "actions", j))[0]
                for value, axis, what in zip((p, act, r), axes, _AXES, strict=True):
                    if value not in axis:
                        msg = f"{value} is not in the matrix's {what}"
                        raise _Bad(Problem(self.doc.where(at), msg))
                out[p, act, r] = self.doc.where(at)
        return out

    def _ref(self, value: Any, kind: str, path: Path_) -> tuple[EntityRef, str]:
        if isinstance(value, str) and "::" not in value:
            named = self.fixtures.principals if kind == "principal" else self.fixtures.resources
            found = named.get(value)
            if found is None:
                known = ", ".join(sorted(named)) or "none"
                msg = f"no {kind} fixture named {value!r} (known: {known})"
                raise _Bad(Problem(self.doc.where(path), msg))
            return found.uid, value
        uid = self._uid(value, path)
        return uid, value if isinstance(value, str) else str(uid)

    def _action(self, value: Any, path: Path_) -> tuple[EntityRef, str]:
        if isinstance(value, str) and "::" not in value:
            return EntityRef("Action", value), value
        uid = self._uid(value, path)
        return uid, value if isinstance(value, str) else str(uid)

    def _uid(self, value: Any, path: Path_) -> EntityRef:
        try:
            return parse_uid(value)
        except ValueError as exc:
            raise _Bad(Problem(self.doc.where(path), str(exc))) from exc

    def _request_entities(self, item: Mapping[str, Any], path: Path_) -> RequestEntities | None:
        names = tuple(item.get("entities", self.data.get("entities", [])))
        if names not in self._groups:
            chosen: list[Entity] = list(self.fixtures.definitions())
            for name in names:
                found = self.fixtures.sets.get(name)
                if found is None:
                    known = ", ".join(sorted(self.fixtures.sets)) or "none"
                    at = (*path, "entities") if "entities" in item else ("entities",)
                    msg = f"no entity set named {name!r} (known: {known})"
                    raise _Bad(Problem(self.doc.where(at), msg))
                chosen.extend(found)
            self._groups[names] = self.entities.build(chosen)
        return self._groups[names]

    def _expect(self, value: Any, path: Path_) -> Expectation:
        if isinstance(value, str):
            return Expectation(Decision(value.lower()))
        determining = value.get("determining")
        includes = value.get("determining_includes", [])
        errors = value.get("errors", False)
        named = [*(determining or []), *includes, *(errors if isinstance(errors, list) else [])]
        unknown = sorted(set(named) - self.policy_ids)
        if unknown:
            msg = f"the bundle has no policy {', '.join(map(repr, unknown))} (an @id or a link id)"
            raise _Bad(Problem(self.doc.where(path), msg))
        return Expectation(
            Decision(value["decision"].lower()),
            None if determining is None else frozenset(determining),
            frozenset(includes),
            frozenset(errors) if isinstance(errors, list) else bool(errors),
            dict(value.get("annotations", {})),
        )

    def _now(self) -> dict[str, Any]:
        now = self.data.get("now")
        if now is None:
            return {}
        spec: Mapping[str, Any] = {"value": now} if isinstance(now, str) else now
        value, attr = spec["value"], spec.get("attribute", "now")
        fmt = spec.get("format", "datetime")
        try:
            when = datetime.fromisoformat(value)
        except ValueError as exc:
            where = self.doc.where(("now",))
            raise _Bad(Problem(where, f"now: {value!r} is not an ISO 8601 date-time")) from exc
        if fmt == "epoch":
            return {attr: int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())}
        if fmt == "string":
            return {attr: value}
        return {attr: {"__extn": {"fn": "datetime", "arg": value}}}

    def _unique(self, cases: list[Case]) -> None:
        seen: dict[str, Case] = {}
        for case in cases:
            first = seen.setdefault(case.name, case)
            if first is not case:
                msg = f"test name {case.name!r} is used twice (also at line {first.where.line})"
                self.problems.append(Problem(case.where, msg))


def _cell(cell: tuple[EntityRef, EntityRef, EntityRef]) -> str:
    return " ".join(str(x) for x in cell)
