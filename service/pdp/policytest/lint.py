"""`pdp lint`: policies without @id, unconditioned permits, permits a forbid always overrides,
missing owner/review annotations, reviews older than the allowed age (advisory unless
`--strict`: the date alone never fails CI) and policies changed without a fresh review
(against the review ledger, see reviews.py).

"Always overridden" is decided soundly and simply: a permit is flagged only when some
forbid has no `when`/`unless` condition and a scope that contains the permit's scope,
element by element (principal, action, resource), by these rules:

* a forbid `principal` (or `resource`) with no constraint contains every constraint;
* `== E` contains `== E`; `in E` contains `== E`, `in E` and `is T in E`;
* `is T` contains `is T`, `is T in E` and `== T::"x"`; `is T in E` contains `is T in E`;
* for `action`: `== A` contains `== A`; `in [A, B, ...]` contains `== X` and `in [X, ...]`
  when every X is listed (Cedar's `in` is reflexive and transitive).

Anything else (slots, schema-implied memberships, conditions that happen to be always
true) is not flagged: the rule can miss a dead permit but never reports a live one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pdp.bundle import Bundle, PolicySource, load_bundle
from pdp.errors import BundleError
from pdp.policytest import reviews

# Reported, but failing the run only with --strict: they depend on the date, or on a
# ledger update that lint itself cannot make.
ADVISORY = frozenset({"stale-review", "review-not-recorded"})

Scope = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    policy_id: str
    file: str
    line: int | None  # None where the bundle could not place the policy on a line
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} [{self.policy_id}] {self.rule}: {self.message}"


def lint(
    bundle: Bundle,
    today: date | None = None,
    max_age_days: int = 90,
    required: tuple[str, ...] = ("owner", "reviewed"),
    ledger: tuple[reviews.Ledger, Path] | None = None,
) -> list[Finding]:
    today = today or date.today()
    sources = [s for s in bundle.policies.values() if s.template_id is None]  # links: see template
    parsed = {s.cedar_id: s.est for s in sources}
    forbids = [
        (s, parsed[s.cedar_id])
        for s in sources
        if s.effect == "forbid" and not s.is_template and not parsed[s.cedar_id].get("conditions")
    ]
    found: list[Finding] = []
    for src in sorted(sources, key=lambda s: (s.file, s.line or 0)):
        est = parsed[src.cedar_id]
        notes: Mapping[str, str] = est.get("annotations") or {}

        def add(rule: str, message: str, src: PolicySource = src) -> None:
            found.append(Finding(rule, src.policy_id, src.file, src.line, message))

        if "id" not in notes:
            add("missing-id", "no @id annotation: decisions will name it by position")
        for key in required:
            if key not in notes:
                add(f"missing-{key}", f"no @{key} annotation")
        if "reviewed" in notes:
            _review(notes["reviewed"] or "", today, max_age_days, add)
        if ledger is not None:
            reviews.check(*ledger, src, notes.get("reviewed"), add)
        if src.effect != "permit":
            continue
        if not est.get("conditions") and all(est[v]["op"] == "All" for v in _VARS):
            add(
                "unconditioned-permit",
                "permit(principal, action, resource) with no condition allows everything",
            )
        for forbid, f_est in forbids:
            if all(_contains(f_est[v], est[v], v) for v in _VARS):
                where = forbid.file if forbid.line is None else f"{forbid.file}:{forbid.line}"
                add(
                    "permit-always-overridden",
                    f"the unconditioned forbid {forbid.policy_id} ({where}) covers its whole scope",
                )
                break
    return found


_VARS = ("principal", "action", "resource")


def _review(value: str, today: date, max_age_days: int, add: Any) -> None:
    try:
        reviewed = date.fromisoformat(value)
    except ValueError:
        add("invalid-reviewed", f"@reviewed({value!r}) is not a date (YYYY-MM-DD)")
        return
    age = (today - reviewed).days
    if age > max_age_days:
        add(
            "stale-review",
            f"last reviewed {reviewed} ({age} days ago; reviews are due every {max_age_days} days)",
        )
    elif age < 0:
        add("invalid-reviewed", f"@reviewed({value!r}) is in the future (today is {today})")


def _contains(outer: Scope, inner: Scope, var: str) -> bool:
    """Whether every value `inner` admits is admitted by `outer` (sound, not complete)."""
    op = outer["op"]
    if op == "All":
        return True
    if "slot" in outer or "slot" in inner or inner["op"] == "All":
        return False
    if var == "action":
        return _actions(outer, inner)
    entity = outer.get("entity")
    if op == "==":
        return inner["op"] == "==" and inner.get("entity") == entity
    if op == "in":
        return (inner["op"] in ("==", "in") and inner.get("entity") == entity) or (
            inner["op"] == "is" and inner.get("in", {}).get("entity") == entity
        )
    if op == "is" and "in" not in outer:
        if inner["op"] == "is":
            return bool(inner["entity_type"] == outer["entity_type"])
        return bool(inner["op"] == "==" and inner["entity"]["type"] == outer["entity_type"])
    if op == "is":
        same_type = inner.get("entity_type") == outer["entity_type"]
        return bool(inner["op"] == "is" and same_type and inner.get("in") == outer["in"])
    return False


def _actions(outer: Scope, inner: Scope) -> bool:
    listed = outer.get("entities") or [outer.get("entity")]
    wanted = inner.get("entities") or [inner.get("entity")]
    if outer["op"] == "==":
        return inner["op"] == "==" and wanted == listed
    return all(w in listed for w in wanted)


def lint_report(
    path: Path,
    today: date | None = None,
    max_age_days: int = 90,
    required: tuple[str, ...] = ("owner", "reviewed"),
    as_json: bool = False,
    ledger: Path | None = None,
    record: bool = False,
    strict: bool = False,
) -> tuple[str, int]:
    """The lint output for a bundle on disk, and the exit code (0 clean, 1 findings that
    fail, 2 invalid bundle or ledger).

    `ledger` None means `policy_tests/reviews.json` beside the bundle, checked if it
    exists; a ledger named explicitly must exist. `record` (re)writes it first.
    """
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        return _invalid(path, [str(p) for p in exc.problems], f"bundle: {exc.message}", as_json)
    ledger_path = ledger or reviews.default_ledger(path)
    notes = ""
    if record:
        count = reviews.record(ledger_path, bundle, _annotations(bundle))
        notes = f"recorded {count} policies and templates in {ledger_path}\n"
    checked: tuple[reviews.Ledger, Path] | None = None
    if record or ledger is not None or ledger_path.exists():
        try:
            checked = (reviews.load(ledger_path, bundle), ledger_path)
        except reviews.LedgerError as exc:
            return _invalid(path, [str(exc)], f"ledger: {exc}", as_json)
    findings = lint(bundle, today, max_age_days, required, checked)
    failing = [f for f in findings if strict or f.rule not in ADVISORY]
    code = 1 if failing else 0
    if as_json:
        body = {
            "bundle": str(path),
            "ledger": None if checked is None else str(ledger_path),
            "findings": [{**asdict(f), "fails": f in failing} for f in findings],
        }
        return json.dumps(body, indent=2) + "\n", code
    lines = [str(f) for f in findings]
    policies = sum(1 for s in bundle.policies.values() if s.template_id is None)
    summary = f"{path}: {len(findings)} finding(s) in {policies} policies and templates"
    if len(failing) < len(findings):
        advisory = sorted({f.rule for f in findings if f not in failing})
        summary += (
            f" ({len(findings) - len(failing)} advisory: {', '.join(advisory)}; "
            "--strict fails on them)"
        )
    lines.append(summary)
    return notes + "\n".join(lines) + "\n", code


def _invalid(path: Path, problems: list[str], what: str, as_json: bool) -> tuple[str, int]:
    """Exit 2, naming what is invalid: "bundle: ..." or "ledger: ..."."""
    if as_json:
        return json.dumps({"bundle": str(path), "invalid": problems}, indent=2) + "\n", 2
    return f"INVALID {what}\n", 2


def _annotations(bundle: Bundle) -> dict[str, Mapping[str, str]]:
    return {
        s.cedar_id: s.est.get("annotations") or {}
        for s in bundle.policies.values()
        if s.template_id is None
    }
