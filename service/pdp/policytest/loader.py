"""Find suite files, load them (YAML, JSON Schema, fixtures) and build their cases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pdp.bundle import Bundle
from pdp.policytest.cases import SuiteBuilder
from pdp.policytest.fixtures import Fixtures, RequestEntitiesBuilder, fixtures_of, load_testdata
from pdp.policytest.model import Problem, Suite, SuiteInvalid, Where
from pdp.policytest.validate import validate
from pdp.policytest.yamlsrc import load_yaml, shown_path

SUITE_SUFFIXES = ("_test.yaml", "_test.yml")
TESTDATA = "testdata"
SUITES_FOLDER = "policy_tests"


def is_suite_file(path: Path) -> bool:
    return path.name.endswith(SUITE_SUFFIXES)


def discover(paths: Sequence[Path]) -> tuple[list[tuple[Path, Path]], list[Problem]]:
    """Suite files, each with the root its testdata/ lookup starts from, in a stable order."""
    found: list[tuple[Path, Path]] = []
    problems: list[Problem] = []
    for given in paths:
        if given.is_dir():
            for path in sorted(given.rglob("*")):
                rel = path.relative_to(given).parts
                hidden = any(p.startswith(".") or p == TESTDATA for p in rel[:-1])
                if is_suite_file(path) and path.is_file() and not hidden:
                    found.append((path, given))
        elif given.is_file():
            found.append((given, suites_root(given)))
        else:
            problems.append(Problem(Where(str(given)), "no such suite file or folder"))
    return found, problems


def suites_root(file: Path) -> Path:
    """For a suite file given on its own: the enclosing policy_tests/ folder, else its folder."""
    for parent in file.resolve().parents:
        if parent.name == SUITES_FOLDER:
            return parent
    return file.resolve().parent


def testdata_folders(file: Path, root: Path) -> list[Path]:
    """testdata/ folders from the root down to the suite's folder (deeper ones win)."""
    root, folder = root.resolve(), file.resolve().parent
    chain = [folder, *folder.parents]
    if root in chain:
        chain = chain[: chain.index(root) + 1]
    else:
        chain = [folder]
    return [d / TESTDATA for d in reversed(chain) if (d / TESTDATA).is_dir()]


class SuiteLoader:
    """Loads suites against one bundle, reading each testdata/ folder once."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.entities = RequestEntitiesBuilder(bundle)
        self.policy_ids = frozenset(p.policy_id for p in bundle.policies.values())
        self._folders: dict[Path, tuple[Fixtures, list[Problem]]] = {}

    def load(self, file: Path, root: Path) -> tuple[Suite | None, list[Problem]]:
        """A suite and its problems, those of the testdata/ folders it uses included."""
        fixtures = Fixtures()
        problems: list[Problem] = []
        for folder in testdata_folders(file, root):
            if folder not in self._folders:
                self._folders[folder] = load_testdata(folder)
            found, trouble = self._folders[folder]
            fixtures = fixtures.under(found)
            problems.extend(trouble)
        try:
            doc = load_yaml(file, shown_path(file))
        except SuiteInvalid as exc:
            return None, [*problems, *exc.problems]
        problems.extend(validate(doc))
        if problems:
            return None, problems
        try:
            fixtures = fixtures.under(fixtures_of(doc))
        except ValueError as exc:  # a uid the schema admits but Cedar syntax does not
            return None, [Problem(doc.where(()), str(exc))]
        return SuiteBuilder(doc, fixtures, self.entities, self.policy_ids).build()


def load_suites(paths: Sequence[Path], bundle: Bundle) -> tuple[list[Suite], list[Problem]]:
    """Every suite under `paths`, and every problem found in them (suite names are unique)."""
    files, problems = discover(paths)
    loader = SuiteLoader(bundle)
    suites: list[Suite] = []
    names: dict[str, str] = {}
    for file, root in files:
        suite, found = loader.load(file, root)
        problems.extend(p for p in found if p not in problems)  # testdata ones come once
        if suite is None:
            continue
        if suite.name in names:
            msg = f"suite name {suite.name!r} is also used by {names[suite.name]}"
            problems.append(Problem(Where(suite.file, 1), msg))
            continue
        names[suite.name] = suite.file
        suites.append(suite)
    if not files and not problems:
        where = Where(", ".join(str(p) for p in paths) or ".")
        problems.append(Problem(where, "no suite files (*_test.yaml) found"))
    return suites, problems
