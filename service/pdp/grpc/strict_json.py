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


def loads(field: str, text: str, max_depth: int) -> Any:
    """`text` parsed, or InvalidRequest naming `field` (and the path inside it)."""
    try:
        value = json.loads(text, object_pairs_hook=_unique)
    except _Repeated:
        # Only a refused document pays for the second parse that locates the key.
        path = _repeated_key(json.loads(text, object_pairs_hook=_Pairs))
        raise InvalidRequest(f"{field}{path}", "duplicate key (a key may appear once)") from None
    except RecursionError:
        # The C parser gives up near the interpreter's recursion limit (~1000 levels):
        # far over any cap, refused as such without a traceback.
        raise InvalidRequest(field, f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise InvalidRequest(field, f"not valid JSON: {exc}") from exc
    if depth(value) > max_depth:
        raise InvalidRequest(field, f"nested deeper than {max_depth} levels")
    return value


def depth(value: Any) -> int:
    """Nesting of lists and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d + 1)
        stack.extend((x, d + 1) for x in v)
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
