"""Scrape a real server's `/metrics` and read it with prometheus-client's own parser."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .support import ServerProcess

METRICS_LINE = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"


def metrics_port(srv: ServerProcess) -> int:
    m = re.search(METRICS_LINE, srv.wait_for_log(METRICS_LINE))
    assert m is not None
    return int(m[1])


def scrape(port: int) -> dict[str, Metric]:
    """Families by name (a counter's name without `_total`, as the parser gives it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: Mapping[str, Metric], sample: str, **labels: str) -> float:
    """The one sample named `sample` whose labels include `labels` (0 if there is none)."""
    family = families.get(re.sub(r"_(total|bucket|count|sum)$", "", sample))
    if family is None:
        return 0.0
    found = [
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{sample} {labels}: {len(found)} samples"
    return found[0] if found else 0.0


def label_values(families: Mapping[str, Metric]) -> set[str]:
    return {v for f in families.values() for s in f.samples for v in s.labels.values()}
