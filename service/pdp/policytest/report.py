"""Render a `pdp test` report as readable text or as JSON (the JUnit form is in junit.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pdp.bundle import Bundle
from pdp.policytest.compare import Change
from pdp.policytest.harness import Report
from pdp.policytest.model import Case, Outcome, Status

_CONTEXT_CHARS = 300
_MAX_CHANGES = 50  # change-impact lines in the text report
_LABEL = {Status.FAIL: "FAIL ", Status.ERROR: "ERROR", Status.SKIP: "SKIP ", Status.PASS: "PASS "}


def policy_places(bundle: Bundle) -> dict[str, str]:
    """Where each policy id a decision can name comes from: file:line, or its link's template."""
    out: dict[str, str] = {}
    for src in bundle.policies.values():
        if src.template_id is not None:
            out[src.policy_id] = f"link of template {src.template_id}"
        else:
            out[src.policy_id] = src.file if src.line is None else f"{src.file}:{src.line}"
    return out


def explain(outcome: Outcome, places: Mapping[str, str]) -> list[str]:
    """What a policy author needs for a failed test: request, expected, actual and why."""
    case = outcome.case
    principal, action, resource = case.request.principal, case.request.action, case.request.resource
    lines = [
        f"request:  {principal}  {action}  {resource}",
        f"context:  {_context(case)}",
        f"expected: {_expected(case)}",
    ]
    if outcome.decision is not None:
        lines.append(f"actual:   {outcome.decision.value.upper()}, {_why(outcome, places)}")
        for err in outcome.errors:
            lines.append(f"error:    {err.policy_id or '(evaluation)'}: {err.message}")
    lines.extend(f"- {f}" for f in outcome.failures)
    return lines


def _why(outcome: Outcome, places: Mapping[str, str]) -> str:
    if not outcome.determining:
        return "no policy applied (denied by default)"
    named = (f"{p} ({places.get(p, '?')})" for p in outcome.determining)
    return "determined by " + ", ".join(named)


def _expected(case: Case) -> str:
    exp = case.expect
    out = exp.decision.value.upper()
    if exp.determining is not None:
        out += f", determined by [{', '.join(sorted(exp.determining)) or 'no policy'}]"
    if exp.determining_includes:
        out += f", determined by at least [{', '.join(sorted(exp.determining_includes))}]"
    if exp.errors is True:
        out += ", with evaluation errors"
    elif isinstance(exp.errors, frozenset):
        out += f", with errors in [{', '.join(sorted(exp.errors))}]"
    return out


def _context(case: Case) -> str:
    ctx = case.request.context
    text = ctx if isinstance(ctx, str) else json.dumps(ctx, sort_keys=True)
    return text if len(text) <= _CONTEXT_CHARS else text[: _CONTEXT_CHARS - 1] + "…"


def text(report: Report, verbose: bool = False) -> str:
    out: list[str] = []
    if report.bundle_error is not None:
        out.append(f"INVALID bundle: {report.bundle_error.message}")
        return _result(out, report)
    bundle = report.bundle
    assert bundle is not None
    v = bundle.version
    out.append(f"pdp test: bundle {v.name} {v.version} ({bundle.source}, {v.digest[:19]}…)")
    places = policy_places(bundle)
    for problem in report.problems:
        out.append(f"INVALID {problem}")
    for o in report.outcomes:
        if o.status is Status.PASS and not verbose:
            continue
        out.append(f"{_LABEL[o.status]} {o.case.where}  {o.case.id}")
        if o.status is Status.SKIP:
            out.append(f"      skipped: {o.failures[0]}")
        elif o.status is not Status.PASS:
            out.extend(f"      {line}" for line in explain(o, places))
    _summary(out, report)
    return _result(out, report)


def _summary(out: list[str], report: Report) -> None:
    run = report.run
    counts = (
        f"{report.count(Status.PASS)} passed, {report.count(Status.FAIL)} failed, "
        f"{_n(report.count(Status.ERROR), 'error')}, {report.count(Status.SKIP)} skipped"
    )
    took = f" ({run.seconds:.2f} s deciding)" if run else ""
    tests = _n(len(report.outcomes), "test")
    out.append(f"{_n(len(report.suites), 'suite')}, {tests}: {counts}{took}")
    cov = report.coverage
    if cov is not None:
        low = " — below --min-coverage" if report.coverage_too_low else ""
        out.append(
            f"coverage: {cov.covered}/{cov.total} policies and links ({cov.percent:.1f}%){low}"
        )
        for unit in cov.uncovered:
            where = f"{unit.file}:{unit.line}" if unit.line else f"link of {unit.template}"
            out.append(f"  not exercised: {unit.policy_id} ({where})")
        for template in cov.unlinked_templates:
            out.append(f"  template {template} has no links: nothing exercises it")
    if report.mutation is not None:
        m = report.mutation
        out.append(
            f"mutation: {len(m.results)} mutants: {m.count('killed')} killed, "
            f"{m.count('survived')} survived, {m.count('invalid')} invalid ({m.seconds:.2f} s)"
        )
        for r in m.results:
            if r.status == "survived":
                out.append(f"  SURVIVED {r.mutant}: no test notices")
            elif r.status == "invalid":
                out.append(f"  invalid  {r.mutant}: {r.detail}")
    if report.comparison is not None:
        c = report.comparison
        out.append(
            f"change impact against {c.other_source} ({c.other.name} {c.other.version}): "
            f"{len(c.decisions)} of {c.requests} requests change decision"
        )
        for ch in c.decisions[:_MAX_CHANGES]:
            why = f"[{', '.join(ch.determining_before)}] -> [{', '.join(ch.determining_after)}]"
            change = f"{_short(ch.before)} -> {_short(ch.after)}"
            out.append(f"  {ch.case.id} ({ch.case.where}): {change}  {why}")
        if len(c.decisions) > _MAX_CHANGES:
            out.append(f"  ... {len(c.decisions) - _MAX_CHANGES} more (--format json lists all)")
        if c.reasons:
            out.append(
                f"  {len(c.reasons)} more keep their decision with other policies determining"
            )


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _result(out: list[str], report: Report) -> str:
    code = report.exit_code
    verdict = {0: "PASSED", 1: "FAILED", 2: "INVALID"}[code]
    out.append(f"result: {verdict} (exit {code}, {report.seconds:.2f} s)")
    return "\n".join(out) + "\n"


def as_json(report: Report) -> dict[str, Any]:
    b = report.bundle
    err = report.bundle_error
    return {
        "bundle": None
        if b is None
        else {
            "source": b.source,
            "name": b.version.name,
            "version": b.version.version,
            "digest": b.version.digest,
        },
        "bundle_error": None
        if err is None
        else {
            "source": err.source,
            "problems": [
                {"file": p.file, "line": p.line, "policy_id": p.policy_id, "message": p.message}
                for p in err.problems
            ],
        },
        "exit_code": report.exit_code,
        "summary": {
            "suites": len(report.suites),
            "tests": len(report.outcomes),
            "passed": report.count(Status.PASS),
            "failed": report.count(Status.FAIL),
            "errors": report.count(Status.ERROR),
            "skipped": report.count(Status.SKIP),
            "seconds": round(report.seconds, 3),
        },
        "problems": [
            {"file": p.where.file, "line": p.where.line, "message": p.message}
            for p in report.problems
        ],
        "tests": [_outcome(o) for o in report.outcomes],
        "coverage": _coverage(report),
        "mutation": _mutation(report),
        "compare": _comparison(report),
    }


def _outcome(o: Outcome) -> dict[str, Any]:
    c, exp = o.case, o.case.expect
    r = c.request
    return {
        "id": c.id,
        "suite": c.suite,
        "name": c.name,
        "file": c.where.file,
        "line": c.where.line,
        "kind": c.kind,
        "status": o.status.value,
        "request": {
            "principal": str(r.principal),
            "action": str(r.action),
            "resource": str(r.resource),
            "context": r.context if isinstance(r.context, str) else dict(r.context),
        },
        "expected": {
            "decision": exp.decision.value,
            "determining": None if exp.determining is None else sorted(exp.determining),
            "determining_includes": sorted(exp.determining_includes),
            "errors": exp.errors if isinstance(exp.errors, bool) else sorted(exp.errors),
            "annotations": dict(exp.annotations),
        },
        "actual": None
        if o.decision is None
        else {
            "decision": o.decision.value,
            "determining": list(o.determining),
            "errors": [{"policy_id": e.policy_id, "message": e.message} for e in o.errors],
        },
        "failures": list(o.failures),
    }


def _coverage(report: Report) -> dict[str, Any] | None:
    cov = report.coverage
    if cov is None:
        return None
    return {
        "percent": round(cov.percent, 2),
        "covered": cov.covered,
        "total": cov.total,
        "min_coverage": report.options.min_coverage,
        "policies": [
            {
                "policy_id": u.policy_id,
                "kind": u.kind,
                "file": u.file,
                "line": u.line,
                "template": u.template,
                "tests": u.tests,
            }
            for u in cov.policies
        ],
        "unlinked_templates": list(cov.unlinked_templates),
    }


def _mutation(report: Report) -> dict[str, Any] | None:
    m = report.mutation
    if m is None:
        return None
    return {
        "mutants": len(m.results),
        **{s: m.count(s) for s in ("killed", "survived", "invalid")},
        "seconds": round(m.seconds, 3),
        "results": [
            {
                "kind": r.mutant.kind,
                "policy_id": r.mutant.policy_id,
                "file": r.mutant.file,
                "line": r.mutant.line,
                "status": r.status,
                "killed_by": list(r.killed_by),
                "detail": r.detail,
            }
            for r in m.results
        ],
    }


def _comparison(report: Report) -> dict[str, Any] | None:
    c = report.comparison
    if c is None:
        return None

    def change(ch: Change) -> dict[str, Any]:
        return {
            "id": ch.case.id,
            "file": ch.case.where.file,
            "line": ch.case.where.line,
            "before": ch.before,
            "after": ch.after,
            "determining_before": list(ch.determining_before),
            "determining_after": list(ch.determining_after),
        }

    return {
        "other": {"source": c.other_source, "name": c.other.name, "version": c.other.version},
        "requests": c.requests,
        "decision_changes": [change(ch) for ch in c.decisions],
        "reason_changes": [change(ch) for ch in c.reasons],
    }
