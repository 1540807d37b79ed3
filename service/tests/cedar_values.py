"""Cedar JSON values as typed `pdp.v1.Value`s, for sending a conformance context as `context`.

Cedar JSON leaves some types implicit: parsed with the schema, the string `"0.6"` is a
`decimal` where the action's context declares one, and `{"type", "id"}` an entity. This
module does not read the schema itself: for each implicit value it asks Cedar (cedarpy,
with the schema) which explicit escape (`__extn` for each extension, `__entity`) still
builds the request; the one that does is the value's type, and none means a plain
string or record. A value the proto cannot carry (Cedar's `offset(datetime, duration)`
form, for a datetime no datetime string can write) makes the context unexpressible.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import cedarpy

from pdp._proto.v1 import value_pb2 as vpb

# proto field -> Cedar constructor
EXTENSIONS = {"ipaddr": "ip", "decimal": "decimal", "datetime": "datetime", "duration": "duration"}
_FIELD = {fn: name for name, fn in EXTENSIONS.items()}
_NO_POLICIES = cedarpy.PolicySet.from_str("")
_NO_ENTITIES = cedarpy.Entities.from_json_str("[]")
_DECIDED = (cedarpy.Decision.Allow, cedarpy.Decision.Deny)  # else NoDecision: not built

Path = tuple[str | int, ...]


class Unexpressible(ValueError):
    """The value has no typed form in pdp.v1."""


def typed_context(
    request: dict[str, Any], schema: Callable[[], Any] | None
) -> tuple[dict[str, vpb.Value], int]:
    """The request's context as typed values, and how many implicit values Cedar retyped.

    `schema()` gives the cedarpy schema; it is called only if some value is implicit. None
    (a request Cedar does not validate) retypes nothing: without a schema Cedar reads
    every string as a string.
    """
    context = request["context"]
    leaves = list(_implicit(context)) if schema is not None else []
    if schema is not None and leaves:
        # One cedarpy call for the context as given and every candidate retyping of it.
        candidates = [(path, c) for path, leaf in leaves for c in _candidates(leaf)]
        builds = _builds(
            request, [context, *(_replace(context, p, c) for p, c in candidates)], schema()
        )
        if builds[0]:
            fits: dict[Path, list[Any]] = {}
            for (path, candidate), ok in zip(candidates, builds[1:], strict=True):
                if ok:
                    fits.setdefault(path, []).append(candidate)
            for path, fit in fits.items():
                assert len(fit) == 1, f"{path}: Cedar accepts {len(fit)} typings of one value"
                context = _replace(context, path, fit[0])
            return {k: value(v) for k, v in context.items()}, len(fits)
    return {k: value(v) for k, v in context.items()}, 0


def value(v: Any) -> vpb.Value:
    """One explicit Cedar JSON value (escapes spelled out) as a typed value."""
    if isinstance(v, bool):
        return vpb.Value(bool=v)
    if isinstance(v, int):
        if not -(2**63) <= v < 2**63:
            raise Unexpressible(f"{v} is outside Cedar's 64-bit long")
        return vpb.Value(long=v)
    if isinstance(v, str):
        return vpb.Value(string=v)
    if isinstance(v, list):
        return vpb.Value(set=vpb.SetValue(values=[value(x) for x in v]))
    if isinstance(v, dict) and "__entity" in v:
        return vpb.Value(entity=vpb.EntityUid(type=v["__entity"]["type"], id=v["__entity"]["id"]))
    if isinstance(v, dict) and "__extn" in v:
        extn = v["__extn"]
        if extn.get("fn") not in _FIELD or "arg" not in extn:
            raise Unexpressible(f"no typed form for extension value {extn!r}")
        return vpb.Value(**{_FIELD[extn["fn"]]: extn["arg"]})
    if isinstance(v, dict):
        return vpb.Value(record=vpb.RecordValue(fields={k: value(x) for k, x in v.items()}))
    raise Unexpressible(f"no typed form for {v!r}")


def _implicit(v: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every string and bare `{"type", "id"}` record, outside explicit escapes."""
    if isinstance(v, str) or (isinstance(v, dict) and set(v) == {"type", "id"}):
        yield path, v
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _implicit(x, (*path, i))
    elif isinstance(v, dict) and "__entity" not in v and "__extn" not in v:
        for k, x in v.items():
            yield from _implicit(x, (*path, k))


def _candidates(leaf: Any) -> list[Any]:
    """The explicit forms an implicit value could stand for under some schema."""
    if isinstance(leaf, dict):
        return [{"__entity": leaf}]
    escapes = [{"__extn": {"fn": fn, "arg": leaf}} for fn in EXTENSIONS.values()]
    return [e for e, ok in zip(escapes, _constructs(escapes), strict=True) if ok]


_CONSTRUCTS: dict[str, bool] = {}  # json of an escape -> whether Cedar constructs it


def _constructs(escapes: list[dict[str, Any]]) -> list[bool]:
    """Whether Cedar accepts each extension value at all (no schema): most strings are not
    an ip, decimal, datetime or duration, and need no schema probe."""
    keys = [json.dumps(e) for e in escapes]
    new = [(k, e) for k, e in zip(keys, escapes, strict=True) if k not in _CONSTRUCTS]
    if new:
        probe = {"type": "T", "id": ""}
        requests = [
            {"principal": probe, "action": probe, "resource": probe, "context": {"v": e}}
            for _, e in new
        ]
        outcomes = cedarpy.is_authorized_batch(requests, _NO_POLICIES, _NO_ENTITIES)
        for (k, _), o in zip(new, outcomes, strict=True):
            _CONSTRUCTS[k] = o.decision in _DECIDED
    return [_CONSTRUCTS[k] for k in keys]


def _replace(v: Any, path: Path, new: Any) -> Any:
    """`v` with the value at `path` replaced; only the containers on the path are copied."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, list):
        assert isinstance(head, int)
        return [_replace(x, rest, new) if i == head else x for i, x in enumerate(v)]
    return {k: _replace(x, rest, new) if k == head else x for k, x in v.items()}


def _builds(request: dict[str, Any], contexts: list[dict[str, Any]], schema: Any) -> list[bool]:
    """Whether Cedar builds the request under the schema, with each of these contexts."""
    uids = {k: request[k].get("__entity", request[k]) for k in ("principal", "action", "resource")}
    outcomes = cedarpy.is_authorized_batch(
        [{**uids, "context": c} for c in contexts], _NO_POLICIES, _NO_ENTITIES, schema
    )
    # A context the schema refuses is NoDecision ("failed to build request").
    return [o.decision in _DECIDED for o in outcomes]
