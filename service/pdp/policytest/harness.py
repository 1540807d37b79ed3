"""One `pdp test` run: load, select, decide, judge, measure coverage, mutate, compare; exit code."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pdp.bundle import Bundle, compile_bundle, load_bundle
from pdp.bundle_files import read_bundle_files
from pdp.errors import BundleError
from pdp.policytest.compare import Comparison, compare
from pdp.policytest.coverage import Coverage, measure
from pdp.policytest.loader import load_suites
from pdp.policytest.model import Case, Outcome, Problem, Status, Suite, Where
from pdp.policytest.mutate import Mutation, run_mutation
from pdp.policytest.runner import Run, policy_annotations, run_cases

EXIT_PASSED, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


@dataclass(frozen=True)
class Options:
    bundle: Path
    suites: tuple[Path, ...]
    pattern: str | None = None  # -k: a substring or glob of "suite/test name"
    min_coverage: float | None = None
    mutate: bool = False
    compare: Path | None = None


@dataclass(frozen=True)
class Report:
    options: Options
    bundle: Bundle | None = None
    bundle_error: BundleError | None = None  # the bundle, or the --compare bundle, is invalid
    suites: tuple[Suite, ...] = ()
    problems: tuple[Problem, ...] = ()
    run: Run | None = None
    coverage: Coverage | None = None
    mutation: Mutation | None = None
    comparison: Comparison | None = None
    seconds: float = 0.0

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return () if self.run is None else self.run.outcomes

    def count(self, status: Status) -> int:
        return sum(o.status is status for o in self.outcomes)

    @property
    def coverage_too_low(self) -> bool:
        wanted = self.options.min_coverage
        return wanted is not None and self.coverage is not None and self.coverage.percent < wanted

    @property
    def exit_code(self) -> int:
        if self.bundle_error or self.problems or self.count(Status.ERROR) or self.run is None:
            return EXIT_INVALID
        if self.count(Status.FAIL) or self.coverage_too_low:
            return EXIT_FAILED
        if self.mutation is not None and self.mutation.survivors:
            return EXIT_FAILED
        return EXIT_PASSED


def select(cases: Sequence[Case], pattern: str | None) -> list[Case]:
    """`-k`: cases whose "suite/name" contains `pattern` (a glob; case-insensitive)."""
    if not pattern:
        return list(cases)
    glob = f"*{pattern.lower()}*"
    return [c for c in cases if fnmatch.fnmatchcase(c.id.lower(), glob)]


def run_harness(options: Options) -> Report:
    started = time.perf_counter()
    try:
        files = read_bundle_files(options.bundle)
        bundle = compile_bundle(files)
        other = load_bundle(options.compare) if options.compare is not None else None
    except BundleError as exc:
        return Report(options, bundle_error=exc, seconds=time.perf_counter() - started)
    suites, problems = load_suites(options.suites, bundle)
    cases = select([c for s in suites for c in s.cases], options.pattern)
    if not cases and not problems:
        what = f"no test matches -k {options.pattern!r}" if options.pattern else "no tests"
        problems.append(Problem(Where(", ".join(map(str, options.suites))), what))
    if not cases:
        return Report(options, bundle, None, tuple(suites), tuple(problems))
    run = run_cases(bundle, cases)
    coverage = measure(bundle, run.outcomes)
    mutation = None
    if options.mutate:
        notes = policy_annotations(bundle)
        mutation = run_mutation(files, bundle, cases, run.outcomes, notes)
    comparison = compare(cases, run.verdicts, other) if other is not None else None
    return Report(
        options,
        bundle,
        None,
        tuple(suites),
        tuple(problems),
        run,
        coverage,
        mutation,
        comparison,
        time.perf_counter() - started,
    )
