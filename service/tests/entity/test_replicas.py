"""Replicas sharing one PostgreSQL store: a write acknowledged by one server is read by
the next check on another (each check reads the store's data version fresh, so no
replica decides on, or serves from its cache, data older than an acknowledged write)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from ..entity_store.postgres_support import throwaway_postgres
from ..support import running_server
from .support import (
    ADMIN_ENV,
    ALLOW,
    DENY,
    check,
    document,
    entity_stub,
    group,
    org,
    ref,
    user,
    write,
    write_bundle,
)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres() as url:
        yield url


def test_a_write_through_one_replica_is_seen_by_the_next_check_on_another(
    tmp_path: Path, postgres_url: str
) -> None:
    tenant = "r" + uuid.uuid4().hex[:12]  # a store of its own, even on a shared server
    bundle = write_bundle(tmp_path / "bundle")
    args = ["--bundle", f"{tenant}={bundle}", "--no-watch"]
    env = {
        "PDP_ENTITY_STORE_URL": postgres_url,
        "PDP_DATA_DIR": str(tmp_path / "data"),
        **ADMIN_ENV,
    }
    with (
        running_server(args, env=env) as a,
        running_server(args, env=env) as b,
        entity_stub(a) as writes,
        b.channel() as to_b,
    ):
        checks = pb_grpc.AuthorizationServiceStub(to_b)
        request = check("carol", "read", "doc1", tenant=tenant)
        assert checks.Check(request).decision == DENY  # nothing stored yet (and now cached)
        version = write(
            writes,
            [
                org("acme"),
                group("readers"),
                user("carol", ref("Group", "readers")),
                user("bob"),
                document("doc1", "bob"),
            ],
            tenant=tenant,
        )
        seen = checks.Check(request)
        assert seen.decision == ALLOW and seen.data_version == version and not seen.cache_hit
        assert checks.Check(request).cache_hit
        # Revoked on A: B's cached Allow is not served.
        later = write(writes, [user("carol")], tenant=tenant)
        revoked = checks.Check(request)
        assert revoked.decision == DENY and revoked.data_version == later
