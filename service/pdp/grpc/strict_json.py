"""Parse a `*_json` request field strictly: no repeated keys, bounded nesting.

Python's `json` (like Cedar's parser) keeps the last of two equal keys, so
`{"amount_cents": 150000, "amount_cents": 50}` would be decided on 50 while a PEP that
reads the first occurrence saw 150000. Such a document is refused, naming the key's path.
"""

from __future__ import annotations

import json
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
