"""pytest plugin: policy suites (`*_test.yaml` under a `policy_tests/` folder) as test items.

`pytest policy_tests/ [--pdp-bundle BUNDLE]` collects one item per test (and matrix cell);
each suite file is decided in one batch through the engine, on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pdp.policytest.loader import SuiteLoader
    from pdp.policytest.model import Case, Outcome

_STATE = pytest.StashKey["_State"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pdp-policytest", "cedar-pdp policy test suites")
    group.addoption(
        "--pdp-bundle",
        type=Path,
        default=None,
        help="bundle the policy suites run against (default: the repository's policies/)",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from pdp.policytest.loader import SUITES_FOLDER, TESTDATA, is_suite_file

    parts = file_path.parts
    if is_suite_file(file_path) and SUITES_FOLDER in parts and TESTDATA not in parts:
        suite_file: pytest.Collector = SuiteFile.from_parent(parent, path=file_path)
        return suite_file
    return None


@dataclass
class _State:
    loader: SuiteLoader
    places: dict[str, str]


def _state(config: pytest.Config) -> _State:
    if _STATE not in config.stash:
        from pdp.bundle import load_bundle
        from pdp.config import default_bundle
        from pdp.policytest.loader import SuiteLoader
        from pdp.policytest.report import policy_places

        bundle = load_bundle(config.getoption("--pdp-bundle") or default_bundle())
        config.stash[_STATE] = _State(SuiteLoader(bundle), policy_places(bundle))
    return config.stash[_STATE]


class PolicyTestFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("; ".join(outcome.failures))
        self.outcome = outcome


class SuiteFile(pytest.File):
    _outcomes: dict[str, Outcome] | None = None
    cases: tuple[Case, ...] = ()

    def collect(self) -> Iterator[pytest.Item]:
        from pdp.errors import BundleError
        from pdp.policytest.loader import suites_root

        try:
            state = _state(self.config)
        except BundleError as exc:
            raise self.CollectError(exc.message) from exc
        suite, problems = state.loader.load(self.path, suites_root(self.path))
        if problems or suite is None:
            raise self.CollectError("\n".join(f"invalid suite: {p}" for p in problems))
        self.cases = suite.cases
        for case in suite.cases:
            yield CaseItem.from_parent(self, name=case.name, case=case)

    def outcome(self, name: str) -> Outcome:
        if self._outcomes is None:
            from pdp.policytest.runner import run_cases

            run = run_cases(_state(self.config).loader.bundle, self.cases)
            self._outcomes = {o.case.name: o for o in run.outcomes}
        return self._outcomes[name]


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from pdp.policytest.model import Status

        assert isinstance(self.parent, SuiteFile)
        outcome = self.parent.outcome(self.case.name)
        if outcome.status is Status.SKIP:
            pytest.skip(outcome.failures[0])
        if outcome.status is not Status.PASS:
            raise PolicyTestFailed(outcome)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> Any:
        if isinstance(excinfo.value, PolicyTestFailed):
            from pdp.policytest.report import explain

            places = _state(self.config).places
            head = f"{self.case.where}: {self.case.id} ({excinfo.value.outcome.status.value})"
            return "\n".join([head, *explain(excinfo.value.outcome, places)])
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.case.where.line
        return self.path, None if line is None else line - 1, f"{self.case.id}"
