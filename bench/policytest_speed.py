"""Speed of `pdp test`: 10,000 test cases against a generated 100-policy bundle.

    .venv/bin/python bench/policytest_speed.py                  # generate, 5 timed runs
    .venv/bin/python bench/policytest_speed.py --runs 9 --cpu 0  # pinned to CPU 0 (taskset)
    .venv/bin/python bench/policytest_speed.py --phases          # where the time goes, in-process

What is timed is the whole process, as CI runs it: `pdp test BUNDLE SUITES` from exec to
exit (interpreter start, imports, bundle compile, YAML + JSON Schema loading of 10 suite
files, fixture checks, one batched evaluation, judging, coverage, text report). Every run
must exit 0 with 10,000 tests passed, else the script fails. The bundle and suites are
generated deterministically (seeded) under --workdir; the expected decisions (and, for half
the tests, the exact determining policies) come from one evaluation at generation time.
Compare with the Cerbos 0.55 anchor: `cerbos compile` of 2 policies + 156 test decisions,
/work/shared/bench/cerbos/README.md. The anchor's own suite is also ported and timed: its
rules as 6 Cedar policies, its 25 tests as matrices of the same 156 cells (every expected
effect kept; `--cerbos-suite` points at its document_test.yaml). Results: bench/RESULTS.md,
section "pdp test".
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pdp.bundle import load_bundle
from pdp.engine import evaluate
from pdp.model import CheckInput, EntityRef

REPO = Path(__file__).resolve().parents[1]
PDP = [sys.executable, "-m", "pdp"]
ACTIONS = ("read", "comment", "edit", "share", "delete", "export")
DEPTS = ("eng", "sales", "finance", "legal", "ops")
REGIONS = ("eu", "us", "apac")
SCHEMA = f"""entity Group;
entity User in [Group] = {{ dept: String, level: Long, region: String, suspended: Bool }};
entity Doc = {{ owner: User, dept: String, level: Long, region: String, public: Bool }};
action {", ".join(ACTIONS)} appliesTo {{
  principal: User,
  resource: Doc,
  context: {{ mfa: Bool, hour: Long }},
}};
"""


def _policy(i: int, rnd: random.Random) -> str:
    a, dept, n = rnd.choice(ACTIONS), rnd.choice(DEPTS), rnd.randint(1, 9)
    head = f'@id("p{i:03d}")\n@owner("team-{i % 7}")\n@reviewed("2026-11-15")\n'
    body = [
        f'permit (principal in Group::"g{i % 20}", action == Action::"{a}", resource)\n'
        f'when {{ resource.dept == "{dept}" && resource.level <= {n} }};',
        f'permit (principal, action in [Action::"read", Action::"comment"], resource)\n'
        f'when {{ resource.level <= principal.level && principal.dept == "{dept}" }};',
        f'forbid (principal, action == Action::"{a}", resource)\n'
        f"when {{ resource.region != principal.region && resource.level > {n} }};",
        f'permit (principal, action == Action::"{a}", resource)\n'
        f"when {{ resource.owner == principal && context.hour >= {n + 6} }};",
        f"forbid (principal, action, resource)\n"
        f'when {{ principal.suspended && resource.dept == "{dept}" }}\nunless {{ context.mfa }};',
    ][i % 5]
    return head + body


def generate(work: Path, policies: int, cases: int, files: int, seed: int) -> tuple[Path, Path]:
    rnd = random.Random(seed)
    bundle, suites = work / "bundle", work / "policy_tests"
    shutil.rmtree(work, ignore_errors=True)
    bundle.mkdir(parents=True)
    suites.mkdir()
    (bundle / "manifest.json").write_text('{"name": "bench-100", "version": "1"}')
    (bundle / "schema.cedarschema").write_text(SCHEMA)
    for f in range(10):
        text = "\n\n".join(_policy(i, rnd) for i in range(f, policies, 10))
        (bundle / f"rules-{f}.cedar").write_text(text + "\n")
    users = [f"u{i}" for i in range(300)]
    entities = [
        {"uid": {"type": "Group", "id": f"g{g}"}, "attrs": {}, "parents": []} for g in range(20)
    ]
    for u in users:
        attrs = {
            "dept": rnd.choice(DEPTS),
            "level": rnd.randint(0, 9),
            "region": rnd.choice(REGIONS),
        }
        attrs["suspended"] = rnd.random() < 0.05
        groups = [{"type": "Group", "id": f"g{g}"} for g in rnd.sample(range(20), 2)]
        entities.append({"uid": {"type": "User", "id": u}, "attrs": attrs, "parents": groups})
    for d in range(600):
        attrs = {
            "owner": {"__entity": {"type": "User", "id": rnd.choice(users)}},
            "dept": rnd.choice(DEPTS),
        }
        attrs |= {
            "level": rnd.randint(0, 9),
            "region": rnd.choice(REGIONS),
            "public": rnd.random() < 0.2,
        }
        entities.append({"uid": {"type": "Doc", "id": f"d{d}"}, "attrs": attrs, "parents": []})
    (bundle / "entities.json").write_text(json.dumps(entities))
    compiled = load_bundle(bundle)
    requests = [
        (
            rnd.choice(users),
            rnd.choice(ACTIONS),
            f"d{rnd.randrange(600)}",
            rnd.random() < 0.5,
            rnd.randint(0, 23),
        )
        for _ in range(cases)
    ]
    inputs = [
        CheckInput(
            EntityRef("User", u), EntityRef("Action", a), EntityRef("Doc", d), {"mfa": m, "hour": h}
        )
        for u, a, d, m, h in requests
    ]
    results = evaluate(compiled, inputs)
    per_file = cases // files
    for f in range(files):
        lines = [f"name: bench-{f}", "tests:"]
        for i in range(f * per_file, (f + 1) * per_file):
            (u, a, d, m, h), r = requests[i], results[i]
            decision = r.decision.value
            expect = (
                decision
                if i % 2
                else f"{{decision: {decision}, determining: [{', '.join(r.determining_policies)}]}}"
            )
            lines.append(f'  - name: t{i}\n    principal: User::"{u}"\n    action: {a}')
            lines.append(f'    resource: Doc::"{d}"')
            lines.append(f"    context: {{mfa: {str(m).lower()}, hour: {h}}}\n    expect: {expect}")
        (suites / f"bench_{f}_test.yaml").write_text("\n".join(lines) + "\n")
    allowed = sum(r.decision.value == "allow" for r in results)
    what = f"{policies} policies, {len(entities)} entities, {cases} tests ({allowed} allow)"
    print(f"generated {what} in {work}")
    return bundle, suites


CERBOS_SUITE = Path("/work/shared/bench/cerbos/policies/tests/document_test.yaml")
CERBOS_SCHEMA = """entity User = {
  roles: Set<String>, org?: String, department: String, clearance: Long
};
entity Document = {
  org?: String, owner: User, department: String, classification: Long, public: Bool
};
action read, edit, share, delete appliesTo { principal: User, resource: Document };
"""
# The anchor's rules (its README, "Scenario" and the choices 1-6), in Cedar.
CERBOS_POLICIES = """@id("same-org-only")
forbid (principal, action, resource)
unless { principal has org && resource has org && principal.org == resource.org };

@id("viewer-read")
permit (principal, action == Action::"read", resource)
when {
  principal.roles.contains("viewer") &&
  (resource.public || resource.department == principal.department)
};

@id("editor-read-edit")
permit (principal, action in [Action::"read", Action::"edit"], resource)
when {
  principal.roles.contains("editor") &&
  resource.department == principal.department &&
  principal.clearance >= resource.classification
};

@id("owner-read-edit-share")
permit (principal, action in [Action::"read", Action::"edit", Action::"share"], resource)
when {
  resource.owner == principal &&
  principal.roles.containsAny(["viewer", "editor", "admin"])
};

@id("admin-read-edit-share")
permit (principal, action in [Action::"read", Action::"edit", Action::"share"], resource)
when { principal.roles.contains("admin") };

@id("admin-delete-cleared")
permit (principal, action == Action::"delete", resource)
when { principal.roles.contains("admin") && principal.clearance >= resource.classification };
"""


def cerbos_port(work: Path, source: Path) -> tuple[Path, Path, int]:
    """The Cerbos anchor's policies (in Cedar) and its test suite (as a matrix suite)."""
    import yaml

    suite = yaml.safe_load(source.read_text())
    bundle, suites = work / "cerbos-bundle", work / "cerbos-tests"
    for d in (bundle, suites):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    (bundle / "manifest.json").write_text('{"name": "cerbos-port", "version": "1"}')
    (bundle / "schema.cedarschema").write_text(CERBOS_SCHEMA)
    (bundle / "document.cedar").write_text(CERBOS_POLICIES)
    principals = {
        name: {"uid": f'User::"{p["id"]}"', "attrs": {"roles": p["roles"], **p["attr"]}}
        for name, p in suite["principals"].items()
    }
    resources = {}
    for name, r in suite["resources"].items():
        attrs = dict(r["attr"])
        attrs["owner"] = {"__entity": {"type": "User", "id": attrs["owner"]}}
        resources[name] = {"uid": f'Document::"{r["id"]}"', "attrs": attrs}
    matrix, cells = [], 0
    for test in suite["tests"]:
        given = test["input"]
        allow: list[dict[str, object]] = []
        for exp in test["expected"]:
            acts = [a for a, effect in exp["actions"].items() if effect == "EFFECT_ALLOW"]
            if acts:
                allow.append(
                    {"principal": exp["principal"], "resource": exp["resource"], "actions": acts}
                )
        cells += len(given["principals"]) * len(given["resources"]) * len(given["actions"])
        matrix.append({"name": test["name"], **given, "allow": allow})
    doc = {
        "name": "cerbos-anchor",
        "principals": principals,
        "resources": resources,
        "matrix": matrix,
    }
    (suites / "document_test.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return bundle, suites, cells


def timed(cmd: list[str], cpu: str | None) -> tuple[float, subprocess.CompletedProcess[str]]:
    full = (["taskset", "-c", cpu] if cpu else []) + cmd
    started = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc


def phases(bundle: Path, suites: Path) -> None:
    from pdp.bundle import compile_bundle
    from pdp.bundle_files import read_bundle_files
    from pdp.policytest.coverage import measure
    from pdp.policytest.loader import load_suites
    from pdp.policytest.runner import run_cases

    marks = [time.perf_counter()]
    b = compile_bundle(read_bundle_files(bundle))
    marks.append(time.perf_counter())
    loaded, problems = load_suites([suites], b)
    assert not problems, problems[:3]
    marks.append(time.perf_counter())
    run = run_cases(b, [c for s in loaded for c in s.cases])
    marks.append(time.perf_counter())
    measure(b, run.outcomes)
    marks.append(time.perf_counter())
    names = ("compile bundle", "load suites (YAML, schema, fixtures)", "decide + judge", "coverage")
    for name, a, z in zip(names, marks, marks[1:], strict=False):
        print(f"  {name:40} {1000 * (z - a):8.1f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/pdp-bench/policytest"))
    p.add_argument("--policies", type=int, default=100)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--files", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cpu", default=None, help="pin with taskset -c CPU")
    p.add_argument("--phases", action="store_true", help="also time the phases in-process")
    p.add_argument("--cerbos-suite", type=Path, default=CERBOS_SUITE, help="the anchor's tests")
    args = p.parse_args()
    bundle, suites = generate(args.workdir, args.policies, args.cases, args.files, args.seed)
    figures: dict[str, list[float]] = {}
    commands = {
        "interpreter + pdp import (python -m pdp --version)": [*PDP, "--version"],
        f"pdp test, {args.cases} tests": [*PDP, "test", str(bundle), str(suites)],
        "pdp test, default bundle + policy_tests/": [*PDP, "test"],
    }
    if args.cerbos_suite.is_file():
        c_bundle, c_suites, cells = cerbos_port(args.workdir, args.cerbos_suite)
        commands[f"pdp test, Cerbos anchor suite ({cells} decisions)"] = [
            *PDP,
            "test",
            str(c_bundle),
            str(c_suites),
        ]
    for _ in range(args.runs):  # interleaved, so drifting load hits every command alike
        for name, cmd in commands.items():
            seconds, proc = timed(cmd, args.cpu)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{name}: exit {proc.returncode}")
            if f"{args.cases} tests" in name:
                assert f"{args.cases} tests: {args.cases} passed" in proc.stdout, proc.stdout[-500:]
            if "anchor" in name:
                assert "156 tests: 156 passed" in proc.stdout, proc.stdout[-500:]
            figures.setdefault(name, []).append(seconds)
    print(f"medians of {args.runs} runs (min-max), CPU {args.cpu or 'unpinned'}:")
    for name, xs in figures.items():
        low, mid, high = (1000 * f(xs) for f in (min, statistics.median, max))
        print(f"  {name:52} {mid:7.0f} ms ({low:.0f}-{high:.0f})")
    if args.phases:
        print("phases, in-process (one run):")
        phases(bundle, suites)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
