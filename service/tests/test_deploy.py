"""deploy/: the Prometheus alert rules (promtool) and the Grafana dashboard name only
metrics the server really exports (checked against a scrape of the real server)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from .metrics_support import metrics_port, scrape
from .support import DOCS_BUNDLE, REPO, ServerProcess, running_server
from .tokens import AUDIENCE, ISSUER, ed_key, jwks

PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "pdp-dashboard.json"
# .ci/run installs promtool and sets this: there a missing promtool fails instead of skipping.
REQUIRE_PROMTOOL = "PDP_REQUIRE_PROMTOOL"
# Series Prometheus makes itself, not the PDP.
PROMETHEUS_OWN = {"up"}
METRIC = re.compile(r"\b((?:pdp|process|python)_[a-zA-Z0-9_]+|up)\b(?!\s*\()")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get(REQUIRE_PROMTOOL):
            pytest.fail("promtool is missing, and this run requires it (.ci/run)")
        pytest.skip("skipped: promtool is missing (Debian: apt-get install prometheus)")
    return found


def run_promtool(*args: str) -> str:
    r = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_promtool_checks_the_alert_rules() -> None:
    assert "SUCCESS: 9 rules found" in run_promtool("check", "rules", "alerts.yml")


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml")


def exported_names(families: dict[str, Any]) -> set[str]:
    """Every series name a scrape holds, from each family's type (a labelled family with no
    sample yet, e.g. reload failures before any failure, is still announced by TYPE)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
    }
    names = {s.name for f in families.values() for s in f.samples}
    for f in families.values():
        names.update(f.name + x for x in suffixes.get(f.type, ("",)))
    return names


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with decision logs turned on and a JWKS configured (both off by default),
    so the decision log's and the JWKS refresher's counters are in its scrape."""
    jwks_file = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks_file.write_text(jwks(ed_key("k1")))
    env = {
        "PDP_JWT_JWKS_FILE": str(jwks_file),
        "PDP_JWT_ISSUER": ISSUER,
        "PDP_JWT_AUDIENCE": AUDIENCE,
    }
    with running_server(
        ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--decision-log", "stdout"], env=env
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def exported(logging_server: ServerProcess) -> set[str]:
    server = logging_server
    with server.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        uid = vpb.EntityUid
        item = pb.BatchItem(
            principal=uid(type="User", id="alice"),
            action=uid(type="Action", id="read"),
            resource=uid(type="Document", id="doc1"),
        )
        stub.CheckBatch(pb.CheckBatchRequest(tenant="docs", items=[item, item]))
        with pytest.raises(grpc.RpcError):
            stub.Check(pb.CheckRequest(tenant="no-such-tenant"))
    # The decision cache's and the decision log's counters come from the same scrape (the
    # cache is on by default, the log turned on above).
    return exported_names(scrape(metrics_port(server))) | PROMETHEUS_OWN


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)  # label names and values are not metrics
    return set(METRIC.findall(without_labels))


def alert_exprs() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield f"variable {var['name']}", var["query"]["query"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            yield f"panel {panel['title']!r}", target["expr"]


def test_the_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "cedar-pdp"


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_named_is_exported_by_the_server(source: str, exported: set[str]) -> None:
    exprs = list(alert_exprs() if source == "alerts" else dashboard_exprs())
    named = {(where, name) for where, expr in exprs for name in metric_names(expr)}
    assert len({name for _, name in named}) >= 5  # the extraction found metric names
    missing = sorted((where, name) for where, name in named if name not in exported)
    assert not missing, missing


def test_metric_names_are_found_in_expressions() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(pdp_x_bucket{code!~"pdp_no"}[5m]))) / up'
    assert metric_names(expr) == {"pdp_x_bucket", "up"}
