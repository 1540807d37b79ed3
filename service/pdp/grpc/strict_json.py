"""Parse a `*_json` request field strictly: no repeated keys, bounded nesting.

Python's `json` (like Cedar's parser) keeps the last of two equal keys, so
`{"amount_cents": 150000, "amount_cents": 50}` would be decided on 50 while a PEP that
reads the first occurrence saw 150000. Such a document is refused, naming the key's path.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pdp.errors import InvalidRequest


class _Repeated(Exception):
    pass


class _Pairs(list[tuple[str, Any]]):
    """An object with its keys in order and repeats kept, to find where one repeats."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Repeated
    return obj


# One decoder for every call: `json.loads(text, object_pairs_hook=...)` builds a decoder
# (and its scanner) per call, which cost more than parsing a small context.
_STRICT = json.JSONDecoder(object_pairs_hook=_unique)


def loads(field: str, text: str, max_depth: int | None) -> Any:
    """`text` parsed, or InvalidRequest naming `field` (and the path inside it). With a
    `max_depth`, deeper documents are refused; without, only those past the parser's own
    limit (~1000 levels)."""
    try:
        value = _STRICT.decode(text)
    except _Repeated:
        # Only a refused document pays for the second parse that locates the key.
        path = _repeated_key(json.loads(text, object_pairs_hook=_Pairs))
        raise InvalidRequest(f"{field}{path}", "duplicate key (a key may appear once)") from None
    except RecursionError:
        # The C parser gives up near the interpreter's recursion limit (~1000 levels):
        # far over any cap, refused as such without a traceback.
        limit = f"{max_depth} levels" if max_depth is not None else "the parser's limit"
        raise InvalidRequest(field, f"nested deeper than {limit}") from None
    except ValueError as exc:
        raise InvalidRequest(field, f"not valid JSON: {exc}") from exc
    if max_depth is not None and depth(value, max_depth) > max_depth:
        raise InvalidRequest(field, f"nested deeper than {max_depth} levels")
    return value


def depth(value: Any, limit: int = 1 << 30) -> int:
    """Nesting of lists and objects (a scalar is 0), counted level by level without
    recursion (`extend` does the walking in C); stops counting once past `limit`."""
    deepest, level = 0, [value]
    while deepest <= limit:
        below: list[Any] = []
        containers = 0
        for v in level:
            if isinstance(v, dict):
                below.extend(v.values())
            elif isinstance(v, list):
                below.extend(v)
            else:
                continue
            containers += 1
        if not containers:
            return deepest
        deepest, level = deepest + 1, below
    return deepest


def _repeated_key(value: Any) -> str:
    """The path (`.a[2].b`) of the first key repeated within its object, depth first."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, _Pairs):
            seen: set[str] = set()
            for k, _ in v:
                if k in seen:
                    return f"{path}.{k}"
                seen.add(k)
            stack.extend((x, f"{path}.{k}") for k, x in reversed(v))
        elif isinstance(v, list):
            stack.extend((x, f"{path}[{i}]") for i, x in reversed(list(enumerate(v))))
    return ""  # unreachable for a document `_unique` refused


@functools.lru_cache(maxsize=8)
def _run_of(chars: int) -> re.Pattern[str]:
    # Tried at each quote only (a literal's content follows its opening quote): a search
    # for the bare run would restart at every character of every short run.
    return re.compile(f'"[^"]{{{chars},}}')


def may_hold_longer(text: str, limit: int) -> bool:
    """Could JSON `text` hold a string of more than `limit` UTF-8 bytes? A character of
    the text is at most 4 bytes once decoded (an escape, 2 to 12 characters, at most 4),
    so not without a string literal of more than limit / 4 characters: with its escapes
    made two plain characters each, a run of that many after a quote. The run may also
    be text between two literals, which only sends the value to the exact walk."""
    chars = limit // 4 + 1
    if len(text) < chars:
        return False
    if "\\" in text:  # `\\` first, so that the `\"` of `"a\\"` is not taken for one
        text = text.replace("\\\\", "__").replace('\\"', "__")
    return _run_of(chars).search(text) is not None


def check_strings(field: str, value: Any, max_string_bytes: int, max_id_bytes: int) -> None:
    """InvalidRequest naming the path of the first string over its cap: an object key or a
    string value over `max_string_bytes`, an entity type or id over `max_id_bytes`. An
    entity uid is any object of exactly `type` and `id` (inside `__entity`, an entity's
    `uid` and `parents`); a record that merely looks like one is capped like one, which
    only refuses more. Level by level, without recursion; only a refused value pays for
    the second walk that names the path."""
    level = [value]
    while level:
        below: list[Any] = []
        for v in level:
            if type(v) is str:
                if _over(v, max_string_bytes):
                    _refuse_string(field, value, max_string_bytes, max_id_bytes)
            elif type(v) is dict:
                if _over_id(v, max_id_bytes) or any(_over(k, max_string_bytes) for k in v):
                    _refuse_string(field, value, max_string_bytes, max_id_bytes)
                below.extend(v.values())
            elif type(v) is list:
                below.extend(v)
        level = below


def _over(text: str, limit: int) -> bool:
    # A character is at most 4 UTF-8 bytes: most strings are decided without encoding.
    return len(text) > limit or (4 * len(text) > limit and len(text.encode()) > limit)


def _over_id(v: dict[str, Any], limit: int) -> bool:
    if len(v) != 2 or "type" not in v or "id" not in v:
        return False
    return any(type(x) is str and _over(x, limit) for x in (v["type"], v["id"]))


def _refuse_string(field: str, value: Any, max_string_bytes: int, max_id_bytes: int) -> None:
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if type(v) is str and _over(v, max_string_bytes):
            why = f"a string of {len(v.encode())} bytes exceeds the limit of {max_string_bytes}"
            raise InvalidRequest(f"{field}{path}", f"{why} (max_string_bytes)")
        if type(v) is dict:
            if _over_id(v, max_id_bytes):
                part = "type" if _over(str(v["type"]), max_id_bytes) else "id"
                size = len(str(v[part]).encode())
                raise InvalidRequest(
                    f"{field}{path}.{part}",
                    f"{size} bytes exceed the limit of {max_id_bytes} (max_id_bytes)",
                )
            for k in v:
                if _over(k, max_string_bytes):
                    raise InvalidRequest(
                        f"{field}{path}",
                        f"an attribute name of {len(k.encode())} bytes exceeds the limit of "
                        f"{max_string_bytes} (max_string_bytes)",
                    )
            stack.extend((x, f"{path}.{k}") for k, x in reversed(v.items()))
        elif type(v) is list:
            stack.extend((x, f"{path}[{i}]") for i, x in reversed(list(enumerate(v))))
