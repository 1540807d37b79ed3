"""Split Cedar policy text into statements, each with the line it starts on.

Cedar's parser (through cedarpy) reports neither positions nor which policy of a
file failed; splitting first lets every error name `file:line`. A `;` ends a
statement everywhere outside string literals and `//` comments, which is all
the lexing this needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statement:
    line: int  # 1-based line of the statement's first non-blank, non-comment character
    text: str  # the statement including its trailing `;` (absent only for trailing junk)


def split_statements(text: str) -> list[Statement]:
    statements: list[Statement] = []
    start = 0  # offset where the current statement's text begins
    first: int | None = None  # offset of its first significant character
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if c == '"':
            if first is None:
                first = i
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if not c.isspace() and first is None:
            first = i
        if c == ";":
            statements.append(Statement(_line_of(text, first), text[start : i + 1]))
            start, first = i + 1, None
        i += 1
    if first is not None:
        statements.append(Statement(_line_of(text, first), text[start:]))
    return statements


def _line_of(text: str, offset: int | None) -> int:
    return text.count("\n", 0, offset or 0) + 1
