"""Suites for the tiny bundle, shared by the coverage, mutation, compare and report tests."""

from __future__ import annotations

# Decisions only: two mutants of suspended-no-edit survive (suspended-deny masks it).
DECISIONS_ONLY = """
tests:
  - {name: owner edits, principal: User::"ann", action: edit, resource: Doc::"d1", expect: allow}
  - {name: public read, principal: User::"cat", action: read, resource: Doc::"d2", expect: allow}
  - {name: suspended reads nothing, principal: User::"ben", action: read, resource: Doc::"d2",
     expect: deny}
  - {name: suspended edits nothing, principal: User::"ben", action: edit, resource: Doc::"d2",
     expect: deny}
  - {name: share, principal: User::"cat", action: read, resource: Doc::"d1", expect: allow}
  - {name: sunset, principal: User::"ann", action: edit, resource: Doc::"d1", expect: deny,
     context: {now: {__extn: {fn: datetime, arg: "2031-01-01"}}}}
"""

# The same, pinning which policies decide: every mutant is noticed.
PINNED = DECISIONS_ONLY.replace(
    """resource: Doc::"d2",
     expect: deny}
  - {name: share""",
    """resource: Doc::"d2",
     expect: {decision: deny, determining: [suspended-deny, suspended-no-edit]}}
  - {name: share""",
)
assert PINNED != DECISIONS_ONLY

# One test of each status, for the reporters.
MIXED = """
name: mixed
tests:
  - {name: passes, principal: User::"ann", action: edit, resource: Doc::"d1", expect: allow}
  - {name: fails, principal: User::"cat", action: edit, resource: Doc::"d1",
     expect: {decision: allow, determining: [owner-edit]}}
  - {name: errs, principal: User::"ann", action: erase, resource: Doc::"d1", expect: deny}
  - {name: skipped, principal: User::"ann", action: read, resource: Doc::"d1", expect: deny,
     skip: waiting for a policy change}
"""
