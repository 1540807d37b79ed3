"""The metrics listener: what one scrape of `/metrics` shows, for one process or N workers.

One process serves its own instruments plus process, platform and GC metrics. With
`--workers N` the supervisor serves the scrape: prometheus-client's multiprocess
collector sums the workers' shared-memory files (counters and histograms summed, gauges
by their mode), and process metrics are read from each worker's /proc entry, labelled
`worker="0"`..`"N-1"`. Either way the scrape adds `pdp_bundle_age_seconds`, derived
from the loaded timestamps at scrape time, and leaves out `pdp_bundle_info` samples of
versions no longer served (value 0, multiprocess mode only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from pdp.metrics import Metrics

log = logging.getLogger(__name__)

LOADED = "pdp_bundle_loaded_timestamp_seconds"
INFO = "pdp_bundle_info"


class _Scrape(Collector):
    """The instruments' families as collected, with bundle age added and stale info dropped."""

    def __init__(self, source: Callable[[], Iterable[Metric]], before: Callable[[], None]) -> None:
        self._source = source
        self._before = before

    def collect(self) -> Iterable[Metric]:
        self._before()
        now = time.time()
        age = GaugeMetricFamily(
            "pdp_bundle_age_seconds",
            "Seconds since the tenant's served bundle version was first loaded.",
            labels=["tenant"],
        )
        for family in self._source():
            if family.name == INFO:
                family.samples = [s for s in family.samples if s.value != 0]
            elif family.name == LOADED:
                for s in family.samples:
                    age.add_metric([s.labels["tenant"]], max(0.0, now - s.value))
            yield family
        yield age


class _Workers(Collector):
    """Process metrics of each worker, labelled by its index."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._collectors = [
            (str(i), ProcessCollector(pid=lambda p=pid: p, registry=None))  # type: ignore[misc]
            for i, pid in enumerate(pids)
        ]

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for worker, collector in self._collectors:
            for family in collector.collect():
                out = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, "worker": worker}, s.value)
        yield from families.values()


def process_registry(metrics: Metrics) -> CollectorRegistry:
    """What one `pdp serve` process shows."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_Scrape(metrics.registry.collect, metrics.sync))
    return registry


def workers_registry(directory: str, pids: Sequence[int]) -> CollectorRegistry:
    """What the `--workers` supervisor shows: every worker's instruments, summed."""
    registry = CollectorRegistry()
    merged = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
    registry.register(_Scrape(merged.collect, lambda: None))
    registry.register(_Workers(pids))
    return registry


class MetricsListener:
    """The HTTP listener (`metrics_listen`), in a daemon thread of its own."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, _, port = listen.rpartition(":")
        self._server: Any
        try:
            self._server, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=registry
            )
        except OSError as exc:
            raise OSError(f"metrics_listen {listen}: {exc.strerror or exc}") from exc
        self.port: int = self._server.server_port
        shown = host if ":" not in host.strip("[]") else f"[{host.strip('[]')}]"
        log.info("metrics on http://%s:%d/metrics", shown, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
