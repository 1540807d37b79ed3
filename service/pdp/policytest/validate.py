"""Check suite and fixture documents against the shipped JSON Schema, naming file:line."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdp.policytest.model import Problem
from pdp.policytest.yamlsrc import Document, key_line

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

SCHEMA_PATH = Path(__file__).with_name("suite.schema.json")
MAX_PROBLEMS = 20  # per document: past that, more messages help nobody
_MAX_MESSAGE = 200


@functools.cache
def suite_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@functools.cache
def _validator(definition: str | None) -> Validator:
    import jsonschema  # only when a document has problems: the import alone takes ~30 ms

    schema = suite_schema()
    if definition is not None:
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": definition}
    validator: Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def validate(doc: Document) -> list[Problem]:
    """Every schema problem of a suite or fixture document, each located at its line."""
    data = doc.data
    if not isinstance(data, dict):
        return [Problem(doc.where(()), "must be a mapping (name, tests, matrix, fixtures...)")]
    if conforms(data):
        return []
    tests = data.get("tests")
    if not isinstance(tests, list):
        return _problems(doc, _validator(None), data, ())
    # jsonschema costs ~0.2 ms per test: only the tests the fast reading refused go to it.
    problems = _problems(doc, _validator(None), {**data, "tests": []}, ())
    for i, item in enumerate(tests):
        if len(problems) >= MAX_PROBLEMS:
            break
        if not conforms(item, "test"):
            problems.extend(_problems(doc, _validator("#/$defs/test"), item, ("tests", i)))
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
    from jsonschema.exceptions import best_match

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
# A yes/no reading of the same schema, compiled to closures for the keywords it uses:
# much faster than jsonschema, and no import cost. A keyword it does not know makes it
# answer "no", and jsonschema (the reference, and the source of messages) decides.

Check = Callable[[Any], bool]
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "default"})
_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


class _Unknown(Exception):
    pass


def conforms(value: Any, definition: str | None = None) -> bool:
    """Whether `value` is valid against the suite schema, or one of its definitions."""
    return (_root() if definition is None else _definition(definition))(value)


@functools.cache
def _root() -> Check:
    return checker(suite_schema())


def checker(schema: Mapping[str, Any]) -> Check:
    """A yes/no check of `schema`; for a keyword it does not know, always "no"."""
    try:
        return _compile(schema)
    except _Unknown:
        return lambda _: False


@functools.cache
def _definition(name: str) -> Check:
    return checker(suite_schema()["$defs"][name])


def _compile(schema: Mapping[str, Any]) -> Check:
    checks = [_keyword(k, arg, schema) for k, arg in schema.items() if k not in _ANNOTATIONS]
    if len(checks) == 1:
        return checks[0]

    def every(v: Any) -> bool:
        for check in checks:
            if not check(v):
                return False
        return True

    return every


def _keyword(key: str, arg: Any, schema: Mapping[str, Any]) -> Check:
    if key == "$ref":
        if not isinstance(arg, str) or not arg.startswith("#/$defs/"):
            raise _Unknown(arg)
        name = arg.removeprefix("#/$defs/")
        return lambda v: _definition(name)(v)  # looked up late: definitions may recurse
    if key == "type":
        kinds = [_TYPES[t] for t in ([arg] if isinstance(arg, str) else arg)]
        return kinds[0] if len(kinds) == 1 else lambda v: any(k(v) for k in kinds)
    if key == "enum":
        return lambda v: any(_same(v, e) for e in arg)
    if key == "pattern":
        search = re.compile(arg).search
        return lambda v: not isinstance(v, str) or search(v) is not None
    if key == "minLength":
        return lambda v: not isinstance(v, str) or len(v) >= arg
    if key == "minItems":
        return lambda v: not isinstance(v, list) or len(v) >= arg
    if key == "uniqueItems":
        return _unique if arg else lambda v: True
    if key == "required":
        return lambda v: not isinstance(v, dict) or all(k in v for k in arg)
    if key == "properties":
        props = [(k, _compile(sub)) for k, sub in arg.items()]
        return lambda v: not isinstance(v, dict) or all(c(v[k]) for k, c in props if k in v)
    if key == "additionalProperties":
        known = frozenset(schema.get("properties", {}))
        if arg is False:
            return lambda v: not isinstance(v, dict) or known.issuperset(v)
        extra = _compile(arg)
        return lambda v: not isinstance(v, dict) or all(extra(v[k]) for k in v if k not in known)
    if key == "propertyNames":
        names = _compile(arg)
        return lambda v: not isinstance(v, dict) or all(names(k) for k in v)
    if key == "items":
        item = _compile(arg)
        return lambda v: not isinstance(v, list) or all(item(x) for x in v)
    if key in ("oneOf", "anyOf"):
        subs = [_compile(sub) for sub in arg]
        if key == "anyOf":
            return lambda v: any(c(v) for c in subs)
        return lambda v: sum(c(v) for c in subs) == 1
    raise _Unknown(key)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _unique(value: Any) -> bool:
    if not isinstance(value, list):
        return True
    if all(isinstance(v, str) for v in value):
        return len(set(value)) == len(value)
    return not any(_same(a, b) for i, a in enumerate(value) for b in value[i + 1 :])
