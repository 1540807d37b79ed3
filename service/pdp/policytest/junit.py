"""Render a `pdp test` report as JUnit XML: a testsuite per suite, plus coverage and mutation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from pdp.policytest.harness import Report
from pdp.policytest.model import Outcome, Status
from pdp.policytest.report import explain, policy_places


def junit(report: Report) -> str:
    root = ET.Element("testsuites", name="pdp test")
    places = policy_places(report.bundle) if report.bundle is not None else {}
    if report.bundle_error is not None:
        suite = _suite(root, "bundle", report.bundle_error.source)
        _case(suite, "bundle", "load", "error", report.bundle_error.message)
    by_file: dict[str, list[Outcome]] = defaultdict(list)
    for o in report.outcomes:
        by_file[o.case.where.file].append(o)
    files = [*by_file, *(p.where.file for p in report.problems if p.where.file not in by_file)]
    seen: set[str] = set()
    for file in files:
        if file in seen:
            continue
        seen.add(file)
        outcomes = by_file.get(file, [])
        name = outcomes[0].case.suite if outcomes else file
        suite = _suite(root, name, file)
        for p in report.problems:
            if p.where.file == file:
                _case(suite, name, f"invalid suite ({p.where})", "error", p.message)
        share = (report.run.seconds / max(len(report.outcomes), 1)) if report.run else 0.0
        for o in outcomes:
            _outcome(suite, o, places, share)
    _coverage(root, report)
    _mutation(root, report)
    _totals(root)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(root: ET.Element, name: str, file: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=name, file=file)


def _case(
    suite: ET.Element, classname: str, name: str, kind: str | None, message: str, body: str = ""
) -> ET.Element:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if kind is not None:
        element = ET.SubElement(case, kind, message=message)
        element.text = body or message
    return case


def _outcome(suite: ET.Element, o: Outcome, places: dict[str, str], seconds: float) -> None:
    c = o.case
    case = ET.SubElement(suite, "testcase", classname=c.suite, name=c.name, time=f"{seconds:.6f}")
    case.set("file", c.where.file)
    if c.where.line is not None:
        case.set("line", str(c.where.line))
    if o.status is Status.SKIP:
        ET.SubElement(case, "skipped", message=o.failures[0])
    elif o.status is not Status.PASS:
        kind = "failure" if o.status is Status.FAIL else "error"
        element = ET.SubElement(case, kind, message="; ".join(o.failures), type=o.status.value)
        element.text = "\n".join(explain(o, places))


def _coverage(root: ET.Element, report: Report) -> None:
    cov = report.coverage
    if cov is None:
        return
    suite = _suite(root, "coverage", report.bundle.source if report.bundle else "")
    suite.set("percent", f"{cov.percent:.1f}")
    for unit in cov.policies:
        case = _case(suite, "coverage", unit.policy_id, None, "")
        if not unit.covered:
            ET.SubElement(case, "skipped", message="no test makes this policy determining")
    wanted = report.options.min_coverage
    if wanted is not None:
        msg = f"coverage {cov.percent:.1f}% is below the required {wanted:g}%"
        _case(
            suite,
            "coverage",
            f"min-coverage {wanted:g}%",
            "failure" if report.coverage_too_low else None,
            msg,
        )


def _mutation(root: ET.Element, report: Report) -> None:
    m = report.mutation
    if m is None:
        return
    suite = _suite(root, "mutation", report.bundle.source if report.bundle else "")
    for r in m.results:
        if r.status == "survived":
            _case(suite, "mutation", str(r.mutant), "failure", "no test notices this mutant")
        else:
            detail = r.detail or f"killed by {', '.join(r.killed_by)}"
            case = _case(suite, "mutation", str(r.mutant), None, "")
            ET.SubElement(case, "system-out").text = detail


def _totals(root: ET.Element) -> None:
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        counts = {
            "tests": len(cases),
            "failures": sum(c.find("failure") is not None for c in cases),
            "errors": sum(c.find("error") is not None for c in cases),
            "skipped": sum(c.find("skipped") is not None for c in cases),
        }
        seconds = sum(float(c.get("time", "0")) for c in cases)
        suite.set("time", f"{seconds:.6f}")
        for key, value in counts.items():
            suite.set(key, str(value))
            total[key] += value
    for key, value in total.items():
        root.set(key, str(value))
