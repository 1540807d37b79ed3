"""Prometheus metrics: scrape the real `/metrics` of a real `pdp serve` after real calls."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import load_bundle
from pdp.metrics import OTHER, RPC_BUCKETS, Metrics, _Timing, schema_actions
from pdp.metrics_server import process_registry
from pdp.model import BundleVersion, CheckInput, CheckResult, Decision, EntityRef

from .metrics_support import label_values, metrics_port, scrape, value
from .support import DOCS_BUNDLE, pdp_command, running_server

HOSTILE = "HOSTILE-1f3a"  # in every caller-controlled field; must never become a label


def req(principal: str, action: str, resource: str = "doc1", **kw: Any) -> pb.CheckRequest:
    return pb.CheckRequest(
        tenant=kw.pop("tenant", "docs"),
        principal=vpb.EntityUid(type="User", id=principal),
        action=vpb.EntityUid(type="Action", id=action),
        resource=vpb.EntityUid(type="Document", id=resource),
        **kw,
    )


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """The docs bundle, deciding requests the schema does not know (an undeclared action)."""
    bundle = tmp_path / "docs"
    shutil.copytree(DOCS_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "validate_requests": False}))
    return bundle


def test_scrape_after_calls_reloads_and_a_failed_reload(docs: Path) -> None:
    with (
        running_server(["--bundle", f"docs={docs}", "--no-watch"]) as srv,
        srv.channel() as ch,
    ):
        port = metrics_port(srv)
        stub = pb_grpc.AuthorizationServiceStub(ch)
        for _ in range(3):
            assert stub.Check(req("alice", "read")).decision == pb.DECISION_ALLOW
        for _ in range(2):
            assert stub.Check(req("mallory", "read")).decision == pb.DECISION_DENY
        hostile = [
            req("mallory", HOSTILE),  # an action no schema declares: decided, as `_other`
            req(HOSTILE, "read", HOSTILE, context_json=json.dumps({"tags": [HOSTILE]})),
        ]
        for r in hostile:
            assert stub.Check(r).decision == pb.DECISION_DENY
        for tenant in (HOSTILE, "nope"):
            with pytest.raises(grpc.RpcError) as err:
                stub.Check(req("alice", "read", tenant=tenant))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(req("alice", "read", context_json="{"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        items = [req(p, "read") for p in ("alice", "mallory", "bob")]
        batch = pb.CheckBatchRequest(
            tenant="docs",
            items=[
                pb.BatchItem(principal=i.principal, action=i.action, resource=i.resource)
                for i in items
            ],
        )
        answer = stub.CheckBatch(batch)
        assert [r.decision for r in answer.results] == [
            pb.DECISION_ALLOW,
            pb.DECISION_DENY,
            pb.DECISION_ALLOW,
        ]
        digest = answer.results[0].policy_version.digest

        m = scrape(port)
        decided = {
            (s.labels["tenant"], s.labels["action"], s.labels["decision"]): s.value
            for s in m["pdp_decisions"].samples
        }
        assert decided == {
            ("docs", "read", "allow"): 5.0,
            ("docs", "read", "deny"): 4.0,
            ("docs", OTHER, "deny"): 1.0,
        }
        assert not [v for v in label_values(m) if HOSTILE in v]
        handled = {
            (s.labels["method"], s.labels["code"]): s.value
            for s in m["pdp_grpc_server_handled"].samples
        }
        assert handled == {
            ("Check", "OK"): 7.0,
            ("Check", "NOT_FOUND"): 2.0,
            ("Check", "INVALID_ARGUMENT"): 1.0,
            ("CheckBatch", "OK"): 1.0,
        }
        seconds = "pdp_grpc_server_handling_seconds"
        assert value(m, f"{seconds}_count", method="Check") == 10
        assert value(m, f"{seconds}_count", method="CheckBatch") == 1
        assert 0 < value(m, f"{seconds}_sum", method="Check") < 10  # seconds, not ms or us
        bounds = {s.labels["le"] for s in m[seconds].samples if s.name.endswith("_bucket")}
        assert {"1e-05", "2e-05", "3e-05", "5e-05", "+Inf"} <= bounds  # tens of microseconds
        assert value(m, "pdp_check_batch_items_count") == 1
        assert value(m, "pdp_check_batch_items_sum") == 3
        info = [s.labels for s in m["pdp_bundle_info"].samples]
        assert info == [{"tenant": "docs", "name": "docs", "version": "1.0.0", "digest": digest}]
        loaded = value(m, "pdp_bundle_loaded_timestamp_seconds", tenant="docs")
        assert loaded > 1.7e9
        assert 0 <= value(m, "pdp_bundle_age_seconds", tenant="docs") < 600
        assert value(m, "pdp_bundle_reload_failures_total", tenant="docs") == 0
        assert value(m, "process_resident_memory_bytes") > 1e6
        assert value(m, "process_cpu_seconds_total") > 0

        # A new version replaces the info sample; the loaded time moves.
        manifest = json.loads((docs / "manifest.json").read_text())
        (docs / "manifest.json").write_text(json.dumps({**manifest, "version": "2.0.0"}))
        mark = len(srv.lines)
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for_log(r"tenant docs: serving bundle docs version 2\.0\.0", start=mark)
        m = scrape(port)
        info = [s.labels for s in m["pdp_bundle_info"].samples]
        assert [(i["tenant"], i["version"]) for i in info] == [("docs", "2.0.0")]
        assert value(m, "pdp_bundle_loaded_timestamp_seconds", tenant="docs") > loaded
        ok_at = value(m, "pdp_bundle_last_reload_success_timestamp_seconds", tenant="docs")
        assert ok_at >= value(m, "pdp_bundle_loaded_timestamp_seconds", tenant="docs")

        # A refused bundle: counted and timed; the served version is unchanged.
        (docs / "rules" / "broken.cedar").write_text("permit(principal, action, resource) when {")
        mark = len(srv.lines)
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for_log(r"tenant docs: bundle refused, keeping version 2\.0\.0", start=mark)
        m = scrape(port)
        assert value(m, "pdp_bundle_reload_failures_total", tenant="docs") == 1
        assert value(m, "pdp_bundle_last_reload_failure_timestamp_seconds", tenant="docs") >= ok_at
        info = [s.labels for s in m["pdp_bundle_info"].samples]
        assert [(i["tenant"], i["version"]) for i in info] == [("docs", "2.0.0")]
        assert stub.Check(req("alice", "read")).policy_version.version == "2.0.0"


def test_two_workers_one_scrape_sums_both() -> None:
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--workers", "2"]) as srv:
        port = metrics_port(srv)
        directory = Path(srv.wait_for_log(r"worker metrics in ").rsplit(" ", 1)[1])
        assert directory.is_dir()
        first = srv.lines.index(srv.wait_for_log("listening on"))
        srv.wait_for_log("listening on", start=first + 1)
        by_worker: dict[str, int] = {}
        for _ in range(24):  # fresh connections: the kernel spreads them over the workers
            with srv.channel() as ch:
                r = pb_grpc.AuthorizationServiceStub(ch).Check(req("alice", "read"), timeout=10)
                prefix = r.decision_id.split("-")[0]
                by_worker[prefix] = by_worker.get(prefix, 0) + 1
        assert len(by_worker) == 2 and sum(by_worker.values()) == 24  # both answered
        m = scrape(port)
        assert value(m, "pdp_decisions_total", tenant="docs", action="read") == 24
        assert value(m, "pdp_grpc_server_handled_total", method="Check", code="OK") == 24
        assert value(m, "pdp_grpc_server_handling_seconds_count", method="Check") == 24
        assert [s.labels["version"] for s in m["pdp_bundle_info"].samples] == ["1.0.0"]
        assert value(m, "pdp_bundle_age_seconds", tenant="docs") >= 0
        cpu = {s.labels["worker"] for s in m["process_cpu_seconds"].samples}
        assert cpu == {"0", "1"}
    assert not directory.exists()  # the per-run directory is cleaned up


def test_metrics_off_opens_no_listener() -> None:
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--metrics-listen", "off"]) as srv:
        with srv.channel() as ch:
            pb_grpc.AuthorizationServiceStub(ch).Check(req("alice", "read"), timeout=10)
        assert not [line for line in srv.lines if "metrics on" in line]


def test_taken_metrics_port_fails_start_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        where = f"127.0.0.1:{taken.getsockname()[1]}"
        r = subprocess.run(
            [*pdp_command(), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", where],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"metrics_listen {where}" in r.stderr
    assert "listening on" not in r.stdout + r.stderr  # before the gRPC port opened


# ------------------------------------------------------------------ in process --
class _Counters:
    """Stands in for the decision cache / decision log: plain int counters."""

    def __init__(self) -> None:
        self.hits = self.misses = self.evictions = self.entries = self.bytes = 0


def _families(metrics: Metrics) -> dict[str, Any]:
    text = generate_latest(process_registry(metrics)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_object_counters_are_exported_as_they_stand_at_each_scrape() -> None:
    metrics = Metrics()
    cache = _Counters()
    gauges = {"entries": "entries", "bytes": "bytes"}
    metrics.export_counters("decision_cache", cache, ("hits", "misses", "evictions"), gauges)
    cache.hits, cache.misses, cache.entries, cache.bytes = 7, 3, 2, 512
    m = _families(metrics)
    assert value(m, "pdp_decision_cache_hits_total") == 7
    assert value(m, "pdp_decision_cache_misses_total") == 3
    assert value(m, "pdp_decision_cache_evictions_total") == 0
    assert value(m, "pdp_decision_cache_entries") == 2
    assert value(m, "pdp_decision_cache_bytes") == 512
    cache.hits, cache.evictions = 10, 2
    m = _families(metrics)
    assert value(m, "pdp_decision_cache_hits_total") == 10
    assert value(m, "pdp_decision_cache_evictions_total") == 2


DOCS = load_bundle(DOCS_BUNDLE)
RESULT = CheckResult(Decision.DENY, [], [], BundleVersion("docs", "1", "d"), "x")
DECLARED = [EntityRef("Action", "read"), EntityRef("Action", "edit")]
ref_ids = st.one_of(st.sampled_from(["read", "edit", OTHER, "read "]), st.text(max_size=20))
ref_types = st.one_of(st.sampled_from(["Action", "NS::Action", "action"]), st.text(max_size=8))
actions = st.one_of(st.sampled_from(DECLARED), st.builds(EntityRef, ref_types, ref_ids))
tenants = st.one_of(st.just("docs"), st.sampled_from(["", "default", OTHER]), st.text(max_size=20))


def test_labels_come_from_the_loaded_bundles_never_from_the_request() -> None:
    seen = {"declared": 0, "undeclared": 0, "tenant": 0, "no tenant": 0}

    @settings(max_examples=300, derandomize=True, database=None)
    @given(tenant=tenants, action=actions, text=st.text(max_size=20))
    def labels(tenant: str, action: EntityRef, text: str) -> None:
        metrics = Metrics()
        metrics.bundle_loaded("docs", DOCS)
        request = CheckInput(EntityRef("User", text), action, EntityRef("Doc", text), {"x": text})
        metrics.decided(tenant, request, RESULT)
        metrics.decided_batch(tenant, [request], [RESULT])
        (sample,) = metrics.decisions.collect()[0].samples
        declared = tenant == "docs" and action in DECLARED
        seen["declared" if declared else "undeclared"] += 1
        seen["tenant" if tenant == "docs" else "no tenant"] += 1
        if tenant != "docs":
            expected = (OTHER, OTHER)  # decisions happen only for loaded tenants anyway
        else:
            expected = ("docs", action.id if declared else OTHER)
        assert (sample.labels["tenant"], sample.labels["action"]) == expected
        assert sample.value == 2

    labels()
    assert min(seen.values()) >= 20, seen  # the generator reached every kind of case


def test_decisions_counted_through_the_kept_children_match_a_model_of_them() -> None:
    """One Metrics for every call (the per-tenant children kept from call to call): the
    counts exported equal a model's, labelled as the bundles say, and only declared
    actions are kept."""
    metrics = Metrics()
    metrics.bundle_loaded("docs", DOCS)
    model: collections.Counter[tuple[str, str, str]] = collections.Counter()
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=400, derandomize=True, database=None)
    # Weighted towards the served tenant and its declared actions (the children kept).
    @given(
        tenant=st.one_of(st.just("docs"), tenants),
        action=st.one_of(st.sampled_from(DECLARED), actions),
        allow=st.booleans(),
        items=st.integers(0, 3),
    )
    def count(tenant: str, action: EntityRef, allow: bool, items: int) -> None:
        decision = Decision.ALLOW if allow else Decision.DENY
        result = CheckResult(decision, [], [], BundleVersion("docs", "1", "d"), "x")
        request = CheckInput(EntityRef("User", "u"), action, EntityRef("Doc", "d"))
        metrics.decided(tenant, request, result)
        metrics.decided_batch(tenant, [request] * items, [result] * items)
        declared = tenant == "docs" and action in DECLARED
        label = (OTHER, OTHER) if tenant != "docs" else ("docs", action.id if declared else OTHER)
        model[(*label, decision.value)] += 1 + items
        seen["declared" if declared else "docs, undeclared" if tenant == "docs" else "other"] += 1

    count()
    assert min(seen.values()) >= 50, seen
    samples = metrics.decisions.collect()[0].samples
    exported = {
        (s.labels["tenant"], s.labels["action"], s.labels["decision"]): s.value for s in samples
    }
    assert exported == model
    assert len(metrics._tenants["docs"].children) <= 2 * len(DECLARED)  # bounded


@settings(max_examples=500, database=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([*RPC_BUCKETS, 0.0, -1.0, float("inf"), float("nan")]),
            st.floats(-1e-3, 10.0),
            st.floats(allow_nan=True),
        ),
        max_size=30,
    )
)
def test_the_rpc_timing_observes_as_prometheus_client_does(amounts: list[float]) -> None:
    """The handling-time histogram's bisecting `observe` against the locked
    prometheus-client's own, on twins: the same exposition for any amounts, bucket
    bounds exactly included."""
    exposed = []
    for fast in (True, False):
        registry = CollectorRegistry()
        child = Histogram("t_seconds", "t", ["m"], buckets=RPC_BUCKETS, registry=registry)
        timing = _Timing(child.labels("m")) if fast else child.labels("m")
        for amount in amounts:
            timing.observe(amount)
        exposed.append(generate_latest(registry))
    assert exposed[0] == exposed[1]


def test_action_labels_are_the_schema_actions() -> None:
    assert schema_actions(DOCS) == {
        EntityRef("Action", "read"): "read",
        EntityRef("Action", "edit"): "edit",
    }


WORKER = """
import dataclasses, pathlib, sys
from pdp.bundle import load_bundle
from pdp.metrics import Metrics
from pdp.model import BundleVersion

class Cache:
    hits, misses, evictions = 5, 1, 0

bundle = load_bundle(pathlib.Path(sys.argv[1]))
metrics = Metrics(multiprocess=True)
metrics.bundle_loaded("docs", bundle)
v2 = BundleVersion("docs", "2.0.0", "sha256:two")
metrics.bundle_loaded("docs", dataclasses.replace(bundle, version=v2))
metrics.export_counters("decision_cache", Cache(), ("hits", "misses", "evictions"))
metrics.sync()
"""


def test_worker_state_and_object_counters_are_merged_over_workers(tmp_path: Path) -> None:
    """What the supervisor serves from two workers' shared-memory files: object counters
    summed, a replaced bundle version left out (shared memory cannot remove it)."""
    from pdp.metrics import MULTIPROC_ENV
    from pdp.metrics_server import workers_registry

    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", WORKER, str(DOCS_BUNDLE)], env=env, timeout=60, check=True
        )
    text = generate_latest(workers_registry(str(tmp_path), [])).decode()
    m = {f.name: f for f in text_string_to_metric_families(text)}
    assert value(m, "pdp_decision_cache_hits_total") == 10
    assert value(m, "pdp_decision_cache_misses_total") == 2
    assert [s.labels["version"] for s in m["pdp_bundle_info"].samples] == ["2.0.0"]
    assert value(m, "pdp_bundle_age_seconds", tenant="docs") >= 0


def test_check_stream_items_are_counted_as_calls_with_their_status(docs: Path) -> None:
    # A stream's answers are in-band, so its errors never reach a call status: each item is
    # counted under CheckStream with the status Check would have ended with.
    with (
        running_server(["--bundle", f"docs={docs}", "--no-watch"]) as srv,
        srv.channel() as ch,
    ):
        stub = pb_grpc.AuthorizationServiceStub(ch)
        good, bad = req("alice", "read"), req("alice", "read", context_json="{")
        answers = list(stub.CheckStream(iter([good, bad, good])))
        assert [a.WhichOneof("outcome") for a in answers] == ["result", "error", "result"]
        families = scrape(metrics_port(srv))
        handled = "pdp_grpc_server_handled_total"
        assert value(families, handled, method="CheckStream", code="OK") == 2
        assert value(families, handled, method="CheckStream", code="INVALID_ARGUMENT") == 1
        assert (
            value(families, "pdp_decisions_total", tenant="docs", action="read", decision="allow")
            == 2
        )
