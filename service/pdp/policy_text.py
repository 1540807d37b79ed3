"""Locate the statements of a Cedar policy file, for messages only.

Cedar (through cedarpy) reports no source positions, so `file:line` in messages comes
from here. Which policies exist, how many, their ids and effects are Cedar's own parse
(`pdp.bundle`); a bundle uses these positions only when their count equals Cedar's,
and never to decide anything. A `;` ends a statement everywhere outside string
literals and `//` comments; a comment ends at `\\n` or a bare `\\r`, as in Cedar's lexer.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

# The regex engine does the scanning, not a Python loop per character: `_SKIP` passes
# blanks and comments before a statement, `_END` finds the tokens that matter inside one
# (a string literal, escapes skipped; a comment; the `;` that ends it).
_SKIP = re.compile(r"(?:\s+|//[^\r\n]*)*")
_END = re.compile(r'"(?:[^"\\]|\\.)*"?|//[^\r\n]*|;', re.S)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Statement:
    line: int  # 1-based line of the statement's first non-blank, non-comment character
    text: str  # the statement including its trailing `;` (absent only for trailing junk)


def split_statements(text: str) -> list[Statement]:
    breaks = [m.end() for m in _LINE_BREAK.finditer(text)]
    statements: list[Statement] = []
    start = 0  # offset where the current statement's text begins
    while True:
        skipped = _SKIP.match(text, start)  # always matches, perhaps nothing
        first = skipped.end() if skipped else start  # the statement's first significant char
        if first >= len(text):
            return statements
        end = len(text)
        for m in _END.finditer(text, first):
            if m.group() == ";":
                end = m.end()
                break
        statements.append(Statement(bisect.bisect_right(breaks, first) + 1, text[start:end]))
        start = end
