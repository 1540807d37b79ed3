"""Masking's bounds, found by attacking the admin audit log (they hold for decision logs
too, which share `Masker.text`): a digit run costs a number of Luhn checks linear in its
groups, and cutting a value whose window shrank under masks never keeps digits from past
the scanned window."""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp import masking
from pdp.masking import MAX_PAN_DIGITS, MAX_VALUE_CHARS, Masker, Stats, is_card_number

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZTEyMyJ9."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2"
)
PANS = ["4111111111111111", "5500000000000004", "340000000000009", "6011000000000004"]


def luhn(digits: str) -> bool:
    """The Luhn check, written out here: the reference the masker's prefix sums are held to."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
    return total % 10 == 0


def unmatched_run(groups: int) -> str:
    """Single-digit groups in which no stretch of 12..19 digits passes Luhn: the scan
    finds nothing, so it cannot stop early (the attacker's input)."""
    digits = ""
    for _ in range(groups):
        digits += next(
            c
            for c in "0123456789"
            if not any(
                luhn((digits + c)[-n:])
                for n in range(12, MAX_PAN_DIGITS + 1)
                if n <= len(digits) + 1
            )
        )
    return " ".join(digits)


@pytest.mark.parametrize("groups", [50, 500, 5000])
def test_a_digit_run_costs_luhn_checks_linear_in_its_groups(
    groups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Counter[str]()
    real = masking._passes

    def counted(sums: tuple[list[int], list[int]], a: int, b: int) -> bool:
        calls["checks"] += 1
        return real(sums, a, b)

    monkeypatch.setattr(masking, "_passes", counted)
    assert not is_card_number(unmatched_run(groups))
    # At most one O(1) check per window of whole groups of 12..19 digits: 8 per start.
    assert calls["checks"] <= 8 * groups, calls
    assert calls["checks"] >= groups - 19  # the run was scanned, not skipped


def reference(run: str) -> bool:
    """is_card_number as its docstring says, by brute force (luhn on each stretch); a
    window with a gap of two or three separators needs groups of 3 digits or more."""
    parts = re.split(r"((?:%20|[\s.\-+\u2010-\u2015\u2212])+)", run)
    groups, gaps = parts[::2], [len(g.replace("%20", "_")) for g in parts[1::2]]
    for g in groups:
        if len(g) > MAX_PAN_DIGITS:
            if any(
                luhn(g[a:b])
                for b in range(12, len(g) + 1)
                for a in range(max(0, b - MAX_PAN_DIGITS), b - 11)
            ):
                return True
    for i in range(len(groups)):
        for j in range(i + 1, len(groups) + 1):
            joined = "".join(groups[i:j])
            if len(joined) > MAX_PAN_DIGITS:
                break
            wide = any(n > 1 for n in gaps[i : j - 1])
            if wide and any(len(g) < 3 for g in groups[i:j]):
                continue
            if len(joined) >= 12 and luhn(joined):
                return True
    return False


def test_card_numbers_are_found_as_the_brute_force_finds_them() -> None:
    seen = Counter[bool]()

    @settings(max_examples=1_500, deadline=None)
    @given(
        st.lists(st.text(alphabet="0123456789", min_size=1, max_size=24), min_size=1, max_size=8),
        st.sampled_from([" ", "-", ".", "\n", "%20", "  ", " - ", "\r\n", ".%20", "+", " \u2013 "]),
    )
    def prop(groups: list[str], sep: str) -> None:
        run = sep.join(groups)
        got = is_card_number(run)
        assert got == reference(run), run
        seen[got] += 1

    prop()
    assert min(seen[True], seen[False]) >= 300, seen


def test_a_card_number_is_still_found_among_grouped_digits() -> None:
    assert is_card_number("qty 2 4111 1111 1111 1111 7".split(" ", 2)[2])
    assert is_card_number("4111 1111 1111 1111")
    assert is_card_number("9 9 9 " + "4111 1111 1111 1111")
    assert not is_card_number("4111 1111 1111 1112")


@st.composite
def shrinking_values(draw: st.DrawFn) -> tuple[str, str]:
    """A value that masks shorten (JWTs, other PANs) before a PAN placed near the end of
    the scanned window, then more text: (value, the PAN)."""
    shrinkers = draw(st.lists(st.sampled_from([JWT, JWT, *PANS]), min_size=0, max_size=2))
    head = "".join(s + " " for s in shrinkers)
    pan = draw(st.sampled_from(PANS))
    window = MAX_VALUE_CHARS + masking._STRADDLE
    # Anywhere, or across the window's end (where a cut after shrinking used to leak).
    at = max(
        len(head), draw(st.integers(len(head), window + 10) | st.integers(window - 15, window - 1))
    )
    pad = "x" * max(0, at - len(head))
    tail = draw(st.sampled_from([" tail", "x" * 300, " " + JWT]))
    return head + pad + pan + tail, pan


def test_a_cut_never_keeps_digits_from_past_the_scanned_window() -> None:
    seen = Counter[str]()

    @settings(max_examples=600, deadline=None)
    @given(shrinking_values())
    def prop(case: tuple[str, str]) -> None:
        value, pan = case
        out = Masker().text(value, Stats(), "x")
        assert len(out) <= MAX_VALUE_CHARS + 1
        for run in re.findall(r"\d{12,}", out):
            assert run not in pan, (run, out)  # no 12+ digits of the card survive
        start = value.index(pan)
        shrunk = any(s in value[:start] for s in (JWT, *PANS))
        window = MAX_VALUE_CHARS + masking._STRADDLE
        if shrunk and start < window < start + len(pan):
            seen["straddling a shrunk window"] += 1
        elif start + len(pan) <= window:
            seen["inside"] += 1
        else:
            seen["past"] += 1

    prop()
    assert min(seen["straddling a shrunk window"], seen["inside"], seen["past"]) >= 30, seen


def rust_debug(s: str) -> str:
    """How Cedar (Rust's `{:?}`) quotes a string in its messages."""
    out = []
    for ch in s:
        if ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ch.isprintable() and ch != "\xa0":
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    return '"' + "".join(out) + '"'


RENDERINGS = {
    "repr": repr,
    "json-twice": lambda s: json.dumps(json.dumps(s)),  # a message quoting a quoted value
    "json": json.dumps,
    "json-utf8": lambda s: json.dumps(s, ensure_ascii=False),
    "rust": rust_debug,
}


def test_a_message_quoting_a_card_number_escaped_is_masked() -> None:
    """Error messages quote a caller's strings escaped; the separators people type between
    a card's groups (newlines, tabs, no-break spaces) must not hide it."""
    seen = Counter[str]()

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(PANS),
        st.sampled_from(["\n", "\t", "\xa0", "\u2007", " ", "-", "\f", "\r\n"]),
        st.sampled_from(sorted(RENDERINGS)),
        st.text(alphabet="abc :'`", max_size=20),
    )
    def prop(pan: str, sep: str, how: str, around: str) -> None:
        written = sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
        message = f"{around}attribute has type string: {RENDERINGS[how](written)}{around}"
        out = Masker().message(message, Stats(), "m", 512)
        assert pan not in re.sub(r"\D", "", out), (message, out)
        assert "<masked:pan>" in out, (message, out)
        seen[how] += 1
        seen[repr(sep)] += 1

    prop()
    assert min(seen[h] for h in RENDERINGS) >= 40, seen
    assert seen[repr("\n")] >= 30 and seen[repr("\xa0")] >= 30, seen
    # Nothing else changes: a message without escapes or secrets is kept as written.
    plain = 'entity `User::"bob"` has no attribute `org`'
    assert Masker().message(plain, Stats(), "m") == plain


def test_a_long_group_glued_to_a_card_number_is_still_checked() -> None:
    """A PAN with its expiry glued on, then a CVV: the long group is a run of its own."""
    assert is_card_number("41111111111111111225 123")
    assert is_card_number("00004111111111111111 5")
    out = Masker().text("card 41111111111111111225 123", Stats(), "x")
    assert "4111111111111111" not in out and "<masked:pan>" in out


def test_keys_masked_alike_are_numbered_not_grown() -> None:
    """1,400 keys that all mask to one name: distinct, each a few characters longer than
    the masked name (the output grows linearly with the keys, not quadratically)."""
    import itertools
    import string

    keys = ["pin=" + "".join(t) for t in itertools.product(string.ascii_letters, repeat=3)]
    tree = {k: 0 for k in keys[:1_400]}
    out = Masker().tree("entities", tree, Stats(), 1 << 20)
    assert len(out) == 1_400
    base = "pin=<masked:secret>"
    assert set(out) == {base} | {f"{base}'{n}" for n in range(1, 1_400)}


def test_a_jwt_longer_than_the_scanned_window_is_masked() -> None:
    claims = "eyJzdWIiOiJhbGljZSIsImVtYWlsIjoiYWxpY2VAZXhhbXBsZS5jb20ifQ" * 6  # past 304
    token = "eyJhbGciOiJSUzI1NiJ9." + claims + "." + "S" * 342
    out = Masker().text(f"token {token}", Stats(), "x")
    assert "eyJ" not in out and "ZXhhbXBsZS5jb20" not in out, out


def test_a_credential_or_secret_pair_does_not_take_half_a_card_number() -> None:
    """A pair's value ends at a space: one whose value is a spaced card number takes its
    first group only, and what is left of the card is masked as a card."""
    seen = Counter[str]()

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(["cvv: ", "password=", "api_key: ", "Bearer ", "token=", "note: "]),
        st.sampled_from(PANS),
        st.sampled_from([" ", "-", "\n"]),
        st.sampled_from(["", " tail", ", then 1234"]),
    )
    def prop(lead: str, pan: str, sep: str, tail: str) -> None:
        spaced = sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
        out = Masker().text(f"pay {lead}{spaced}{tail}", Stats(), "x")
        digits = re.sub(r"\D", "", out.replace("1234", ""))
        assert not any(pan[i : i + 8] in digits for i in range(len(pan) - 7)), (lead, out)
        seen[lead.strip(" :=")] += 1

    prop()
    assert min(seen.values()) >= 20 and len(seen) == 6, seen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # URL escapes: their hex digits are not the card's, and %20 separates groups.
        ("Bearer%204111 1111 1111 1111", "<masked:bearer> <masked:pan>"),
        ("note%204111 1111 1111 1111", "note%20<masked:pan>"),
        ("q=a%204111111111111111", "q=a%20<masked:pan>"),
        ("password=4111%201111%201111%201111", "password=<masked:secret>%20<masked:pan>"),
        # What a pair left of a card is masked where it stands, and nothing else.
        (
            "cvv: 4111-1111 1111 1111, ref 1111 1111 1111 7",
            "cvv: <masked:cvv> <masked:pan>, ref 1111 1111 1111 7",
        ),
        (
            "pin=1 card 4111 1111 1111 1111 order 1111 1111",
            "pin=<masked:secret> card <masked:pan> order 1111 1111",
        ),
        ("size 100%20 items 1234", "size 100%20 items 1234"),
    ],
)
def test_cards_next_to_url_escapes_and_pairs(text: str, expected: str) -> None:
    assert Masker().text(text, Stats(), "x") == expected


SEPARATORS = [" ", "-", ".", "\t", "\u00a0", "\n", "\r\n", "%20", "  ", " - ", "\r\n ", ". "]
SEPARATORS += ["+", "\u2013", " \u2014 ", "\u2212", "\u2011"]  # form encoding, Unicode dashes
# Invisible characters (soft hyphen, zero-width space and joiner, word joiner, BOM) are no
# separators: the masker drops them (`_visible`), so a gap of them alone joins two groups.
SEPARATORS += ["\u00ad", "\u200b", "\u200d", "\u2060", "\ufeff", " \u200b"]


@functools.cache
def invisible() -> list[str]:
    """Every character that shows nothing, listed here independently of the masker:
    Unicode's Cf and the other default-ignorables (bidi marks, embeddings and isolates,
    variation selectors, Hangul fillers, tags, ...). A walk over all of Unicode, once."""
    return [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) == "Cf"
        or c in (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164)
        or 0xFE00 <= c <= 0xFE0F
        or c == 0xFFA0
        or 0xE0000 <= c <= 0xE0FFF
    ]


def test_every_invisible_character_is_known_to_the_masker() -> None:
    """Each format character (category Cf) and default-ignorable code point: a list of a
    few by hand let the rest (bidi marks, isolates, variation selectors, ...) hide a card."""
    known = re.compile("[" + masking._INVISIBLE_CLASS + "]")
    assert [hex(ord(c)) for c in invisible() if not known.fullmatch(c)] == []
    visible = [c for c in ("a", "1", " ", "-", "\u00a0", "\ufffc", "\u20e3") if known.match(c)]
    assert visible == []


def test_invisible_characters_count_for_nothing_in_a_card_number() -> None:
    """Invisible characters anywhere in a card's gaps, next to up to three visible
    separators, or between its digits, or around it (phones wrap copied numbers in bidi
    marks), are masked as the same card without them: they never add to a gap."""
    seen = Counter[str]()

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(PANS),
        st.lists(st.sampled_from(["", " ", "-", " - ", "  ", ". "]), min_size=3, max_size=3),
        st.lists(st.sampled_from(invisible()), min_size=1, max_size=6),
        st.lists(st.integers(0, 40), min_size=6, max_size=6),
        st.sampled_from(["", "card ", "cvv: ", "Bearer "]),
    )
    def prop(pan: str, gaps: list[str], invisible: list[str], at: list[int], lead: str) -> None:
        spelled = pan[:4] + "".join(g + pan[4 + 4 * k : 8 + 4 * k] for k, g in enumerate(gaps))
        spelled += pan[16:]
        for ch, pos in zip(invisible, at, strict=False):
            pos %= len(spelled) + 1
            spelled = spelled[:pos] + ch + spelled[pos:]
        for out in (
            Masker().text(lead + spelled + " ok", Stats(), "x"),
            json.dumps(
                Masker().tree("context", {"v": lead + spelled}, Stats(), 10**6), ensure_ascii=False
            ),
            Masker().tree_text(
                "context", json.dumps({"v": spelled}, ensure_ascii=False), Stats(), 10**6
            ),
            Masker().message(json.dumps(spelled), Stats(), "errors"),  # escaped: `\u200e`
        ):
            digits = re.sub(r"\D", "", out)
            assert not any(pan[j : j + 8] in digits for j in range(len(pan) - 7)), (spelled, out)
        seen[unicodedata.category(invisible[0])] += 1
        seen["wide gap"] += any(len(g) > 1 for g in gaps)

    prop()
    assert seen["Cf"] >= 100 and seen["Mn"] >= 5 and seen["wide gap"] >= 100, seen


def test_a_text_with_invisible_characters_and_nothing_to_mask_is_written_as_sent() -> None:
    """Emoji joined by ZWJ next to digits, a bidi-wrapped phone number, a soft-hyphenated
    word: nothing masked, nothing rewritten."""
    for text in (
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467 of 3, room 12",
        "\u202a+44 20 7946 0958\u202c",
        "trans\u00adfer 2025-07-19 - 2025-08-01",
        "1\ufe0f\u20e3 2\ufe0f\u20e3",
    ):
        stats = Stats()
        assert Masker().text(text, stats, "x") == text and stats.masked == 0


def test_an_error_message_with_nothing_to_mask_keeps_its_escapes() -> None:
    """Escapes are read back to find what they hide; a message that hides nothing is
    written as it came (`C:\\runbooks\\new` is a path, not a line break)."""
    stats = Stats()
    note = r"kill switch: see C:\runbooks\new\table.md (\x41 \u{1F600})"
    assert Masker().message(note, stats, "reason") == note and stats.masked == 0
    stats = Stats()
    assert Masker().message(r'id "4111\n1111\n1111\n1111"', stats, "errors") == (
        'id "<masked:pan>"'
    )
    assert stats.masked == 1


def test_a_card_number_with_up_to_three_separators_between_groups_is_masked() -> None:
    """`4111  1111  1111  1111`, `4111 - 1111 - ...`, a line break and an indent: one
    to three separator characters between groups of 3 to 6 digits (as cards are
    grouped), in a value and in a JSON tree (context, attributes), are masked whole."""
    seen = Counter[int]()

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(PANS),
        st.lists(st.integers(3, 6), min_size=1, max_size=8),
        st.lists(st.sampled_from(SEPARATORS), min_size=8, max_size=8),
        st.sampled_from(["", "card ", "cvv: ", "Bearer ", JWT[:-1] + "x"]),
    )
    def prop(pan: str, sizes: list[int], seps: list[str], lead: str) -> None:
        groups, i = [], 0
        for n in sizes:
            if i < len(pan):
                groups.append(pan[i : i + n])
                i += n
        if i < len(pan):
            groups.append(pan[i:])
        if len(groups) > 1 and len(groups[-1]) < 3:  # as cards are grouped: no 1-2 digit tail
            groups[-2:] = [groups[-2] + groups[-1]]
        spelled = groups[0] + "".join(seps[k] + g for k, g in enumerate(groups[1:]))
        for out in (
            Masker().text(lead + spelled + " ok", Stats(), "x"),
            # Not ASCII-escaped: `\u00a0` would add digits of its own.
            json.dumps(
                Masker().tree("context", {"v": lead + spelled}, Stats(), 10**6), ensure_ascii=False
            ),
        ):
            digits = re.sub(r"\D", "", out)
            assert not any(pan[j : j + 8] in digits for j in range(len(pan) - 7)), (
                lead + spelled,
                out,
            )
        seen[max(len(sep) - sep.count("%20") * 2 for sep in seps[: len(groups) - 1] or [""])] += 1

    prop()
    assert seen[2] >= 40 and seen[3] >= 40, seen  # two- and three-character gaps reached


def test_a_card_number_glued_to_a_jwt_is_masked_whole() -> None:
    """A JWT's signature runs over letters, digits and dashes: a card written right after
    it loses its first group to the JWT's mask, and what is left of it is masked."""
    jwt = JWT[:-1] + "x"  # a signature ending in a letter: the card's first group is its own
    for card in ("4111 1111 1111 1111", "4111-1111 1111 1111", "4111  1111\r\n1111 1111"):
        out = Masker().text(f"{jwt}{card} x", Stats(), "x")
        assert out.startswith("<masked:jwt>") and out.endswith("<masked:pan> x"), out
        assert "1111" not in out, out


def test_date_and_amount_ranges_are_not_taken_for_card_numbers() -> None:
    """A gap of two or three separators (` - `) between groups of one or two digits is a
    range of dates, amounts or versions: never masked, however the Luhn sums fall."""
    seen = Counter[str]()

    @settings(max_examples=600, deadline=None)
    @given(
        st.sampled_from(["date", "amount", "version"]),
        st.lists(st.integers(0, 99_999), min_size=6, max_size=6),
        st.sampled_from([" - ", "  ", " --", "\r\n"]),
    )
    def prop(kind: str, n: list[int], gap: str) -> None:
        if kind == "date":
            one = f"{2000 + n[0] % 30}-{1 + n[1] % 12:02}-{1 + n[2] % 28:02}"
            two = f"{2000 + n[3] % 30}-{1 + n[4] % 12:02}-{1 + n[5] % 28:02}"
        elif kind == "amount":
            one, two = f"{n[0]}{n[1] % 10}.{n[2] % 100:02}", f"{n[3]}{n[4] % 10}.{n[5] % 100:02}"
        else:
            one, two = f"{n[0]}.{n[1] % 100}.{n[2] % 100}", f"{n[3]}.{n[4] % 100}.{n[5] % 100}"
        text = f"{one}{gap}{two}"
        assert Masker().text(text, Stats(), "x") == text
        if sum(c.isdigit() for c in text) >= 12:
            seen[kind] += 1  # long enough that a card check could have passed

    prop()
    assert seen["date"] >= 100 and seen["amount"] >= 100, seen
