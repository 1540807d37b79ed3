"""`pdp lint`: policies without @id, unconditioned permits, permits a forbid always overrides,
missing owner/review annotations and reviews older than the allowed age.

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
) -> tuple[str, int]:
    """The lint output for a bundle on disk, and the exit code (0 clean, 1 findings, 2 invalid)."""
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        if as_json:
            problems = [str(p) for p in exc.problems]
            return json.dumps({"bundle": str(path), "invalid": problems}, indent=2) + "\n", 2
        return f"INVALID bundle: {exc.message}\n", 2
    findings = lint(bundle, today, max_age_days, required)
    code = 1 if findings else 0
    if as_json:
        body = {"bundle": str(path), "findings": [asdict(f) for f in findings]}
        return json.dumps(body, indent=2) + "\n", code
    lines = [str(f) for f in findings]
    policies = sum(1 for s in bundle.policies.values() if s.template_id is None)
    lines.append(f"{path}: {len(findings)} finding(s) in {policies} policies and templates")
    return "\n".join(lines) + "\n", code
