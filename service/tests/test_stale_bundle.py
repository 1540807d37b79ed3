"""`max_bundle_age` against the real server: a tenant whose bundle source stops being
confirmed (missing, invalid, failing verification) denies every check with a reason, ahead
of the decision cache, and is NOT_SERVING in health, until its source is good again.

The ages are small and every wait polls for an outcome with a generous bound: nothing here
asserts how long anything took."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp import signing
from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.bundle_files import read_bundle_files

from .metrics_support import metrics_port, scrape, value
from .support import REPO, ServerProcess, pdp_command, running_server
from .test_signed_bundles import REQ

STALE = re.compile(r"^stale bundle: not confirmed for (\d+) s$")
MAX_AGE = 1.0
AGE_ARGS = ["--max-bundle-age", str(MAX_AGE), "--bundle-confirm-interval-seconds", "0.2"]


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


class Client:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.channel = srv.channel()
        self.stub = pb_grpc.AuthorizationServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(self, tenant: str) -> pb.CheckResponse:
        request = pb.CheckRequest()
        request.CopyFrom(REQ)
        request.tenant = tenant
        return self.stub.Check(request, timeout=10)

    def status(self, name: str) -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status

    def stale_gauge(self, tenant: str) -> float:
        return value(scrape(metrics_port(self.srv)), "pdp_bundle_stale", tenant=tenant)

    def is_stale(self, tenant: str) -> bool:
        return bool(STALE.match(self.check(tenant).reason))


@pytest.fixture
def client_of() -> Iterator[Callable[[ServerProcess], Client]]:
    clients: list[Client] = []

    def make(srv: ServerProcess) -> Client:
        clients.append(Client(srv))
        return clients[-1]

    yield make
    for c in clients:
        c.channel.close()


def test_a_vanished_or_invalid_source_fails_closed_after_the_age_and_recovers(
    tmp_path: Path, client_of: Callable[[ServerProcess], Client]
) -> None:
    bundle = tmp_path / "acme"
    shutil.copytree(REPO / "policies", bundle)
    args = ["--bundle", f"acme={bundle}", "--bundle", f"other={REPO / 'policies'}", "--no-watch"]
    with running_server([*args, *AGE_ARGS]) as srv:
        c = client_of(srv)
        first = c.check("acme")
        assert (first.decision, first.reason) == (pb.DECISION_ALLOW, "")
        assert c.check("acme").cache_hit  # an Allow is in the cache now
        assert c.check("acme").cache_hit  # and under the request's exact bytes
        assert c.status("acme") == health_pb2.HealthCheckResponse.SERVING

        for break_it, fix_it in (
            (lambda: bundle.rename(tmp_path / "gone"), lambda: (tmp_path / "gone").rename(bundle)),
            (
                lambda: (bundle / "rbac" / "documents.cedar").write_text("permit(oops"),
                lambda: shutil.copy(
                    REPO / "policies" / "rbac" / "documents.cedar", bundle / "rbac"
                ),
            ),
        ):
            break_it()
            _until(lambda: c.is_stale("acme"), "acme denies as stale")
            denied = c.check("acme")
            assert denied.decision == pb.DECISION_DENY
            assert not denied.cache_hit  # ahead of the cache, which holds an Allow
            assert list(denied.determining_policies) == []
            assert denied.policy_version == first.policy_version  # the old bundle, unused
            m = STALE.match(denied.reason)
            assert m is not None and int(m[1]) >= MAX_AGE, denied.reason
            batch = c.stub.CheckBatch(
                pb.CheckBatchRequest(
                    tenant="acme",
                    items=[
                        pb.BatchItem(
                            principal=REQ.principal, action=REQ.action, resource=REQ.resource
                        )
                    ]
                    * 3,
                ),
                timeout=10,
            )
            assert [(r.decision, bool(STALE.match(r.reason))) for r in batch.results] == [
                (pb.DECISION_DENY, True)
            ] * 3
            _until(
                lambda: c.status("acme") == health_pb2.HealthCheckResponse.NOT_SERVING,
                "acme NOT_SERVING",
            )
            assert c.stale_gauge("acme") == 1
            # The other tenant is confirmed all along: it decides, and the server is ready.
            assert (c.check("other").decision, c.check("other").reason) == (
                pb.DECISION_ALLOW,
                "",
            )
            assert c.status("other") == health_pb2.HealthCheckResponse.SERVING
            assert c.status("") == health_pb2.HealthCheckResponse.SERVING
            assert c.stale_gauge("other") == 0

            fix_it()
            _until(lambda: c.check("acme").decision == pb.DECISION_ALLOW, "acme recovers")
            assert c.check("acme").reason == ""
            _until(
                lambda: c.status("acme") == health_pb2.HealthCheckResponse.SERVING,
                "acme SERVING",
            )
            assert c.stale_gauge("acme") == 0


def test_a_source_failing_verification_is_no_confirmation(
    tmp_path: Path, client_of: Callable[[ServerProcess], Client]
) -> None:
    keygen = subprocess.run(
        [*pdp_command(), "bundle", "keygen", "-o", str(tmp_path / "k")], capture_output=True
    )
    assert keygen.returncode == 0
    bundle = tmp_path / "acme"
    shutil.copytree(REPO / "policies", bundle)
    files = read_bundle_files(bundle)
    key = signing.load_private_key(tmp_path / "k.key")
    (bundle / "signature.json").write_bytes(signing.signature_file(files, "default", "1.1.0", key))
    args = [
        "--bundle",
        f"default={bundle}",
        "--bundle-verification-key",
        str(tmp_path / "k.pub"),
        "--data-dir",
        str(tmp_path / "data"),
        "--no-watch",
    ]
    with running_server([*args, *AGE_ARGS]) as srv:
        c = client_of(srv)
        assert c.check("default").decision == pb.DECISION_ALLOW
        good = (bundle / "signature.json").read_bytes()
        sig = json.loads(good)
        (bundle / "signature.json").write_text(json.dumps({**sig, "signature": "A" * 86 + "=="}))
        _until(lambda: c.is_stale("default"), "default denies as stale")
        # Decisions read the age at call time; health follows from the confirm loop's
        # wake-up just past the expiry, so it may lag the first stale Deny by a moment.
        _until(
            lambda: c.status("") == health_pb2.HealthCheckResponse.NOT_SERVING,
            "server NOT_SERVING: no tenant left",
        )
        cli = subprocess.run(
            [*pdp_command(), "check", "--server", srv.address, "--principal", 'User::"bob"']
            + ["--action", 'Action::"edit"', "--resource", 'Document::"doc-1"'],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 1
        assert STALE.match(cli.stdout.splitlines()[0].removeprefix("DENY  (").rstrip(")"))
        srv.wait_for_log("signature.json: does not verify")
        (bundle / "signature.json").write_bytes(good)
        _until(lambda: c.check("default").decision == pb.DECISION_ALLOW, "default recovers")


def test_a_confirm_interval_not_below_the_age_is_a_settings_error() -> None:
    r = subprocess.run(
        [
            *pdp_command(),
            "serve",
            "--max-bundle-age",
            "5",
            "--bundle-confirm-interval-seconds",
            "5",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "invalid setting bundle_confirm_interval_seconds: Value error, must be below" in r.stderr
