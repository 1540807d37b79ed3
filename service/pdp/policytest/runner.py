"""Run cases through `pdp.engine.evaluate` (the server's code path) and judge each outcome."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pdp.bundle import Bundle
from pdp.engine import evaluate
from pdp.errors import InvalidRequest
from pdp.model import CheckResult
from pdp.policytest.model import Case, Outcome, Status

Verdict = CheckResult | InvalidRequest


def decide(bundle: Bundle, cases: Sequence[Case]) -> list[Verdict]:
    """Every case's decision, in one evaluate() call unless some requests are invalid.

    evaluate() stops at the first invalid request of a batch; that request (or, for
    bad request entities, every request sharing them) is set aside and the rest rerun.
    """
    requests = [c.request for c in cases]
    verdicts: list[Verdict | None] = [None] * len(cases)
    pending = list(range(len(cases)))
    while pending:
        try:
            # Fixtures are written by the bundle's owners: trusted, unlike a caller's entities.
            results = evaluate(bundle, [requests[i] for i in pending], trust_request_entities=True)
        except InvalidRequest as exc:
            if exc.index is None:
                for i in pending:
                    verdicts[i] = exc
                break
            bad = pending[exc.index]
            shared = requests[bad].entities if exc.field == "entities" else None
            for i in pending:
                if i == bad or (shared is not None and requests[i].entities == shared):
                    verdicts[i] = InvalidRequest(exc.field, exc.reason)
            pending = [i for i in pending if verdicts[i] is None]
            continue
        for i, result in zip(pending, results, strict=True):
            verdicts[i] = result
        break
    return [v for v in verdicts if v is not None]


def judge(case: Case, verdict: Verdict, annotations: Mapping[str, Mapping[str, str]]) -> Outcome:
    """Compare a decision with the case's expectation; every mismatch is listed."""
    if case.skip is not None:
        return Outcome(case, Status.SKIP, failures=(case.skip,))
    if isinstance(verdict, InvalidRequest):
        reason = f"invalid request: {verdict.field}: {verdict.reason}"
        return Outcome(case, Status.ERROR, failures=(reason,))
    exp = case.expect
    got = set(verdict.determining_policies)
    failures: list[str] = []
    if verdict.decision != exp.decision:
        failures.append(f"decision: expected {_name(exp.decision.value)}, got {_name(verdict)}")
    if exp.determining is not None and got != exp.determining:
        failures.append(f"determining policies: expected {_ids(exp.determining)}, got {_ids(got)}")
    if exp.determining_includes - got:
        missing = _ids(exp.determining_includes - got)
        failures.append(f"determining policies: missing {missing}, got {_ids(got)}")
    erred = {e.policy_id or "(evaluation)" for e in verdict.errors}
    if exp.errors is False and verdict.errors:
        failures.append(f"evaluation errors: expected none, got {_ids(erred)}")
    elif exp.errors is True and not verdict.errors:
        failures.append("evaluation errors: expected some, got none")
    elif isinstance(exp.errors, frozenset) and erred != exp.errors:
        failures.append(f"evaluation errors: expected in {_ids(exp.errors)}, got {_ids(erred)}")
    for key, value in exp.annotations.items():
        carried = [annotations.get(p, {}).get(key) for p in verdict.determining_policies]
        if value not in carried:
            shown = ", ".join(sorted({str(c) for c in carried if c is not None})) or "none"
            failures.append(
                f"annotation @{key}: expected {value!r} on a determining policy, got {shown}"
            )
    return Outcome(
        case,
        Status.FAIL if failures else Status.PASS,
        verdict.decision,
        tuple(verdict.determining_policies),
        tuple(verdict.errors),
        tuple(failures),
    )


def _name(decision: object) -> str:
    value = decision.decision.value if isinstance(decision, CheckResult) else str(decision)
    return value.upper()


def _ids(ids: object) -> str:
    items = sorted(str(i) for i in ids) if isinstance(ids, set | frozenset) else []
    return "[" + ", ".join(items) + "]"


@dataclass(frozen=True)
class Run:
    bundle: Bundle
    outcomes: tuple[Outcome, ...]
    verdicts: tuple[Verdict, ...]
    seconds: float


def run_cases(bundle: Bundle, cases: Sequence[Case]) -> Run:
    started = time.perf_counter()
    verdicts = decide(bundle, cases)
    notes = policy_annotations(bundle) if any(c.expect.annotations for c in cases) else {}
    outcomes = tuple(judge(c, v, notes) for c, v in zip(cases, verdicts, strict=True))
    return Run(bundle, outcomes, tuple(verdicts), time.perf_counter() - started)


def policy_annotations(bundle: Bundle) -> dict[str, dict[str, str]]:
    """Each policy's (and link's: its template's) annotations, by the id decisions report."""
    out: dict[str, dict[str, str]] = {}
    for src in bundle.policies.values():
        out[src.policy_id] = dict(src.est.get("annotations") or {})
    return out
