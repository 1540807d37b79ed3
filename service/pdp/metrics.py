"""Prometheus metrics: the instruments and the hooks the request path and reloader call.

Every hook is a plain synchronous call of a few dictionary lookups and `inc`/`observe`,
so it sits the same in a grpc.aio or a threaded server and costs about a microsecond.

Label values are bounded by configuration, never by callers: `tenant` is a tenant the
reloader loaded a bundle for, `action` an action declared by that tenant's schema (as
Cedar lists them); anything else is counted under `OTHER`. No principal, resource or
context value ever becomes a label.

With `--workers N` the instruments live in prometheus-client's multiprocess mode (the
supervisor sets `PROMETHEUS_MULTIPROC_DIR` for its workers before they start, so each
value is a shared-memory file) and the supervisor serves one scrape summing them
(`pdp.metrics_server`).
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from pdp.bundle import Bundle
from pdp.model import DEFAULT_TENANT, CheckInput, CheckResult, Decision, EntityRef

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The label value for a tenant or action outside the loaded bundles. A tenant name must
# start with a letter or digit (`pdp.model.TENANT_NAME`), so no tenant is called this.
OTHER = "_other"
# Server-side handling time: Check takes ~100 us in Python, so buckets resolve tens of
# microseconds at the low end and still place a multi-second stall.
# (Written out: 30e-6 computed as 30 * 1e-6 would show as le="2.9999999999999997e-05".)
RPC_BUCKETS = (
    0.00001, 0.00002, 0.00003, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005,
    0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
SYNC_SECONDS = 1.0  # how often a `--workers` worker copies object counters into shared memory


def action_label(action: EntityRef) -> str:
    # Plain `Action::"read"` reads as `read`; a namespaced action keeps its type.
    return action.id if action.type == "Action" else f'{action.type}::"{action.id}"'


def schema_actions(bundle: Bundle) -> dict[EntityRef, str]:
    """The actions the bundle's schema declares, as Cedar lists them: entities parsed with a
    schema include its action entities, so an empty list yields exactly those."""
    listed = json.loads(str(cedarpy.Entities.from_json_str("[]", bundle.schema)))
    refs = (EntityRef(e["uid"]["type"], e["uid"]["id"]) for e in listed)
    return {ref: action_label(ref) for ref in refs}


# `*_created` series would double the exposition for a start time process metrics give.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Tenant:
    version: tuple[str, str, str]  # the bundle_info labels being exported
    actions: Mapping[EntityRef, str]
    # The decision counter's child of each (declared action, decision) decided so far:
    # one lookup a decision; bounded by the schema's actions (others are not kept here).
    children: dict[tuple[str, str, bool], Any] = field(default_factory=dict)


class _Timing:
    """A histogram child's `observe` by bisection: prometheus-client walks its 26 buckets
    in Python (~1.5 us a call). The same bucket and sum are incremented (the first bucket
    whose bound is >= the amount, as `Histogram.observe` picks; `test_metrics` pins this
    against the locked prometheus-client); anything but a number >= 0 goes to the
    library's own `observe`."""

    __slots__ = ("_child", "_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds = tuple(child._upper_bounds)
        self._buckets = child._buckets
        self._sum = child._sum

    def observe(self, amount: float) -> None:
        if not amount >= 0.0:  # NaN (and negative amounts: rare, the library's path)
            self._child.observe(amount)
            return
        self._sum.inc(amount)
        self._buckets[bisect.bisect_left(self._bounds, amount)].inc(1)


class Metrics:
    """The PDP's instruments. `NoMetrics` (metrics off) has the same hooks, doing nothing."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: bool = False):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        r = self.registry
        self.decisions = Counter(
            "pdp_decisions",
            "Decisions made, by tenant, action and decision.",
            ["tenant", "action", "decision"],
            registry=r,
        )
        self.handled = Counter(
            "pdp_grpc_server_handled",
            "RPCs completed, by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self.handling = Histogram(
            "pdp_grpc_server_handling_seconds",
            "Server-side time to handle an RPC, from request decoded to response built.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.batch_items = Histogram(
            "pdp_check_batch_items",
            "Items per CheckBatch request decided.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        # Gauges over workers: a live worker's value counts, the most recent (max) wins;
        # the loaded time takes the oldest, so a worker stuck on an old bundle shows.
        self.bundle_info = Gauge(
            "pdp_bundle_info",
            "The bundle each tenant serves (value 1).",
            ["tenant", "name", "version", "digest"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.loaded_at = Gauge(
            "pdp_bundle_loaded_timestamp_seconds",
            "When the tenant's served bundle version was first loaded (Unix time).",
            ["tenant"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.reload_ok_at = Gauge(
            "pdp_bundle_last_reload_success_timestamp_seconds",
            "When the tenant's bundle was last read and accepted (Unix time).",
            ["tenant"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reload_failed_at = Gauge(
            "pdp_bundle_last_reload_failure_timestamp_seconds",
            "When a reload of the tenant's bundle last failed (Unix time).",
            ["tenant"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reload_failures = Counter(
            "pdp_bundle_reload_failures",
            "Bundle loads refused (the tenant kept its last good bundle); per worker.",
            ["tenant"],
            registry=r,
        )
        self.rate_limited_calls = Counter(
            "pdp_rate_limited",
            "Calls refused by a rate limit, by tenant and limit (the setting's name).",
            ["tenant", "limit"],
            registry=r,
        )
        self.kill_switch_active = Gauge(
            "pdp_kill_switch_active",
            "1 for each kill switch scope in force (pdp, tenant=T, tenant=T,action=A).",
            ["scope"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._killed: set[str] = set()
        # `max_bundle_age`: 1 while the tenant denies every check as stale (livemax: any
        # worker stale shows).
        self.stale = Gauge(
            "pdp_bundle_stale",
            "1 while the tenant's bundle is stale (not confirmed within max_bundle_age) and "
            "every check is denied, else 0.",
            ["tenant"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._tenants: dict[str, _Tenant] = {}  # replaced whole, read without a lock
        self._children: dict[tuple[str, str, str], Any] = {}  # bounded: labels are bounded
        self._rpc_children: dict[tuple[str, str], tuple[Any, _Timing]] = {}
        self._lock = threading.Lock()  # reload hooks vs. each other
        self._sources: list[_ObjectCounters] = []

    # ------------------------------------------------------------------ request path --
    def decided(self, tenant: str, request: CheckInput, result: CheckResult) -> None:
        known = self._tenants.get(tenant or DEFAULT_TENANT)
        self._decision_child(known, tenant, request, result).inc(1)

    def decided_batch(
        self, tenant: str, requests: Sequence[CheckInput], results: Sequence[CheckResult]
    ) -> None:
        known = self._tenants.get(tenant or DEFAULT_TENANT)
        counts: dict[Any, int] = {}  # one `inc` per label set, not per item
        for request, result in zip(requests, results, strict=True):
            child = self._decision_child(known, tenant, request, result)
            counts[child] = counts.get(child, 0) + 1
        for child, n in counts.items():
            child.inc(n)
        self.batch_items.observe(len(requests))

    def _decision_child(
        self, known: _Tenant | None, tenant: str, request: CheckInput, result: CheckResult
    ) -> Any:
        if known is None:
            return self._child((OTHER, OTHER, result.decision.value))
        action = request.action
        # Keyed by strings and a bool: EntityRef and Decision hash in Python, two calls more.
        key = (action.type, action.id, result.decision is Decision.ALLOW)
        child = known.children.get(key)
        if child is None:
            child = self._child(self._key(known, tenant, request, result))
            if action in known.actions:  # a caller's made-up action is not kept
                known.children[key] = child
        return child

    @staticmethod
    def _key(
        known: _Tenant | None, tenant: str, request: CheckInput, result: CheckResult
    ) -> tuple[str, str, str]:
        if known is None:
            return (OTHER, OTHER, result.decision.value)
        action = known.actions.get(request.action, OTHER)
        return (tenant or DEFAULT_TENANT, action, result.decision.value)

    def _child(self, key: tuple[str, str, str]) -> Any:
        child = self._children.get(key)
        if child is None:
            # The child's value (what `Counter.inc` increments, after checks that cannot
            # fail for a count of 1): one call fewer per decision, as `_Timing` does.
            child = self._children.setdefault(key, self.decisions.labels(*key)._value)
        return child

    def rpc(self, method: str, code: str, seconds: float) -> None:
        """One RPC finished: `method` is the servicer method, `code` a grpc.StatusCode name."""
        children = self._rpc_children.get((method, code))
        if children is None:  # bounded: methods x status codes
            children = (
                self.handled.labels(method, code)._value,  # as `_child`: the value itself
                _Timing(self.handling.labels(method)),
            )
            self._rpc_children[(method, code)] = children
        children[0].inc(1)
        children[1].observe(seconds)

    def rate_limited(self, tenant: str, limit: str) -> None:
        """A call refused by `limit` (`rate_limit_per_tenant` or `rate_limit_per_client`)."""
        name = tenant or DEFAULT_TENANT
        self.rate_limited_calls.labels(name if name in self._tenants else OTHER, limit).inc()

    # --------------------------------------------------------------------- reloader --
    def bundle_loaded(self, tenant: str, bundle: Bundle) -> None:
        """The tenant's bundle was read and accepted (a new version or the same again)."""
        v = bundle.version
        now = time.time()
        with self._lock:
            old = self._tenants.get(tenant)
            self.reload_ok_at.labels(tenant).set(now)
            if old is not None and old.version == (v.name, v.version, v.digest):
                return
            if old is not None:
                self._drop_info(tenant, old.version)
            self.bundle_info.labels(tenant, v.name, v.version, v.digest).set(1)
            self.loaded_at.labels(tenant).set(now)
            self._tenants = {
                **self._tenants,
                tenant: _Tenant((v.name, v.version, v.digest), schema_actions(bundle)),
            }

    def staleness(self, tenants: Collection[str], stale: Collection[str]) -> None:
        for tenant in tenants:
            self.stale.labels(tenant).set(int(tenant in stale))

    def reload_failed(self, tenant: str) -> None:
        with self._lock:
            self.reload_failures.labels(tenant).inc()
            self.reload_failed_at.labels(tenant).set(time.time())

    # ------------------------------------------------------------------ kill switch --
    def kill_switches(self, scopes: Iterable[str]) -> None:
        """The scopes killed now (labels of `pdp.kill_switch.Scope`); the others cleared."""
        now = set(scopes)
        with self._lock:
            for scope in self._killed - now:
                if self.multiprocess:  # shared-memory values cannot be removed
                    self.kill_switch_active.labels(scope).set(0)
                else:
                    self.kill_switch_active.remove(scope)
            for scope in now:
                self.kill_switch_active.labels(scope).set(1)
            self._killed = now

    def _drop_info(self, tenant: str, version: tuple[str, str, str]) -> None:
        if self.multiprocess:
            # Shared-memory values cannot be removed: 0 marks a version no longer served,
            # and the scrape leaves such samples out (`pdp.metrics_server`).
            self.bundle_info.labels(tenant, *version).set(0)
        else:
            self.bundle_info.remove(tenant, *version)

    # ---------------------------------------------------------- other parts' counters --
    def export_counters(
        self,
        prefix: str,
        source: object,
        names: Iterable[str],
        gauges: Mapping[str, str] | None = None,
    ) -> None:
        """Export int attributes of `source` as counters `pdp_<prefix>_<name>_total`, e.g.
        `export_counters("decision_cache", cache, ("hits", "misses", "evictions"))`, and
        `gauges` (attribute -> metric name suffix, e.g. `{"size": "entries"}`) as gauges
        `pdp_<prefix>_<suffix>` (summed over workers). They are copied at each scrape (one
        process) or every SYNC_SECONDS (`--workers`)."""
        counters = {
            n: Counter(f"pdp_{prefix}_{n}", f"{prefix} {n}.", registry=self.registry) for n in names
        }
        levels = {
            attr: Gauge(
                f"pdp_{prefix}_{suffix}",
                f"{prefix} {suffix}.",
                registry=self.registry,
                multiprocess_mode="livesum",
            )
            for attr, suffix in (gauges or {}).items()
        }
        self._sources.append(_ObjectCounters(source, counters, levels))

    def sync(self) -> None:
        for s in self._sources:
            s.sync()

    def start_sync(self, stop: threading.Event) -> threading.Thread:
        """A `--workers` worker's loop copying object counters to shared memory."""

        def loop() -> None:
            while not stop.wait(SYNC_SECONDS):
                self.sync()
            self.sync()

        thread = threading.Thread(target=loop, name="pdp-metrics-sync", daemon=True)
        thread.start()
        return thread


class _ObjectCounters:
    def __init__(
        self, source: object, counters: Mapping[str, Counter], gauges: Mapping[str, Gauge]
    ) -> None:
        self._source = source
        self._counters = counters
        self._gauges = gauges
        self._seen = dict.fromkeys(counters, 0)
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            for name, counter in self._counters.items():
                value = int(getattr(self._source, name))
                if value > self._seen[name]:
                    counter.inc(value - self._seen[name])
                    self._seen[name] = value
            for name, gauge in self._gauges.items():
                gauge.set(int(getattr(self._source, name)))


class NoMetrics(Metrics):
    """Metrics turned off (`--metrics-listen off`): the hooks do nothing."""

    def __init__(self) -> None:
        super().__init__(CollectorRegistry(auto_describe=False))

    def decided(self, tenant: str, request: CheckInput, result: CheckResult) -> None:
        pass

    def decided_batch(
        self, tenant: str, requests: Sequence[CheckInput], results: Sequence[CheckResult]
    ) -> None:
        pass

    def rpc(self, method: str, code: str, seconds: float) -> None:
        pass

    def rate_limited(self, tenant: str, limit: str) -> None:
        pass

    def bundle_loaded(self, tenant: str, bundle: Bundle) -> None:
        pass

    def reload_failed(self, tenant: str) -> None:
        pass

    def kill_switches(self, scopes: Iterable[str]) -> None:
        pass

    def staleness(self, tenants: Collection[str], stale: Collection[str]) -> None:
        pass


def multiprocess_dir() -> str | None:
    """The shared-memory directory when this process is a `--workers` worker."""
    return os.environ.get(MULTIPROC_ENV) or None
