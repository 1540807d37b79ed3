"""Rate limits over the real server (issue 10, "Limits and abuse"): per tenant and per client,
RESOURCE_EXHAUSTED naming the limit, a batch costing its items, a stream item one each, and
every refusal counted in `pdp_rate_limited_total{tenant,limit}`.

The rates are tiny (one token per 1000 s), so nothing refills while a test runs: the
counts below are exact whatever the machine's speed."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..metrics_support import metrics_port, scrape, value
from ..support import DOCS_BUNDLE, REPO, ServerProcess, running_server

BOB = vpb.EntityUid(type="User", id="bob")
READ = vpb.EntityUid(type="Action", id="read")
DOC = vpb.EntityUid(type="Document", id="doc-1")
BUNDLES = ["--bundle", f"default={REPO / 'policies'}", "--bundle", f"docs={DOCS_BUNDLE}"]
SLOW = "0.001"  # decisions per second: no refill within a test


def check(tenant: str = "") -> pb.CheckRequest:
    return pb.CheckRequest(tenant=tenant, principal=BOB, action=READ, resource=DOC)


def batch(n: int, tenant: str = "") -> pb.CheckBatchRequest:
    return pb.CheckBatchRequest(
        tenant=tenant, principal=BOB, items=[pb.BatchItem(action=READ, resource=DOC)] * n
    )


def limited(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
    return info.value


def rate_limited(srv: ServerProcess, tenant: str, limit: str) -> float:
    return value(scrape(metrics_port(srv)), "pdp_rate_limited_total", tenant=tenant, limit=limit)


@pytest.fixture
def per_tenant() -> Iterator[ServerProcess]:
    args = [*BUNDLES, "--no-watch", "--rate-limit-per-tenant", SLOW]
    with running_server([*args, "--rate-limit-per-tenant-burst", "5"]) as srv:
        yield srv


def test_per_tenant_budget_counts_checks_and_batch_items(per_tenant: ServerProcess) -> None:
    srv = per_tenant
    with srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        stub.Check(check(), timeout=10)
        stub.Check(check(), timeout=10)
        assert len(stub.CheckBatch(batch(3), timeout=10).results) == 3  # 5 of 5 spent
        err = limited(stub.Check, check())
        assert (err.details() or "").startswith(
            "rate limited (rate_limit_per_tenant): tenant 'default': 0.001 decisions/s, burst 5"
        )
        limited(stub.CheckBatch, batch(1))
        # Another tenant has its own budget; a batch above the burst can never pass.
        assert len(stub.CheckBatch(batch(5, "docs"), timeout=10).results) == 5
        err = limited(stub.CheckBatch, batch(6, "docs"))
        assert "6 decisions in one call exceed its burst of 5" in (err.details() or "")
        # Unknown tenants have budgets too (bounded table), counted under `_other`.
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as info:
                stub.Check(check("nobody"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        limited(stub.Check, check("nobody"))
    assert rate_limited(srv, "default", "rate_limit_per_tenant") == 2
    assert rate_limited(srv, "docs", "rate_limit_per_tenant") == 1
    assert rate_limited(srv, "_other", "rate_limit_per_tenant") == 1


def test_a_stream_item_costs_one_and_the_stream_goes_on(per_tenant: ServerProcess) -> None:
    srv = per_tenant
    with srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        stub.Check(check("docs"), timeout=10)  # 1 of 5 spent
        answers = list(stub.CheckStream(iter([check("docs")] * 6 + [check()]), timeout=10))
    assert [a.WhichOneof("outcome") for a in answers] == ["result"] * 4 + ["error"] * 2 + [
        "result"  # the default tenant's budget is untouched
    ]
    for a in answers[4:6]:
        assert a.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert a.error.message.startswith("rate limited (rate_limit_per_tenant): tenant 'docs'")
    assert rate_limited(srv, "docs", "rate_limit_per_tenant") == 2


def test_per_client_budget_spans_tenants_and_names_the_client() -> None:
    args = [*BUNDLES, "--no-watch", "--rate-limit-per-client", SLOW]
    with running_server([*args, "--rate-limit-per-client-burst", "4"]) as srv:
        with srv.channel() as ch, srv.channel() as ch2:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            stub.Check(check(), timeout=10)
            stub.CheckBatch(batch(2, "docs"), timeout=10)
            with pytest.raises(grpc.RpcError):  # an unknown tenant spends the caller's budget
                stub.Check(check("nobody"), timeout=10)
            err = limited(stub.Check, check("docs"))
            # The client is its address without the port: a second connection (another
            # port) from the same host shares the budget.
            assert (err.details() or "").startswith(
                "rate limited (rate_limit_per_client): client ipv4:127.0.0.1:"
            )
            limited(pb_grpc.AuthorizationServiceStub(ch2).Check, check())
            answers = list(stub.CheckStream(iter([check()] * 2), timeout=10))
            assert [a.error.code for a in answers] == [
                grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            ] * 2
        assert rate_limited(srv, "docs", "rate_limit_per_client") == 1
        assert rate_limited(srv, "default", "rate_limit_per_client") == 3


def test_limits_are_off_by_default(server: ServerProcess) -> None:
    with server.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        for _ in range(3):
            assert len(stub.CheckBatch(batch(100), timeout=30).results) == 100
