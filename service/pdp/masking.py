"""Masking of caller-controlled values before a decision record is written.

Whatever a caller sends (entity types and ids, action ids, context keys and values, request
entities) may hold a card number or a secret, so all of it passes through `Masker` first:

- configured paths (`context.customer.email`, `entities.attrs.ssn`, `*` for any key) are
  masked or dropped;
- a value under a key named like a secret (password, secret, token, api_key, cvv, ...) is
  masked whatever its type;
- inside every string (and every integer, as its digits), card numbers (Luhn-valid runs of
  12-19 digits, also with single spaces or dashes: `is_card_number`), checksum-valid IBANs, JWTs and
  `Bearer`/`Basic` credentials are replaced by `<masked:KIND>`, and so is the value of a
  `name=value` / `name: value` pair (query parameters, URL-encoded forms too) whose name
  looks like a secret.

The work is bounded: each string is scanned only as far as it will be written (plus the
longest span a match can straddle the cut with), and a tree stops being walked once its
output exceeds a byte budget (the caller drops it then), so masking a record costs
O(record size) however large the request was.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MASK = "<masked:{}>"
MAX_VALUE_CHARS = 256  # longer strings are cut to this and end with ELLIPSIS
ELLIPSIS = "…"
# A match can start before the cut and end after it: a PAN with separators spans at most
# 19 digits + 18 gaps of up to three separators (`%20%20%20`: 9 characters), an IBAN 34
# characters + 8 spaces. Scanning this far past the cut masks any secret whose beginning
# would be written.
_STRADDLE = 19 + 18 * 9
PATH_ROOTS = ("context", "entities")
# Clients send the same contexts again and again: texts found clean are remembered (the
# Masker is used by the one writer thread).
CLEAN_CACHE_ENTRIES = 1024

# Keys whose value is a secret whatever it looks like. Keys are compared lowercased with
# everything but letters and digits removed (`API-Key`, `api_key`, `apiKey` -> `apikey`).
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "authorization",
    "cookie",
    "bearer",
    "jwt",
    "sessionid",
    "sessionkey",
)
_SECRET_NAMES = frozenset({"auth", "pass", "pwd", "pin", "otp", "key"})
_CVV_PARTS = ("cvv", "cvc", "securitycode", "cardverification")
_CVV_NAMES = frozenset({"cvn", "csc", "cav2", "cid2"})
_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# A JWT's start running to the end of what was scanned (its signature, or more, past it).
_JWT_OPEN = re.compile(r"e[w-z0-9_-][A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\Z")
_JWT = re.compile(r"e[w-z0-9_-][A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){1,3}")
# Separators may be URL-encoded (`Bearer%20tok`, `Authorization%3A%20Bearer%20tok`) or
# quotes (`Bearer "tok"`). Linear: the separator and credential classes are disjoint.
_AUTH = re.compile(
    r"(?i:bearer)(?:[\s:=\"']|%(?i:20|3a|3d|22|27))+[A-Za-z0-9._~+/-]+(?:=|%3[dD])*"
    r"|(?i:basic)(?:[\s\"']|%(?i:20|22|27))+[A-Za-z0-9+/]{8,}(?:=|%3[dD]){0,2}"
)
# `name=value`, `name: value`, `"name": "value"`, query parameters (`?access_token=...`) and
# their URL-encoded forms (`%26name%3Dvalue`): the value is masked when the name looks like a
# secret (`secret_kind`). A name starts after a character that cannot be in one (or after a
# `%XX` escape) and has at most 64 characters, the separators at most a few: each position
# costs O(1), so the scan is linear whatever the text.
_PAIR = re.compile(
    r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![A-Za-z0-9_.-]))([A-Za-z][A-Za-z0-9_.-]{0,63})[\"']?"
    r"[ \t]{0,8}(?:[=:]|%(?i:3a|3d))(?:[ \t\"']|%(?i:20|22|27)){0,8}"
)
# A secret value runs to a delimiter of a pair list or a query string, plain or URL-encoded.
_PAIR_VALUE = re.compile(r"(?:[^\s&;,\"'<>%]|%(?!(?i:2[026-7c]|3b))[0-9A-Fa-f]{0,2})+")
# What every match above needs somewhere: most strings (ids, names) have none of it.
# Two digits, maybe with a separator between (a card number may be written `4-1-1-1-...`),
# and at least 5 characters (`pin=4`: the shortest secret name, a separator, a value).
MIN_SECRET_CHARS = 5
# What may stand between two groups of a card number: spaces of any kind, tabs, line
# breaks, dots, dashes (Unicode's too: en and em dash, minus, non-breaking hyphen) and the
# `+` of form encoding (`card=4111+1111+...`).
_SEP = r"\s.\-+\u2010-\u2015\u2212"
# Characters that show nothing: Unicode's format characters (category Cf: soft hyphen,
# zero-width space and joiners, bidi marks, embeddings and isolates, word joiner, BOM,
# tags, ...) and the other default-ignorable code points (combining grapheme joiner,
# variation selectors, Hangul fillers, Mongolian selectors, and the ranges Unicode keeps
# ignorable for later). A copy and paste carries them (phones wrap numbers in bidi
# marks), and a caller can slip them between a card's digits: the detectors see the text
# without them (`_visible`). Complete as of unicodedata 14.0 (a test checks every Cf).
_INVISIBLE_CLASS = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\ufff0-\ufffb\uffa0"
    "\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff"
)
_INVISIBLE = re.compile("[" + _INVISIBLE_CLASS + "]+")
_GATE = re.compile(
    r"\d[" + _SEP + r"]{0,3}\d|e[w-z0-9_-]|(?i:bearer|basic)|[=:%]|[" + _INVISIBLE_CLASS + "]"
)
# The same over a whole JSON text, plus what it cannot see through: an escape (`\u0034` is a
# digit), a string that may need cutting (a long run without a quote), any key or text that
# may name a secret once lower-cased and stripped to letters and digits.
_RAW_GATE = re.compile(
    r"\d(?:(?:%20|[" + _SEP + r"]){0,3}\d){11}|[A-Za-z]{2}[0-9]{2}|e[w-z0-9_-][A-Za-z0-9_-]{8,}\."
    r"|(?i:bearer|basic)|\\|[^\"]{" + str(MAX_VALUE_CHARS + 1) + ",}"
)
_RAW_SECRET = re.compile(
    "|".join([*_SECRET_PARTS, *_SECRET_NAMES, *_CVV_PARTS, *_CVV_NAMES, "token"])
)
_JSON_LINE = re.compile(r"[^\x20-\x7e]")  # what keeps a JSON text from being one ASCII line
_IBAN_START = re.compile(r"(?=[A-Za-z]{2}[0-9]{2})")
# Digits of any script (`\d`: full-width `４１１１` too), up to three separators between two:
# spaces of any kind, tabs, line breaks, dots or dashes, as people and forms write card
# numbers (`4111  1111`, `4111 - 1111`, `4111\r\n1111`). Linear: separators and digits are
# disjoint, so each position is matched one way.
# A run starts after a non-digit or right after a URL escape (`%20`, whose hex digits are
# not the card's), never inside one; `%20` also separates groups (`4111%201111...`).
_DIGIT_RUN = re.compile(
    r"(?<!%)(?<!%[0-9A-Fa-f])(?:(?<=%[0-9A-Fa-f]{2})|(?<!\d))"
    r"\d(?:(?:%20|[" + _SEP + r"]){0,3}\d){11,}"
)
_SEPARATOR = re.compile(r"((?:%20|[" + _SEP + r"])+)")  # grouped: `split` keeps the gaps
# Groups of a card written with a wide gap (two or three separators) have 3 digits or
# more (4-4-4-4, 4-6-5, 4-4-4-4-3): a window with such a gap and a shorter group is a
# date or amount range (`2025-07-19 - 2021-04-29`, `34840.95 - 97161.77`), not a card.
MIN_WIDE_GROUP = 3
# A digit run right after a credential's, pair's or JWT's mask and a separator: where what is
# left of a card that mask took the first group of stands.
_AFTER_MASK = re.compile(
    r"(<masked:(?:bearer|secret|cvv|jwt)>(?:%20|[" + _SEP + r"\"']){0,3})(\d[\d%" + _SEP + r"]*)"
)

# IBAN lengths by country (SWIFT IBAN registry); an unlisted country is checked at every
# length from 15 to 34, so a new country's IBANs are masked too.
_IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE", "BI"], 16),
    **dict.fromkeys(["DK", "FI", "FO", "GL", "NL", "SD", "FK"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "XK", "MN"], 20),
    **dict.fromkeys(["CH", "CR", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "TL", "SO", "OM"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["PT", "ST", "LY"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["FR", "GR", "IT", "MC", "MR", "SM", "DJ"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV", "NI"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU", "YE"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
    **dict.fromkeys(["RU"], 33),
}


@functools.lru_cache(maxsize=4096)  # the same few key names, decision after decision
def secret_kind(key: str) -> str | None:
    """`"cvv"` or `"secret"` if a value under `key` is never written, else None."""
    k = _NOT_ALNUM.sub("", key.lower())
    if k in _CVV_NAMES or any(p in k for p in _CVV_PARTS):
        return "cvv"
    if k in _SECRET_NAMES or any(p in k for p in _SECRET_PARTS):
        return "secret"
    # `access_token`, `idToken`, but not `tokens` / `max_tokens`: token counts of an AI
    # agent are what its policies decide on (their values are still scanned).
    if "token" in k and not k.endswith("tokens"):
        return "secret"
    return None


MAX_PAN_DIGITS = 19


def _luhn_sums(digits: str) -> tuple[list[int], list[int]]:
    """Prefix sums of each digit's Luhn value by parity: the stretch `digits[a:b]` passes
    the Luhn check when `(sums[b] - sums[a]) % 10 == 0`, `sums` being `even` if `b - 1` is
    even, else `odd` (digits of the last one's parity count as written, the others
    doubled). One pass: every stretch is then checked in O(1)."""
    n = len(digits)
    even = [0] * (n + 1)
    odd = [0] * (n + 1)
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        dd = d * 2 - 9 if d > 4 else d * 2
        even[i + 1] = even[i] + (d if i % 2 == 0 else dd)
        odd[i + 1] = odd[i] + (dd if i % 2 == 0 else d)
    return even, odd


def _passes(sums: tuple[list[int], list[int]], a: int, b: int) -> bool:
    """Whether `digits[a:b]` passes the Luhn check (`_luhn_sums`)."""
    table = sums[0] if (b - 1) % 2 == 0 else sums[1]
    return (table[b] - table[a]) % 10 == 0


def luhn_window(digits: str) -> bool:
    """Whether some 12-19 digit stretch of `digits` passes the Luhn check, in O(len)."""
    sums = _luhn_sums(digits)
    for end in range(12, len(digits) + 1):
        for length in range(12, min(MAX_PAN_DIGITS, end) + 1):
            if _passes(sums, end - length, end):
                return True
    return False


def is_card_number(run: str) -> bool:
    """Whether a run of digits (up to three separators between them) holds a card number:
    a Luhn-valid 12-19 digit stretch made of whole groups (`4111 1111 1111 1111` in
    `qty 2 4111 1111 1111 1111 7`). More than 19 digits with no separator count if any
    stretch of them passes (nearly always: such a run is masked); 12-19 digits with no
    separator only as a whole, as one Luhn check in ten passes by chance. Linear in the
    run: every stretch is checked in O(1) from prefix sums."""
    if not run.isascii():  # digits of another script count as the ASCII ones they mean
        run = "".join(str(unicodedata.decimal(c, c)) for c in run)
    parts = _SEPARATOR.split(run)
    groups = parts[::2]
    # A gap is wide when it has more than one separator (`%20` is one).
    wide = [len(s) - 2 * s.count("%20") > 1 for s in parts[1::2]]
    # A group longer than a card number holds any stretch of it, as an unbroken run does
    # (a PAN with its expiry glued on, then a CVV: `41111111111111111225 123`).
    if any(len(g) > MAX_PAN_DIGITS and luhn_window(g) for g in groups):
        return True
    digits = "".join(groups)
    sums = _luhn_sums(digits)
    starts = [0]
    for g in groups:
        starts.append(starts[-1] + len(g))
    for i in range(len(groups)):
        has_wide = has_short = False
        for j in range(i + 1, len(groups) + 1):
            size = starts[j] - starts[i]
            if size > MAX_PAN_DIGITS:
                break  # no card number is longer: this bounds a run's cost (linear in it)
            has_short = has_short or len(groups[j - 1]) < MIN_WIDE_GROUP
            has_wide = has_wide or (j - 1 > i and wide[j - 2])
            if size >= 12 and not (has_wide and has_short) and _passes(sums, starts[i], starts[j]):
                return True
    return False


def _iban_value(ch: str) -> int:
    return ord(ch) - 48 if ch <= "9" else ord(ch) - 55  # A=10 ... Z=35


def _iban_at(text: str, start: int) -> int:
    """End of a checksum-valid IBAN starting at `start` (single spaces allowed), else -1."""
    country = text[start : start + 2].upper()
    want = _IBAN_LENGTHS.get(country)
    # mod 97 of the rearranged number: BBAN, then country letters and check digits.
    tail = 0
    for ch in country + text[start + 2 : start + 4]:
        v = _iban_value(ch)
        tail = tail * (100 if v > 9 else 10) + v
    tail_digits = len(str(tail))
    rem, count, i, end = 0, 4, start + 4, -1
    while i < len(text) and count < 34:
        ch = text[i]
        if ch == " " and i + 1 < len(text) and text[i + 1] != " ":
            i += 1
            continue
        if not ch.isascii() or not ch.isalnum():
            break
        v = _iban_value(ch.upper())
        rem = (rem * (100 if v > 9 else 10) + v) % 97
        count += 1
        i += 1
        if count >= 15 and (want is None or count == want):
            if (rem * 10**tail_digits + tail) % 97 == 1:
                end = i
            if want is not None:
                break
    return end


def _mask_ibans(text: str, hits: list[str]) -> str:
    out: list[str] = []
    pos = 0
    for m in _IBAN_START.finditer(text):
        if m.start() < pos:
            continue
        end = _iban_at(text, m.start())
        if end > 0:
            out += [text[pos : m.start()], MASK.format("iban")]
            hits.append("iban")
            pos = end
    return text if not out else "".join(out) + text[pos:]


def _mask_pairs(text: str, hits: list[str]) -> str:
    out: list[str] = []
    pos = scan = 0
    while (m := _PAIR.search(text, scan)) is not None:
        scan = m.end()  # a name that is no secret: its value may hold the next name
        kind = secret_kind(m[1])
        if kind is None:
            continue
        value = _PAIR_VALUE.match(text, m.end())
        if value is None or text.startswith("<masked:", m.end()):
            continue
        out += [text[pos : m.end()], MASK.format(kind)]
        hits.append(kind)
        pos = scan = value.end()
    return text if not out else "".join(out) + text[pos:]


def mask_text(text: str, hits: list[str]) -> str:
    """`text` with every card number, IBAN, JWT and Bearer/Basic credential masked; the
    kind of each mask is appended to `hits`."""
    if not may_hold_secret(text):
        return text
    if _INVISIBLE.search(text) is None:
        return mask_all(text, hits)
    # The detectors see the text as it shows, and a text they mask is written so: a card
    # with invisible characters between (or around) its groups is a card, and they count
    # for nothing in a gap. A text with nothing to mask is written as it was sent.
    found = len(hits)
    out = mask_all(_visible(text), hits)
    return out if len(hits) > found else text


def _visible(text: str) -> str:
    """`text` as it shows: without its invisible characters. Digits they part are one
    run, as on screen (`2<soft hyphen>4111 1111 ...` shows as `24111 1111 ...`)."""
    return _INVISIBLE.sub("", text)


def may_hold_secret(text: str) -> bool:
    """False only for a text no detector of `mask_all` could match: the fast pre-check
    (most ids and names have nothing any detector needs)."""
    return len(text) >= MIN_SECRET_CHARS and _GATE.search(text) is not None


def mask_all(text: str, hits: list[str]) -> str:
    """`mask_text` without its pre-check: every detector run over `text`."""

    def sub(kind: str) -> Any:
        def replace(m: re.Match[str]) -> str:
            if kind == "pan" and not is_card_number(m[0]):
                return m[0]
            hits.append(kind)
            return MASK.format(kind)

        return replace

    before = text
    text = _JWT.sub(sub("jwt"), text)
    text = _AUTH.sub(sub("bearer"), text)
    text = _mask_pairs(text, hits)
    # A credential or a secret-named pair ends at a space, so one whose value is a spaced
    # card number takes only its first group (`cvv: 4111 1111 1111 1111`), and a JWT takes
    # a first group glued to its signature: the card is found in the text before them, and
    # what is left of it masked below.
    cards = [] if text == before else [m[0] for m in _DIGIT_RUN.finditer(before)]
    text = _mask_ibans(text, hits)
    text = _DIGIT_RUN.sub(sub("pan"), text)
    cards = [run for run in cards if is_card_number(run)]
    return _mask_rest(text, cards, hits) if cards else text


def _mask_rest(text: str, cards: list[str], hits: list[str]) -> str:
    """`text` with what is left of each card in `cards` (a tail from a group on, 8 digits
    or more) masked where it stands: right after a credential's or pair's mask."""
    tails: set[str] = set()
    for run in cards:
        # A mask takes the value up to a space: the first group, or the first few when
        # they are joined by dashes or dots. Digits counted once, not per tail.
        left = sum(c.isdigit() for c in run)
        start = 0
        for n, cut in enumerate(_SEPARATOR.finditer(run)):
            left -= sum(c.isdigit() for c in run[start : cut.start()])
            start = cut.end()
            if left < 8 or n == MAX_PAN_DIGITS:
                break
            tails.add(run[start:])
    if not tails:
        return text
    longest_first = sorted(tails, key=len, reverse=True)

    def replace(m: re.Match[str]) -> str:
        after = m[2]
        for tail in longest_first:
            if after.startswith(tail) and not after[len(tail) : len(tail) + 1].isdigit():
                hits.append("pan")
                return m[1] + MASK.format("pan") + after[len(tail) :]
        return m[0]

    return _AFTER_MASK.sub(replace, text)


def json_may_hold_secret(text: str) -> bool:
    """False only for a JSON text in which no value or key is one `Masker.tree` would
    change (mask, drop or cut): the pre-check that writes such a text as it is."""
    return (
        _RAW_GATE.search(text) is not None
        or _INVISIBLE.search(text) is not None  # a value's digits may be parted by them
        or _RAW_SECRET.search(_NOT_ALNUM.sub("", text.lower())) is not None
    )


# Escapes of Rust's `{:?}` (Cedar's messages), Python's repr and JSON.
# A run of backslashes is read as one: a value quoted twice (`\\\\n`) is the same value.
_ESCAPE = re.compile(
    r"\\+(?:u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|U([0-9a-fA-F]{8})"
    r"|([ntr0fvb]))"
)
# JSON writes a character past U+FFFF as two escaped surrogates (`\ud804\udcbd`).
_SURROGATE_PAIR = re.compile(r"\\+u([dD][89abAB][0-9a-fA-F]{2})\\+u([dD][c-fC-F][0-9a-fA-F]{2})")
_SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "0": "\0", "f": "\f", "v": "\v", "b": " "
}  # fmt: skip
# An escape is at most this long (`\U0010ffff`): unescaping this many times the scanned
# window's characters covers all of it, and bounds the work on a long message.
_LONGEST_ESCAPE = 10


def _paired(m: re.Match[str]) -> str:
    high, low = int(m[1], 16), int(m[2], 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def _unescaped(m: re.Match[str]) -> str:
    if m[5] is not None:
        return _SIMPLE_ESCAPES[m[5]]
    code = int(m[1] or m[2] or m[3] or m[4], 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:  # no character: kept as written
        return m[0]
    return chr(code)


def parse_path(path: str) -> tuple[str, ...]:
    """`context.customer.email` -> its keys; ValueError naming what is wrong."""
    parts = tuple(path.split("."))
    if len(parts) < 2 or parts[0] not in PATH_ROOTS or not all(parts):
        raise ValueError(
            f"path {path!r} must be {' or '.join(PATH_ROOTS)} followed by .KEY segments "
            "(`*` for any key)"
        )
    return parts


class OverBudget(Exception):
    """A tree's masked output grew past its byte budget."""


@dataclass
class Stats:
    """What masking one record did: how many values it masked, which fields it cut."""

    masked: int = 0
    truncated: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Rule:
    keys: tuple[str, ...]
    drop: bool


class Masker:
    def __init__(self, mask_paths: Sequence[str] = (), drop_paths: Sequence[str] = ()) -> None:
        rules = [_Rule(parse_path(p), False) for p in mask_paths]
        rules += [_Rule(parse_path(p), True) for p in drop_paths]
        # Rules by root, each as (rule, how many of its keys matched so far).
        self._clean: dict[str, str] = {}  # texts with nothing to mask -> their JSON line
        self._rules = {
            root: tuple((r, 1) for r in rules if r.keys[0] == root) for root in PATH_ROOTS
        }

    def text(self, value: str, stats: Stats, where: str, limit: int = MAX_VALUE_CHARS) -> str:
        """A caller-controlled string, masked and cut to `limit` characters."""
        if len(value) <= limit and not may_hold_secret(value):
            return value  # the common case: nothing any detector could match
        hits: list[str] = []
        window = value[: limit + _STRADDLE]
        out = mask_text(window, hits)
        stats.masked += len(hits)
        keep = limit
        if len(window) < len(value):
            if _JWT_OPEN.search(out):  # a JWT longer than the window: its second dot unseen
                out = _JWT_OPEN.sub(MASK.format("jwt"), out)
                stats.masked += 1
            # Only the window was scanned, and masks may have shortened it: keep no output
            # that came from past `limit` in the value (the last _STRADDLE characters are
            # where a secret running on past the window was not seen whole).
            keep = max(0, keep - max(0, len(window) - len(out)))
        if len(value) > limit or len(out) > keep:
            stats.truncated.add(where)
            out = out[:keep] + ELLIPSIS
        return out

    def message(self, value: str, stats: Stats, where: str, limit: int = MAX_VALUE_CHARS) -> str:
        """An error message, which may quote a caller's string escaped (Cedar's and
        Python's `\\n`, `\\u{a0}`, `\\xa0`, JSON's `\\u00a0`): the escapes are read
        back first, so a card number written with newlines between its groups is seen
        as one. Then `text`. A message with nothing to mask is written as it came, its
        escapes kept (`C:\\runbooks\\new` is not a line break)."""
        if "\\" not in value:
            return self.text(value, stats, where, limit)
        cut = (limit + _STRADDLE) * _LONGEST_ESCAPE
        head = _ESCAPE.sub(_unescaped, _SURROGATE_PAIR.sub(_paired, value[:cut]))
        own = Stats()
        out = self.text(head + value[cut:], own, where, limit)
        if not own.masked:
            return self.text(value, stats, where, limit)
        stats.masked += own.masked
        stats.truncated |= own.truncated
        return out

    def tree_text(self, root: str, text: str, stats: Stats, budget: int) -> str:
        """A JSON text (`context` or `entities`), masked, as one line of JSON; OverBudget
        (or ValueError if it is not JSON). Most texts hold nothing any rule could touch,
        which one pass over the text shows: those are written as they are."""
        clean = self._clean.get(text)
        if clean is not None:
            return clean
        if len(text) <= budget and not self._rules[root] and not json_may_hold_secret(text):
            line = text
            if _JSON_LINE.search(text):
                line = json.dumps(json.loads(text), separators=(",", ":"))
            # Only texts written as they are, so the cache holds nothing a record may not.
            if len(self._clean) >= CLEAN_CACHE_ENTRIES:
                self._clean.clear()
            self._clean[text] = line
            return line
        tree = self.tree(root, json.loads(text), stats, budget)
        return json.dumps(tree, separators=(",", ":"))

    def tree(self, root: str, value: Any, stats: Stats, budget: int) -> Any:
        """A JSON tree (`context` or `entities`), masked; OverBudget once its output would
        exceed `budget` bytes."""
        walk = _Walk(self, stats, root, budget)
        return walk.value(value, self._rules[root])


class _Walk:
    def __init__(self, masker: Masker, stats: Stats, root: str, budget: int) -> None:
        self.masker, self.stats, self.root, self.left = masker, stats, root, budget
        self.alike: dict[str, int] = {}  # masked key -> the next number to try

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise OverBudget(self.root)

    def value(self, v: Any, active: tuple[tuple[_Rule, int], ...]) -> Any:
        if isinstance(v, str):
            out = self.masker.text(v, self.stats, self.root)
            self.spend(len(out) + 3)
            return out
        if isinstance(v, bool) or v is None:
            self.spend(5)
            return v
        if isinstance(v, int):
            digits = str(abs(v)) if -(10**19) < v < 10**19 else ""
            self.spend(len(digits) + 2)
            if not digits or (len(digits) >= 12 and is_card_number(digits)):
                self.stats.masked += 1
                return MASK.format("pan" if digits else "number")
            return v
        if isinstance(v, list):
            self.spend(2)
            return [self.value(x, active) for x in v]
        if isinstance(v, dict):
            return self.record(v, active)
        self.spend(8)
        return MASK.format("value")  # nothing else comes out of a JSON parse

    def record(self, d: dict[Any, Any], active: tuple[tuple[_Rule, int], ...]) -> dict[str, Any]:
        self.spend(2)
        out: dict[str, Any] = {}
        for key, v in d.items():
            key = str(key)
            inner: list[tuple[_Rule, int]] = []
            action: bool | None = None  # True: drop, False: mask
            for rule, at in active:
                if rule.keys[at] in ("*", key):
                    if at + 1 == len(rule.keys):
                        action = rule.drop if action is None else action or rule.drop
                    else:
                        inner.append((rule, at + 1))
            if action is True:
                self.stats.masked += 1
                continue
            name = self.masker.text(key, self.stats, self.root)
            if name in out:  # two keys masked alike: keep both values apart
                n = self.alike.get(name, 1)
                while f"{name}'{n}" in out:
                    n += 1
                self.alike[name] = n + 1
                name = f"{name}'{n}"
            self.spend(len(name) + 4)
            kind = "path" if action is False else secret_kind(key)
            if kind is not None:
                self.stats.masked += 1
                out[name] = MASK.format(kind)
                self.spend(16)
            else:
                out[name] = self.value(v, tuple(inner))
        return out
