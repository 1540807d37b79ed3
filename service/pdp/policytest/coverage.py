"""Policy coverage: which policies and template links some test made determining."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pdp.bundle import Bundle
from pdp.policytest.model import Outcome


@dataclass(frozen=True, slots=True)
class PolicyCoverage:
    policy_id: str
    file: str
    line: int | None  # None for a link (links.json entries have no line of their own)
    kind: str  # "policy" or "link" (templates are exercised through their links)
    tests: int  # how many tests it determined the decision of
    template: str | None = None  # for a link: its template's id

    @property
    def covered(self) -> bool:
        return self.tests > 0


@dataclass(frozen=True, slots=True)
class Coverage:
    policies: tuple[PolicyCoverage, ...]
    unlinked_templates: tuple[str, ...]  # templates with no link: nothing can exercise them

    @property
    def covered(self) -> int:
        return sum(p.covered for p in self.policies)

    @property
    def total(self) -> int:
        return len(self.policies)

    @property
    def percent(self) -> float:
        return 100.0 if not self.policies else 100.0 * self.covered / self.total

    @property
    def uncovered(self) -> tuple[PolicyCoverage, ...]:
        return tuple(p for p in self.policies if not p.covered)


def measure(bundle: Bundle, outcomes: Sequence[Outcome]) -> Coverage:
    """A policy is covered when it is among the determining policies of a decided test."""
    hits = Counter(p for o in outcomes if o.decision is not None for p in set(o.determining))
    units: list[PolicyCoverage] = []
    linked: set[str] = set()
    for src in bundle.policies.values():
        if src.is_template:
            continue
        count = hits[src.policy_id]
        if src.template_id is None:
            units.append(PolicyCoverage(src.policy_id, src.file, src.line, "policy", count))
        else:
            linked.add(src.template_id)
            unit = PolicyCoverage(src.policy_id, src.file, None, "link", count, src.template_id)
            units.append(unit)
    units.sort(key=lambda u: (u.file, u.line or 0, u.policy_id))
    unlinked = sorted(
        s.policy_id for s in bundle.policies.values() if s.is_template and s.policy_id not in linked
    )
    return Coverage(tuple(units), tuple(unlinked))
