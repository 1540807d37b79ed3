"""Check suite and fixture documents against the shipped JSON Schema, naming file:line."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator

from pdp.policytest.model import Problem
from pdp.policytest.yamlsrc import Document, key_line

SCHEMA_PATH = Path(__file__).with_name("suite.schema.json")
MAX_PROBLEMS = 20  # per document: past that, more messages help nobody
_MAX_MESSAGE = 200


@functools.cache
def suite_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@functools.cache
def _validator(definition: str | None) -> Validator:
    schema = suite_schema()
    if definition is not None:
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": definition}
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(doc: Document) -> list[Problem]:
    """Every schema problem of a suite or fixture document, each located at its line."""
    data = doc.data
    if not isinstance(data, dict):
        return [Problem(doc.where(()), "must be a mapping (name, tests, matrix, fixtures...)")]
    tests = data.get("tests")
    if not isinstance(tests, list):
        return _problems(doc, _validator(None), data, ())
    # jsonschema costs ~0.2 ms per test; plainly valid tests (nearly all) take a fast path
    # that accepts only what the schema accepts (checked against it in the tests).
    problems = _problems(doc, _validator(None), {**data, "tests": []}, ())
    test = _validator("#/$defs/test")
    for i, item in enumerate(tests):
        if len(problems) >= MAX_PROBLEMS:
            break
        if not plainly_valid_test(item):
            problems.extend(_problems(doc, test, item, ("tests", i)))
    return sorted(problems, key=lambda p: p.where.line or 0)[:MAX_PROBLEMS]


def _problems(
    doc: Document, validator: Validator, data: Any, prefix: tuple[str | int, ...]
) -> list[Problem]:
    out: list[Problem] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        out.append(_located(doc, error, prefix))
    return out


def _located(doc: Document, error: ValidationError, prefix: tuple[str | int, ...]) -> Problem:
    detail = _specific(error)
    path = (*prefix, *detail.absolute_path)
    line = doc.line(path)
    if detail.validator == "additionalProperties" and isinstance(detail.instance, dict):
        allowed = detail.schema.get("properties", {}) if isinstance(detail.schema, dict) else {}
        extra = [k for k in detail.instance if k not in allowed]
        if extra:
            line = key_line(doc.node(path), str(extra[0])) or line
    message = _message(detail)
    where = doc.where(path)
    return Problem(type(where)(where.file, line), f"{_dotted(path)}: {message}")


def _specific(error: ValidationError) -> ValidationError:
    """For a failed oneOf/anyOf, the alternative's error that explains most.

    An alternative that failed inside the value (not on the value as a whole) matched
    its shape, so its error is the one the author needs; failing that, one whose type
    at least matched.
    """
    while error.context:
        inside = [e for e in error.context if e.relative_path]
        typed = [e for e in error.context if e.validator != "type"]
        error = best_match(inside or typed or error.context)
    return error


def _message(error: ValidationError) -> str:
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        both = [k for k in ("action", "actions") if k in error.instance]
        if len(both) == 2:
            return "give either `action` or `actions`, not both"
        return "matches more than one form; make it unambiguous"
    message = error.message
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(document)"


# ---------------------------------------------------------------------- fast path --


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(suite_schema()["$defs"][name]["pattern"])


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    uid = re.compile(suite_schema()["$defs"]["uid"]["oneOf"][0]["pattern"])
    action = re.compile(suite_schema()["$defs"]["action"]["oneOf"][0]["pattern"])
    return _pattern("name"), uid, action


_TEST_KEYS = frozenset(suite_schema()["$defs"]["test"]["properties"])
_EXPECT_KEYS = frozenset(suite_schema()["$defs"]["expect"]["oneOf"][1]["properties"])
_DECISIONS = frozenset(suite_schema()["$defs"]["decision"]["enum"])


def plainly_valid_test(item: Any) -> bool:
    """True only for a test entry the schema accepts; False means "ask jsonschema"."""
    name, uid, action = _patterns()
    if not isinstance(item, dict) or not _TEST_KEYS.issuperset(item):
        return False
    if ("action" in item) == ("actions" in item):
        return False
    if not (_text(item.get("name")) and _ref(item.get("principal"), name, uid)):
        return False
    if not _ref(item.get("resource"), name, uid):
        return False
    if "action" in item and not _one(item["action"], action, uid):
        return False
    if "actions" in item and not (
        item["actions"] and _ids(item["actions"], lambda a: _one(a, action, uid))
    ):
        return False
    for key in ("description",):
        if key in item and not isinstance(item[key], str):
            return False
    if "skip" in item and not _text(item["skip"]):
        return False
    if "context" in item and not isinstance(item["context"], dict):
        return False
    if "entities" in item and not _ids(item["entities"], lambda n: _one(n, name)):
        return False
    return _expect(item.get("expect"))


def _expect(value: Any) -> bool:
    if isinstance(value, str):
        return value in _DECISIONS
    if not isinstance(value, dict) or not _EXPECT_KEYS.issuperset(value):
        return False
    if not (isinstance(value.get("decision"), str) and value["decision"] in _DECISIONS):
        return False
    for key in ("determining", "determining_includes"):
        if key in value and not _ids(value[key], _text):
            return False
    errors = value.get("errors", False)
    if not (isinstance(errors, bool) or _ids(errors, _text)):
        return False
    notes = value.get("annotations", {})
    return isinstance(notes, dict) and all(isinstance(v, str) for v in notes.values())


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _one(value: Any, *patterns: re.Pattern[str]) -> bool:
    """A string matching exactly one of `patterns` (the schema's oneOf)."""
    return isinstance(value, str) and sum(bool(p.search(value)) for p in patterns) == 1


def _ref(value: Any, name: re.Pattern[str], uid: re.Pattern[str]) -> bool:
    return _one(value, name, uid)


def _ids(value: Any, ok: Callable[[Any], bool]) -> bool:
    if not isinstance(value, list) or not all(ok(v) for v in value):
        return False
    return len(set(value)) == len(value)
