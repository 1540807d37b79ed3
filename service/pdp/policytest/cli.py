"""`pdp test` and `pdp lint`: argument parsing and output; the work is in harness.py and lint.py.

Exit codes: 0 passed; 1 tests failed (or coverage below --min-coverage, surviving mutants
with --mutate; for lint: findings); 2 the bundle or a suite is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pdp.config import default_bundle

DEFAULT_SUITES = "policy_tests"


def add_commands(sub: Any) -> None:
    """Register `test` and `lint` on the `pdp` command's subparsers."""
    test = sub.add_parser(
        "test",
        help="run policy test suites against a bundle",
        description="Run the YAML policy test suites (*_test.yaml) against a bundle. "
        "Exit 0: all passed; 1: tests failed, coverage too low or mutants survived; "
        "2: the bundle or a suite is invalid.",
    )
    test.add_argument("bundle", type=Path, nargs="?", help="bundle (default: the repo's policies/)")
    test.add_argument(
        "suites",
        type=Path,
        nargs="*",
        help="suite files or folders (default: ./policy_tests, else the one beside the bundle)",
    )
    test.add_argument(
        "-k", dest="pattern", metavar="PATTERN", help='run tests whose "suite/name" matches'
    )
    test.add_argument("--format", choices=("text", "json"), default="text")
    test.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML to FILE")
    test.add_argument(
        "--min-coverage", type=_percent, metavar="PCT", help="fail below PCT%% policy coverage"
    )
    test.add_argument(
        "--mutate", action="store_true", help="mutation testing: report policies no test pins"
    )
    test.add_argument(
        "--compare", type=Path, metavar="OTHER_BUNDLE", help="list requests whose decision differs"
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    test.set_defaults(func=run_test)

    lint = sub.add_parser("lint", help="check a bundle's policies for risky or unreviewed rules")
    lint.add_argument("bundle", type=Path, nargs="?", help="bundle (default: the repo's policies/)")
    lint.add_argument("--format", choices=("text", "json"), default="text")
    lint.add_argument(
        "--today", type=date.fromisoformat, help="date to age reviews from (YYYY-MM-DD)"
    )
    lint.add_argument("--max-review-age", type=int, default=90, metavar="DAYS")
    lint.add_argument(
        "--require",
        action="append",
        metavar="ANNOTATION",
        help="annotations every policy needs (default: owner, reviewed)",
    )
    lint.add_argument(
        "--ledger",
        type=Path,
        metavar="FILE",
        help="review ledger (default: policy_tests/reviews.json beside the bundle, if present)",
    )
    lint.add_argument(
        "--record-reviews",
        action="store_true",
        help="write the ledger: each policy's text hash and @reviewed date, as reviewed now",
    )
    lint.add_argument(
        "--strict",
        action="store_true",
        help="advisory findings (stale-review, review-not-recorded) fail the run too",
    )
    lint.set_defaults(func=run_lint)


def _percent(text: str) -> float:
    value = float(text.rstrip("%"))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value


def run_test(args: argparse.Namespace) -> int:
    from pdp.policytest import report as render
    from pdp.policytest.harness import Options, run_harness
    from pdp.policytest.junit import junit

    bundle, suites = _bundle_and_suites(args.bundle, list(args.suites))
    options = Options(
        bundle, tuple(suites), args.pattern, args.min_coverage, args.mutate, args.compare
    )
    result = run_harness(options)
    if args.junit is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(junit(result), encoding="utf-8")
    if args.format == "json":
        print(json.dumps(render.as_json(result), indent=2))
    else:
        sys.stdout.write(render.text(result, verbose=args.verbose))
    return result.exit_code


def _bundle_and_suites(bundle: Path | None, suites: list[Path]) -> tuple[Path, list[Path]]:
    """`pdp test SUITE_FILE`: a first argument that is a suite, not a bundle, is taken as one."""
    from pdp.policytest.loader import is_suite_file

    if bundle is not None and (is_suite_file(bundle) or bundle.name == DEFAULT_SUITES):
        suites, bundle = [bundle, *suites], None
    if bundle is None:
        bundle = default_bundle()
    if not suites:  # ./policy_tests, else the one beside the bundle
        here = Path(DEFAULT_SUITES)
        suites = [here if here.is_dir() else bundle.resolve().parent / DEFAULT_SUITES]
    return bundle, suites


def run_lint(args: argparse.Namespace) -> int:
    from pdp.policytest.lint import lint_report

    text, code = lint_report(
        args.bundle or default_bundle(),
        today=args.today,
        max_age_days=args.max_review_age,
        required=tuple(args.require) if args.require else ("owner", "reviewed"),
        as_json=args.format == "json",
        ledger=args.ledger,
        record=args.record_reviews,
        strict=args.strict,
    )
    sys.stdout.write(text)
    return code
