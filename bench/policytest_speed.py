"""Speed of `pdp test`, and of `cerbos compile` on the same suites, whole processes.

    .venv/bin/python bench/policytest_speed.py --runs 7 --quiet-max 15 --phases
    .venv/bin/python bench/policytest_speed.py --no-cerbos --cpus all   # pdp test only

Every command runs as a whole process, as CI runs it (exec to exit), interleaved: each round
runs every command unpinned and pinned to CPU 0 (`taskset -c 0`; --cpus), after one untimed
round that warms the page cache. Every run is checked: `pdp test` must exit 0 and print
"N tests: N passed, 0 failed, 0 errors, 0 skipped", `cerbos compile` must exit 0 and end with
"N tests executed [N OK]", with N the number of test decisions written; else the script stops.

Suites (all generated, seeded, under --workdir):
* the issue's figure: 10,000 table tests against a 100-policy Cedar bundle (expected
  decisions from one evaluation at generation time, half with determining policies), and
  the same 100 rules and 10,000 tests for `cerbos compile` (one resource policy written from
  the same random draws: forbid = EFFECT_DENY, groups = roles, context = auxData JWT claims;
  fixtures in tests/testdata/), so a Cerbos pass also cross-checks the two policy sets;
* the Cerbos 0.55 anchor (/work/shared/bench/cerbos/): `cerbos compile` on its policies/
  (2 policies, 25 tests, 156 decisions), `--skip-tests` and `--version`; and `pdp test` on
  its port (its rules as 6 Cedar policies, its tests as matrices of the same 156 cells);
* the scaled anchor (--scaled, default 1,000 and 10,000 decisions): the anchor's own Cerbos
  policies unchanged, with generated suites of N decisions written both as Cerbos tests and
  as `pdp test` matrices of the same cells (files of 25 principals x 10 resources x 4
  actions; expectations from a plain-Python oracle of the anchor's rules, so each tool is
  checked against it); plus the default bundle with policy_tests/, and with --mutate.
Before timing, one expectation is made wrong (an ALLOW cell left out of a 1,000-decision
scaled copy; the first 100-policy test flipped) and each tool must report exactly 1 failure,
so the passes are not vacuous.
Other jobs share this machine: a run counts only if other processes used at most 30 ms +
10 % of its wall time in CPU meanwhile (/proc/stat minus this script's and the run's own
CPU time), else it is repeated (up to 5 times; the script reports how many). --quiet-max also
waits before each round until others use under PCT % of one CPU. The load average and the
CPU time other processes used over the whole measurement are printed too.
The Cerbos binary comes from get-cerbos.sh (npm, cached outside the repo). Results:
bench/RESULTS.md, section "pdp test".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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


def _policy(i: int, rnd: random.Random) -> tuple[str, dict[str, Any]]:
    """Policy I in Cedar, and the same rule in a Cerbos resource policy (roles = groups)."""
    a, dept, n = rnd.choice(ACTIONS), rnd.choice(DEPTS), rnd.randint(1, 9)
    head = f'@id("p{i:03d}")\n@owner("team-{i % 7}")\n@reviewed("2026-11-15")\n'
    body, roles, actions, effect, expr = [
        (
            f'permit (principal in Group::"g{i % 20}", action == Action::"{a}", resource)\n'
            f'when {{ resource.dept == "{dept}" && resource.level <= {n} }};',
            [f"g{i % 20}"],
            [a],
            "EFFECT_ALLOW",
            f'R.attr.dept == "{dept}" && R.attr.level <= {n}',
        ),
        (
            f'permit (principal, action in [Action::"read", Action::"comment"], resource)\n'
            f'when {{ resource.level <= principal.level && principal.dept == "{dept}" }};',
            ["*"],
            ["read", "comment"],
            "EFFECT_ALLOW",
            f'R.attr.level <= P.attr.level && P.attr.dept == "{dept}"',
        ),
        (
            f'forbid (principal, action == Action::"{a}", resource)\n'
            f"when {{ resource.region != principal.region && resource.level > {n} }};",
            ["*"],
            [a],
            "EFFECT_DENY",
            f"R.attr.region != P.attr.region && R.attr.level > {n}",
        ),
        (
            f'permit (principal, action == Action::"{a}", resource)\n'
            f"when {{ resource.owner == principal && context.hour >= {n + 6} }};",
            ["*"],
            [a],
            "EFFECT_ALLOW",
            f"R.attr.owner == P.id && request.aux_data.jwt.hour >= {n + 6}",
        ),
        (
            f"forbid (principal, action, resource)\n"
            f'when {{ principal.suspended && resource.dept == "{dept}" }}\n'
            "unless { context.mfa };",
            ["*"],
            ["*"],
            "EFFECT_DENY",
            f'P.attr.suspended && R.attr.dept == "{dept}" && !request.aux_data.jwt.mfa',
        ),
    ][i % 5]
    rule = {
        "name": f"p{i:03d}",
        "actions": actions,
        "effect": effect,
        "roles": roles,
        "condition": {"match": {"expr": expr}},
    }
    return head + body, rule


class NoAliases(yaml.SafeDumper):  # plain YAML: no &anchors for shared lists
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=NoAliases, sort_keys=False, default_flow_style=None, width=200)


def generate(
    work: Path, policies: int, cases: int, files: int, seed: int
) -> tuple[Path, Path, Path]:
    rnd = random.Random(seed)
    bundle, suites = work / "bundle", work / "policy_tests"
    shutil.rmtree(work, ignore_errors=True)
    bundle.mkdir(parents=True)
    suites.mkdir()
    (bundle / "manifest.json").write_text('{"name": "bench-100", "version": "1"}')
    (bundle / "schema.cedarschema").write_text(SCHEMA)
    rules: list[dict[str, Any]] = []
    for f in range(10):
        written = [_policy(i, rnd) for i in range(f, policies, 10)]
        (bundle / f"rules-{f}.cedar").write_text("\n\n".join(t for t, _ in written) + "\n")
        rules += [rule for _, rule in written]
    users = [f"u{i}" for i in range(300)]
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "Group", "id": f"g{g}"}, "attrs": {}, "parents": []} for g in range(20)
    ]
    for u in users:
        attrs: dict[str, Any] = {
            "dept": rnd.choice(DEPTS),
            "level": rnd.randint(0, 9),
            "region": rnd.choice(REGIONS),
        }
        attrs["suspended"] = rnd.random() < 0.05
        groups = [{"type": "Group", "id": f"g{g}"} for g in rnd.sample(range(20), 2)]
        entities.append({"uid": {"type": "User", "id": u}, "attrs": attrs, "parents": groups})
    for k in range(600):
        attrs = {
            "owner": {"__entity": {"type": "User", "id": rnd.choice(users)}},
            "dept": rnd.choice(DEPTS),
        }
        attrs |= {
            "level": rnd.randint(0, 9),
            "region": rnd.choice(REGIONS),
            "public": rnd.random() < 0.2,
        }
        entities.append({"uid": {"type": "Doc", "id": f"d{k}"}, "attrs": attrs, "parents": []})
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
            decision, determining = r.decision.value, ", ".join(sorted(r.determining_policies))
            expect = (
                decision if i % 2 else f"{{decision: {decision}, determining: [{determining}]}}"
            )
            lines.append(f'  - name: t{i}\n    principal: User::"{u}"\n    action: {a}')
            lines.append(f'    resource: Doc::"{d}"')
            lines.append(f"    context: {{mfa: {str(m).lower()}, hour: {h}}}\n    expect: {expect}")
        (suites / f"bench_{f}_test.yaml").write_text("\n".join(lines) + "\n")
    allowed = sum(r.decision.value == "allow" for r in results)
    what = f"{policies} policies, {len(entities)} entities, {cases} tests ({allowed} allow)"
    print(f"generated {what} in {work}")
    decisions = [r.decision.value for r in results]
    cerbos = cerbos_100(work / "cerbos-100", rules, entities, requests, decisions, files)
    return bundle, suites, cerbos


def cerbos_100(
    out: Path,
    rules: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    requests: list[tuple[str, str, str, bool, int]],
    decisions: list[str],
    files: int,
) -> Path:
    """The same 100 rules and 10,000 tests for `cerbos compile`: one resource policy (Cedar's
    forbid = EFFECT_DENY, which overrides as in Cedar; groups = roles; the context = auxData
    JWT claims); users, docs and contexts in tests/testdata/; each test one decision, its
    expected effect the one Cedar decided. So every Cerbos pass is also a cross-check."""
    policy = {
        "apiVersion": "api.cerbos.dev/v1",
        "resourcePolicy": {"resource": "doc", "version": "default", "rules": rules},
    }
    (out / "resource_policies").mkdir(parents=True)
    (out / "resource_policies" / "doc.yaml").write_text(_yaml(policy))
    principals, resources = {}, {}
    for e in entities:
        kind, eid, attrs = e["uid"]["type"], e["uid"]["id"], dict(e["attrs"])
        if kind == "User":
            roles = ["user", *(g["id"] for g in e["parents"])]
            principals[eid] = {"id": eid, "roles": roles, "attr": attrs}
        elif kind == "Doc":
            attrs["owner"] = attrs["owner"]["__entity"]["id"]
            resources[eid] = {"kind": "doc", "id": eid, "attr": attrs}
    contexts = {
        f"ctx_{str(m).lower()}_{h}": {"jwt": {"mfa": m, "hour": h}}
        for m in (False, True)
        for h in range(24)
    }
    data = out / "tests" / "testdata"
    data.mkdir(parents=True)
    (data / "principals.yaml").write_text(_yaml({"principals": principals}))
    (data / "resources.yaml").write_text(_yaml({"resources": resources}))
    (data / "auxdata.yaml").write_text(_yaml({"auxData": contexts}))
    per_file = len(requests) // files
    for f in range(files):
        tests = []
        for i in range(f * per_file, (f + 1) * per_file):
            (u, a, d, m, h), effect = requests[i], f"EFFECT_{decisions[i].upper()}"
            given = {"principals": [u], "resources": [d], "actions": [a]}
            expected = [{"principal": u, "resource": d, "actions": {a: effect}}]
            given_aux = {**given, "auxData": f"ctx_{str(m).lower()}_{h}"}
            tests.append({"name": f"t{i}", "input": given_aux, "expected": expected})
        suite = {"name": f"bench-{f}", "tests": tests}
        (out / "tests" / f"bench_{f}_test.yaml").write_text(_yaml(suite))
    return out


CERBOS_SUITE = Path("/work/shared/bench/cerbos/policies/tests/document_test.yaml")
GET_CERBOS = Path("/work/shared/bench/cerbos/get-cerbos.sh")
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


# Scaled anchor: the Cerbos anchor's own policies (derived roles + resource policy, unchanged)
# and their Cedar port, with seeded suites of N decisions written for both harnesses.
ANCHOR_ACTIONS = ("read", "edit", "share", "delete")
ROLE_SETS = (  # the anchor's role mixes; admins weigh more, so a third of the cells are ALLOW
    ["viewer"],
    ["editor"],
    ["admin"],
    ["admin"],
    ["auditor"],
    ["viewer", "editor"],
    ["editor", "admin"],
)
ORGS = ("acme", "acme", "acme", "acme", "globex")  # 4:1, so most pairs share an org
ANCHOR_DEPTS = ("eng", "sales", "ops")


def anchor_decide(p: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """The anchor's rules in plain Python (its README, "Scenario"): the allowed actions."""
    pa, ra = p["attr"], r["attr"]
    if "org" not in pa or "org" not in ra or pa["org"] != ra["org"]:
        return []
    roles = set(p["roles"])
    same_dept = pa["department"] == ra["department"]
    cleared = pa["clearance"] >= ra["classification"]
    viewer = "viewer" in roles and (ra["public"] or same_dept)
    editor = "editor" in roles and same_dept and cleared
    owner = ra["owner"] == p["id"] and bool(roles & {"viewer", "editor", "admin"})
    admin = "admin" in roles
    allowed = {
        "read": viewer or editor or owner or admin,
        "edit": editor or owner or admin,
        "share": owner or admin,
        "delete": admin and cleared,
    }
    return [a for a in ANCHOR_ACTIONS if allowed[a]]


def scaled_anchor(
    work: Path, decisions: int, seed: int, sabotage: bool = False
) -> tuple[Path, Path, Path, int]:
    """Write DECISIONS test decisions for `cerbos compile` and the same cells for `pdp test`.

    Files of 1,000 decisions: 25 principals x 10 resources x 4 actions, as 125 tests of one
    principal x 2 resources x 4 actions (the anchor averages 6 decisions a test). Both
    suites list only the ALLOW cells (unlisted cells are DENY in both tools). With
    `sabotage`, one ALLOW cell is left out of both, so each harness must report 1 failure.
    """
    if decisions <= 0 or decisions % 1000:
        raise SystemExit(f"--scaled: {decisions} is not a positive multiple of 1000")
    rnd = random.Random(seed)
    out = work / f"scaled-{decisions}{'-sabotaged' if sabotage else ''}"
    shutil.rmtree(out, ignore_errors=True)
    cerbos, bundle, suites = out / "cerbos-policies", out / "cedar-bundle", out / "cedar-tests"
    anchor = CERBOS_SUITE.parents[1]
    for sub in ("derived_roles", "resource_policies"):  # the anchor's policies, unchanged
        for src in (anchor / sub).glob("*.yaml"):
            (cerbos / sub).mkdir(parents=True, exist_ok=True)
            (cerbos / sub / src.name).write_text(src.read_text())
    for d in (cerbos / "tests", bundle, suites):
        d.mkdir(parents=True)
    (bundle / "manifest.json").write_text('{"name": "cerbos-port", "version": "1"}')
    (bundle / "schema.cedarschema").write_text(CERBOS_SCHEMA)
    (bundle / "document.cedar").write_text(CERBOS_POLICIES)
    allowed_cells = 0
    for f in range(decisions // 1000):
        principals: dict[str, dict[str, Any]] = {}
        for i in range(25):
            pid = f"u{f}_{i:02d}"
            attr: dict[str, Any] = {}
            if rnd.random() < 0.9:
                attr["org"] = rnd.choice(ORGS)
            attr |= {"department": rnd.choice(ANCHOR_DEPTS), "clearance": rnd.randint(0, 5)}
            principals[pid] = {"id": pid, "roles": rnd.choice(ROLE_SETS), "attr": attr}
        resources: dict[str, dict[str, Any]] = {}
        for j in range(10):
            rid = f"doc{f}_{j:02d}"
            attr = {"org": rnd.choice(ORGS)} if rnd.random() < 0.95 else {}
            attr |= {
                "owner": rnd.choice(list(principals)),
                "department": rnd.choice(ANCHOR_DEPTS),
                "classification": rnd.randint(0, 5),
                "public": rnd.random() < 0.3,
            }
            resources[rid] = {"kind": "document", "id": rid, "attr": attr}
        c_tests, matrix = [], []
        for pid in principals:
            for j in range(0, 10, 2):
                pair = [f"doc{f}_{j:02d}", f"doc{f}_{j + 1:02d}"]
                expected: list[dict[str, Any]] = []
                allow: list[dict[str, Any]] = []
                deny: list[dict[str, Any]] = []
                for rid in pair:
                    acts = anchor_decide(principals[pid], resources[rid])
                    if sabotage and acts and allowed_cells == 0:
                        acts = acts[1:]
                        allowed_cells = 1  # counts the left-out cell
                    allowed_cells += len(acts)
                    if acts:
                        effects = {a: "EFFECT_ALLOW" for a in acts}
                        expected.append({"principal": pid, "resource": rid, "actions": effects})
                        allow.append({"principal": pid, "resource": rid, "actions": acts})
                if not expected:  # Cerbos wants some expectation: state one pair's DENYs
                    effects = dict.fromkeys(ANCHOR_ACTIONS, "EFFECT_DENY")
                    expected.append({"principal": pid, "resource": pair[0], "actions": effects})
                    deny.append(
                        {"principal": pid, "resource": pair[0], "actions": [*ANCHOR_ACTIONS]}
                    )
                name = f"{pid} on {pair[0]}, {pair[1]}"
                given = {"principals": [pid], "resources": pair, "actions": list(ANCHOR_ACTIONS)}
                c_tests.append({"name": name, "input": given, "expected": expected})
                cells = {"allow": allow, "deny": deny}
                matrix.append({"name": name, **given, **{k: v for k, v in cells.items() if v}})
        c_suite = {
            "name": f"Scaled{f}",
            "principals": principals,
            "resources": resources,
            "tests": c_tests,
        }
        d_principals = {
            pid: {"uid": f'User::"{pid}"', "attrs": {"roles": p["roles"], **p["attr"]}}
            for pid, p in principals.items()
        }
        d_resources = {}
        for rid, r in resources.items():
            owner = {"__entity": {"type": "User", "id": r["attr"]["owner"]}}
            d_resources[rid] = {"uid": f'Document::"{rid}"', "attrs": r["attr"] | {"owner": owner}}
        d_suite = {
            "name": f"scaled-{f}",
            "principals": d_principals,
            "resources": d_resources,
            "matrix": matrix,
        }
        for path, doc in ((cerbos / "tests", c_suite), (suites, d_suite)):
            (path / f"scaled_{f}_test.yaml").write_text(_yaml(doc))
    return cerbos, bundle, suites, allowed_cells


def cerbos_binary() -> str:
    """The Cerbos binary's path, from get-cerbos.sh (which fetches it outside the repo)."""
    got = subprocess.run([str(GET_CERBOS)], capture_output=True, text=True, check=False)
    if got.returncode != 0:
        raise SystemExit(f"{GET_CERBOS}: exit {got.returncode}: {got.stderr.strip()}")
    return got.stdout.strip().splitlines()[-1]


Check = Callable[[subprocess.CompletedProcess[str]], None]


def pdp_passed(n: int | None) -> Check:
    """`pdp test` exited 0 with exactly N tests (None: any number), all passed, and (with
    --mutate) no mutant survived."""

    def check(proc: subprocess.CompletedProcess[str]) -> None:
        out = proc.stdout
        found = re.search(r"(\d+) tests: (\d+) passed, 0 failed, 0 errors, 0 skipped", out)
        ok = bool(found and found[1] == found[2] and (n is None or found[1] == str(n)))
        if "mutation:" in out:
            ok = ok and ", 0 survived" in out
        if proc.returncode != 0 or not ok or "result: PASSED" not in out:
            want = f"{n or 'N'} tests: {n or 'N'} passed"
            raise SystemExit(f"pdp test: exit {proc.returncode}, wanted {want!r}:\n{out[-800:]}")

    return check


def cerbos_passed(n: int) -> Check:
    """`cerbos compile` exited 0 and executed exactly N test decisions, all OK."""

    def check(proc: subprocess.CompletedProcess[str]) -> None:
        want = f"{n} tests executed [{n} OK]"
        last = proc.stdout.strip().splitlines()[-1:] or [""]
        if proc.returncode != 0 or last[0] != want:
            raise SystemExit(f"cerbos compile: exit {proc.returncode}, wanted {want!r}, got {last}")

    return check


def exit_zero(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {proc.stderr[-800:]}")


def _flip_first(text: str, one: str, other: str) -> str:
    """TEXT with the first ONE or OTHER (whichever comes first) replaced by the other one."""
    at = min(k for k in (text.find(one), text.find(other)) if k >= 0)
    old, new = (one, other) if text.startswith(one, at) else (other, one)
    return text[:at] + new + text[at + len(old) :]


def sabotage_check(
    work: Path, cerbos: str, seed: int, c100: Path, bundle100: Path, suites100: Path
) -> None:
    """Each harness must report exactly one failure when one expectation is wrong, so the
    passes timed below mean something: a 1,000-decision scaled anchor with one ALLOW cell
    left out of both suites; and the 100-policy suites with the first test's effect flipped
    (Cerbos: a copy of all 10,000 tests; pdp: its first suite file, 1,000 tests)."""
    c_dir, bundle, suites, _ = scaled_anchor(work, 1000, seed, sabotage=True)
    c100_bad, pdp_bad = work / "cerbos-100-sabotaged", work / "bench_0-sabotaged_test.yaml"
    shutil.rmtree(c100_bad, ignore_errors=True)
    shutil.copytree(c100, c100_bad)
    first = c100_bad / "tests" / "bench_0_test.yaml"
    first.write_text(_flip_first(first.read_text(), "EFFECT_ALLOW}", "EFFECT_DENY}"))
    text = (suites100 / "bench_0_test.yaml").read_text()
    pdp_bad.write_text(_flip_first(text, "decision: allow", "decision: deny"))
    env = {**os.environ, "CERBOS_NO_TELEMETRY": "1"}
    runs = [
        ([cerbos, "compile", "--no-color", str(c_dir)], "1000 tests executed [999 OK] [1 FAILED]"),
        ([*PDP, "test", str(bundle), str(suites)], "1000 tests: 999 passed, 1 failed"),
        (
            [cerbos, "compile", "--no-color", str(c100_bad)],
            "10000 tests executed [9999 OK] [1 FAILED]",
        ),
        (
            [*PDP, "test", str(bundle100), str(pdp_bad)],
            "1000 tests: 999 passed, 1 failed",
        ),
    ]
    for cmd, want in runs:
        got = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if got.returncode == 0 or want not in got.stdout:
            raise SystemExit(
                f"sabotage not caught by {cmd[:3]}: wanted {want!r}\n{got.stdout[-800:]}"
            )
    print("sabotage check: each harness reports exactly 1 failure for 1 wrong expectation")
    shutil.rmtree(c_dir.parent)
    shutil.rmtree(c100_bad)
    pdp_bad.unlink()


def timed(cmd: list[str], cpu: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds of CMD (pinned to CPU unless "all"), CPU seconds that OTHER processes
    used meanwhile (all CPU time on the machine minus this script's and CMD's), and CMD's
    result."""
    full = (["taskset", "-c", cpu] if cpu != "all" else []) + cmd
    env = {**os.environ, "CERBOS_NO_TELEMETRY": "1"}
    busy, own = busy_seconds(), own_seconds()
    started = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    return seconds, busy_seconds() - busy - (own_seconds() - own), proc


def busy_seconds() -> float:
    """CPU time all processes used since boot (/proc/stat: user+nice+system+irq+softirq+steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pct: float, limit: float = 600.0) -> None:
    """Wait (at most LIMIT s) until other processes use under PCT% of one CPU over 2 s."""
    deadline = time.monotonic() + limit
    while True:
        busy, wall = busy_seconds(), time.perf_counter()
        time.sleep(2)
        used = 100 * (busy_seconds() - busy) / (time.perf_counter() - wall)
        if used < pct:
            return
        if time.monotonic() > deadline:
            print(f"  (not quiet after {limit:.0f} s: others use {used:.0f}%; going on)")
            return


def own_seconds() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


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
    p.add_argument(
        "--cpus", default="all,0", help="CPU modes, each run in every round: all (unpinned), N"
    )
    p.add_argument(
        "--scaled", default="1000,10000", help="scaled-anchor sizes (decisions); empty: none"
    )
    p.add_argument("--no-cerbos", action="store_true", help="time pdp test only")
    p.add_argument(
        "--quiet-max",
        type=float,
        default=None,
        help="before each round, wait until other processes use under PCT%% of one CPU",
    )
    p.add_argument("--phases", action="store_true", help="also time the phases in-process")
    p.add_argument("--cerbos-suite", type=Path, default=CERBOS_SUITE, help="the anchor's tests")
    args = p.parse_args()
    modes = args.cpus.split(",")
    bundle, suites, c100 = generate(args.workdir, args.policies, args.cases, args.files, args.seed)
    cerbos = None if args.no_cerbos else cerbos_binary()
    commands: dict[str, tuple[list[str], Check]] = {
        "python -m pdp --version": ([*PDP, "--version"], exit_zero),
    }
    compile_ = [cerbos or "cerbos", "compile", "--no-color"]
    if cerbos:
        version = subprocess.run([cerbos, "--version"], capture_output=True, text=True).stdout
        print(f"cerbos {version.split()[0]}: {cerbos}")
        anchor = args.cerbos_suite.parents[1]
        commands |= {
            "cerbos --version": ([cerbos, "--version"], exit_zero),
            "cerbos compile --skip-tests, anchor": (
                [*compile_, "--skip-tests", str(anchor)],
                exit_zero,
            ),
            "cerbos compile, anchor (156)": ([*compile_, str(anchor)], cerbos_passed(156)),
        }
    c_bundle, c_suites, cells = cerbos_port(args.workdir, args.cerbos_suite)
    commands[f"pdp test, anchor ported ({cells})"] = (
        [*PDP, "test", str(c_bundle), str(c_suites)],
        pdp_passed(cells),
    )
    phased = {}
    for n in [int(x) for x in args.scaled.split(",") if x]:
        c_dir, s_bundle, s_suites, allowed = scaled_anchor(args.workdir, n, args.seed + n)
        print(f"scaled anchor: {n} decisions ({allowed} allow) in {c_dir.parent}")
        if cerbos:
            commands[f"cerbos compile, scaled anchor ({n})"] = (
                [*compile_, str(c_dir)],
                cerbos_passed(n),
            )
        phased[f"pdp test, scaled anchor ({n})"] = (s_bundle, s_suites)
        commands[f"pdp test, scaled anchor ({n})"] = (
            [*PDP, "test", str(s_bundle), str(s_suites)],
            pdp_passed(n),
        )
    what = f"{args.policies} policies, {args.cases} tests"
    if cerbos:
        commands |= {
            f"cerbos compile --skip-tests, {args.policies} policies": (
                [*compile_, "--skip-tests", str(c100)],
                exit_zero,
            ),
            f"cerbos compile, {what}": ([*compile_, str(c100)], cerbos_passed(args.cases)),
        }
    phased[f"pdp test, {what}"] = (bundle, suites)
    commands[f"pdp test, {what}"] = (
        [*PDP, "test", str(bundle), str(suites)],
        pdp_passed(args.cases),
    )
    default = [*PDP, "test", str(REPO / "policies"), str(REPO / "policy_tests")]
    commands |= {
        "pdp test, default bundle + policy_tests/": (default, pdp_passed(None)),
        "pdp test --mutate, default bundle": ([*default, "--mutate"], pdp_passed(None)),
    }
    if cerbos:
        sabotage_check(args.workdir, cerbos, args.seed, c100, bundle, suites)
    figures: dict[tuple[str, str], list[float]] = {}
    loads, retried, noisy = [os.getloadavg()[0]], 0, 0
    busy0, own0, wall0 = busy_seconds(), own_seconds(), time.perf_counter()
    for round_ in range(args.runs + 1):  # round 0 warms the page cache, checked but untimed
        if args.quiet_max is not None:
            wait_quiet(args.quiet_max)
        for name, (cmd, check) in commands.items():  # interleaved: drifting load hits all alike
            for mode in modes:
                for _attempt in range(5):  # a run counts if others kept (nearly) off the CPUs
                    seconds, others, proc = timed(cmd, mode)
                    check(proc)
                    if others <= 0.03 + 0.1 * seconds:  # /proc/stat ticks are 10 ms
                        break
                    retried += 1
                    time.sleep(1)
                else:
                    noisy += 1
                if round_:
                    figures.setdefault((name, mode), []).append(seconds)
        loads.append(os.getloadavg()[0])
    wall = time.perf_counter() - wall0
    other = busy_seconds() - busy0 - (own_seconds() - own0)
    print(
        f"medians of {args.runs} interleaved runs, ms (min-max); every run checked: exit 0 and "
        "all tests executed and passed"
    )
    heads = ("unpinned" if m == "all" else f"CPU {m} only" for m in modes)
    print(f"  {'command':44}" + "".join(f"{h:>22}" for h in heads))
    for name in commands:
        row = f"  {name:44}"
        for mode in modes:
            xs = figures[(name, mode)]
            low, mid, high = (1000 * f(xs) for f in (min, statistics.median, max))
            row += f"{f'{mid:.0f} ({low:.0f}-{high:.0f})':>22}"
        print(row)
    print(
        f"conditions: load average (1 min) {min(loads):.2f}-{max(loads):.2f}; other processes "
        f"used {other:.0f} CPU-s in {wall:.0f} s ({100 * other / wall:.0f}% of one CPU); "
        f"{retried} runs repeated because others used the CPU meanwhile, {noisy} kept anyway"
    )
    if args.phases:
        for name, (b, s) in phased.items():
            print(f"phases of {name}, in-process (one run):")
            phases(b, s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
