from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import settings

from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from .support import DOCS_BUNDLE, REPO, ServerProcess, running_server

# Every server a test starts (and its `--workers` supervisor) serves metrics on a free port:
# the default 127.0.0.1:9464 would be taken by the first one, or by another checkout's run.
os.environ.setdefault("PDP_METRICS_LISTEN", "127.0.0.1:0")
# ...and keeps its entity store in this run's own directory, not in the checkout's ./data.
os.environ.setdefault("PDP_DATA_DIR", tempfile.mkdtemp(prefix="pdp-test-data-"))
os.environ.setdefault("PDP_ADMIN_LISTEN", "127.0.0.1:0")  # the admin API too (50052)

# CI runs the same examples every time: a property failure there is reproducible, not luck.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One real server for read-only tests: the default bundle as `default`, `docs` as `docs`."""
    with running_server(
        [
            "--bundle",
            f"default={REPO / 'policies'}",
            "--bundle",
            f"docs={DOCS_BUNDLE}",
            "--no-watch",
        ]
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> pb_grpc.AuthorizationServiceStub:
    return pb_grpc.AuthorizationServiceStub(channel)
