"""One spelling per JSON value, for the decision cache's key.

Two texts get the same canonical form only if Cedar reads them as the same value:

- object keys sorted, no whitespace, strings escaped to ASCII (`"\\u00e9"` and `"é"` are
  one string; `"é"` and `"e\\u0301"` are two, as Cedar does not normalise Unicode);
- numbers kept exactly as written: Python would read `-0` as `0`, but Cedar refuses
  `-0` (its JSON parser makes it a float) and decides `0`; `1` and `1.0`, `5e3` and
  `5000.0` stay apart for the same reason;
- a repeated key (JSON parsers keep the last, a PEP may read the first), `NaN` or
  `Infinity`, or anything else that is not plain JSON, has no canonical form: the caller
  then evaluates without the cache.

A typed context and the same values as `context_json` text meet in the same form, since
the adapter writes the typed one as Cedar JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _string
from typing import Any


class NotCanonical(Exception):
    """The value has no canonical form (see the module's docstring)."""


class _Text(str):
    """A number as written, or an object already in canonical form."""


def _refuse(_: str) -> Any:
    raise NotCanonical


def _value(v: Any) -> str:
    t = type(v)
    if t is _Text:
        return str(v)
    if t is str:
        return str(_string(v))
    if t is list:
        return "[" + ",".join([_value(x) for x in v]) + "]"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    raise NotCanonical


def _object(pairs: list[tuple[str, Any]]) -> _Text:
    # Inner objects are written as soon as they are parsed: one pass, no second walk.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise NotCanonical  # a repeated key
    return _Text("{" + ",".join([_string(k) + ":" + _value(obj[k]) for k in sorted(obj)]) + "}")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_int=_Text, parse_float=_Text, parse_constant=_refuse
)


# A caller repeating a request repeats its text: the canonical form of recent short texts
# is remembered, by the exact text (a pure function, so nothing can be stale). Bounded:
# at most MEMO_ENTRIES texts of MEMO_CHARS characters, whose forms are at most 6 times
# longer (a `\uXXXX` escape per character): a few MiB. Emptied when full.
MEMO_ENTRIES = 1024
MEMO_CHARS = 512
_memo: dict[str, str] = {}


def canonical_text(text: str) -> str:
    """The canonical form of JSON `text`; NotCanonical if it has none."""
    if text == "{}":
        return text  # the usual empty context, without a parse
    known = _memo.get(text)
    if known is not None:
        return known
    try:
        form = _value(_DECODER.decode(text))
    except (ValueError, RecursionError) as exc:
        raise NotCanonical from exc
    if len(text) <= MEMO_CHARS:
        if len(_memo) >= MEMO_ENTRIES:
            _memo.clear()  # a burst of distinct texts: start again rather than track age
        _memo[text] = form
    return form


def canonical_value(value: Mapping[str, Any]) -> str:
    """The canonical form of an in-process context mapping (its JSON, as Cedar gets it)."""
    try:
        return canonical_text(json.dumps(value, allow_nan=False, check_circular=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotCanonical from exc
