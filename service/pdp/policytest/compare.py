"""Change impact: decide every suite request against a second bundle and list what differs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pdp.bundle import Bundle
from pdp.errors import InvalidRequest
from pdp.model import BundleVersion
from pdp.policytest.model import Case
from pdp.policytest.runner import Verdict, decide


@dataclass(frozen=True, slots=True)
class Change:
    case: Case
    before: str  # "ALLOW", "DENY" or "invalid: <reason>"
    after: str
    determining_before: tuple[str, ...]
    determining_after: tuple[str, ...]


@dataclass(frozen=True)
class Comparison:
    other: BundleVersion
    other_source: str
    requests: int
    decisions: tuple[Change, ...]  # the decision differs
    reasons: tuple[Change, ...]  # same decision, other determining policies


def compare(cases: Sequence[Case], verdicts: Sequence[Verdict], other: Bundle) -> Comparison:
    decisions: list[Change] = []
    reasons: list[Change] = []
    for case, before, after in zip(cases, verdicts, decide(other, cases), strict=True):
        change = Change(case, _shown(before), _shown(after), _why(before), _why(after))
        if change.before != change.after:
            decisions.append(change)
        elif set(change.determining_before) != set(change.determining_after):
            reasons.append(change)
    return Comparison(other.version, other.source, len(cases), tuple(decisions), tuple(reasons))


def _shown(verdict: Verdict) -> str:
    if isinstance(verdict, InvalidRequest):
        return f"invalid: {verdict.field}: {verdict.reason}"
    return verdict.decision.value.upper()


def _why(verdict: Verdict) -> tuple[str, ...]:
    return () if isinstance(verdict, InvalidRequest) else tuple(verdict.determining_policies)
