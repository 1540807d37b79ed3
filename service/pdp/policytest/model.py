"""Suite and result types of the policy test harness: frozen data, no behaviour beyond naming."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from pdp.model import CheckInput, Decision, PolicyError


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"  # the decision (or its explanation) is not the expected one
    ERROR = "error"  # the test could not run: its request does not fit the bundle's schema
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    line: int | None = None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a suite, a fixture or one of its tests is invalid (exit code 2)."""

    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SuiteInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Expectation:
    decision: Decision
    determining: frozenset[str] | None = None  # exactly these, when given
    determining_includes: frozenset[str] = frozenset()
    errors: bool | frozenset[str] = False  # False: none, True: some, a set: exactly these policies
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Case:
    """One request and what it must produce."""

    suite: str
    name: str
    where: Where
    request: CheckInput
    expect: Expectation
    labels: tuple[str, str, str]  # principal, action, resource as the suite wrote them
    kind: str = "test"  # "test" (table form) or "matrix" (a cell of a matrix)
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    file: str
    description: str
    cases: tuple[Case, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    status: Status
    decision: Decision | None = None
    determining: tuple[str, ...] = ()
    errors: tuple[PolicyError, ...] = ()
    failures: tuple[str, ...] = ()  # each unmet expectation, or why the test could not run
