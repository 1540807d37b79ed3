"""attack2: the per-tenant rate-limit table keys buckets by the request's tenant *before*
the tenant is capped (`PdpServicer._check` calls `_admit(request.tenant, ...)`, the
MAX_TENANT_BYTES check runs later in `convert`). Each refused request leaves its tenant
name, up to max_message_bytes (4 MiB), in a table of rate_limit_max_keys (10,000)
entries: ~40 GB reachable with unauthenticated calls that each end INVALID_ARGUMENT.

Measured: the server's RSS after 120 calls with 1 MiB tenant names; a table holding only
capped names (MAX_TENANT_BYTES) grows by well under a megabyte, the current code by
~120 MB."""

from __future__ import annotations

import os

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from ..support import REPO, running_server

CALLS = 120
NAME_BYTES = 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_oversized_tenant_names_do_not_accumulate_in_the_rate_limit_table() -> None:
    args = ["--bundle", f"default={REPO / 'policies'}", "--no-watch"]
    args += ["--rate-limit-per-tenant", "1000", "--rate-limit-per-tenant-burst", "1000"]
    with running_server(args) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        base = pb.CheckRequest(
            principal=vpb.EntityUid(type="User", id="bob"),
            action=vpb.EntityUid(type="Action", id="read"),
            resource=vpb.EntityUid(type="Document", id="doc-1"),
        )
        stub.Check(base, timeout=10)
        before = rss(srv.proc.pid)
        codes = set()
        for i in range(CALLS):
            request = pb.CheckRequest()
            request.CopyFrom(base)
            request.tenant = f"{i:06d}" + "t" * NAME_BYTES
            try:
                stub.Check(request, timeout=10)
            except grpc.RpcError as exc:
                codes.add(exc.code())
        grown = rss(srv.proc.pid) - before
        assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
        assert grown < CALLS * NAME_BYTES // 4, f"server RSS grew {grown / 1e6:.0f} MB"
        assert os.path.exists(f"/proc/{srv.proc.pid}")
