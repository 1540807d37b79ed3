"""The kill switch over the real server: set by the admin API or by the file flag, it
denies every decision in its scope before the decision cache, says why, survives a
restart, and shows in health, metrics and decision logs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp._proto.v1 import admin_pb2 as apb
from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from ..metrics_support import metrics_port, scrape, value
from ..support import ServerProcess, running_server
from .support import (
    WRITE_TOKEN,
    AdminConfig,
    admin_port,
    admin_stub,
    bearer,
    bob_edits,
    eventually,
    scope,
    serve_args,
    token_config,
    token_hash,
)

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
AUTH = bearer(WRITE_TOKEN)


class Admin:
    def __init__(self, srv: ServerProcess) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{admin_port(srv)}")
        self.stub = admin_stub(self.channel)

    def kill(self, reason: str, tenant: str = "", action: str = "") -> apb.KillSwitchResponse:
        request = apb.SetKillSwitchRequest(scope=scope(tenant, action), reason=reason)
        return self.stub.SetKillSwitch(request, metadata=AUTH, timeout=10)

    def unkill(self, tenant: str = "", action: str = "") -> apb.KillSwitchResponse:
        request = apb.ClearKillSwitchRequest(scope=scope(tenant, action), reason="test done")
        return self.stub.ClearKillSwitch(request, metadata=AUTH, timeout=10)


@pytest.fixture
def cfg(tmp_path: Path) -> AdminConfig:
    return token_config(tmp_path)


@pytest.fixture
def served(
    cfg: AdminConfig,
) -> Iterator[tuple[ServerProcess, Admin, pb_grpc.AuthorizationServiceStub]]:
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        admin = Admin(srv)
        yield srv, admin, pb_grpc.AuthorizationServiceStub(ch)
        admin.channel.close()


def check(
    stub: pb_grpc.AuthorizationServiceStub, request: pb.CheckRequest | None = None
) -> pb.CheckResponse:
    return stub.Check(request or bob_edits(), timeout=10)


def health(channel: grpc.Channel, name: str) -> int:
    request = health_pb2.HealthCheckRequest(service=name)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status  # type: ignore[no-any-return]


def test_set_by_the_admin_api_it_denies_with_its_reason_and_survives_a_restart(
    cfg: AdminConfig,
) -> None:
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert check(stub).decision == ALLOW
        kills = Admin(srv).kill("incident 42", tenant="default").kill_switches
        assert [(k.scope.tenant, k.reason, k.source) for k in kills] == [
            ("default", "incident 42", "admin")
        ]
        assert kills[0].set_by == token_hash(WRITE_TOKEN)  # who set it
        denied = check(stub)
        assert (denied.decision, denied.reason) == (DENY, "kill switch: incident 42")
        assert list(denied.determining_policies) == [] and denied.policy_version.bundle == "default"
    state = json.loads((cfg.data_dir / "kill_switch.json").read_text())
    assert [k["reason"] for k in state["kill_switches"]] == ["incident 42"]
    # No temp file left beside it (the entity store's SQLite files share the directory).
    assert sorted(p.name for p in cfg.data_dir.iterdir() if "entities.sqlite3" not in p.name) == [
        "kill_switch.json"
    ]
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        # The first call after the restart, before any admin call: still killed.
        assert check(stub).reason == "kill switch: incident 42"
        admin = Admin(srv)
        assert list(admin.unkill(tenant="default").kill_switches) == []
        allowed = check(stub)
        assert (allowed.decision, allowed.reason) == (ALLOW, "")
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        assert check(pb_grpc.AuthorizationServiceStub(ch)).decision == ALLOW  # cleared for good


def test_a_cached_allow_is_not_served_while_killed(
    served: tuple[ServerProcess, Admin, pb_grpc.AuthorizationServiceStub],
) -> None:
    _, admin, stub = served
    check(stub)
    assert check(stub).cache_hit  # the Allow is in the decision cache
    assert check(stub).cache_hit  # and under the request's exact bytes
    admin.kill("cache test")
    denied = check(stub)
    assert (denied.decision, denied.cache_hit, denied.reason) == (
        DENY,
        False,
        "kill switch: cache test",
    )
    admin.unkill()
    assert check(stub).decision == ALLOW


def test_batch_and_stream_are_denied_too_and_an_action_scope_kills_only_that_action(
    served: tuple[ServerProcess, Admin, pb_grpc.AuthorizationServiceStub],
) -> None:
    _, admin, stub = served
    edit, read = bob_edits(), bob_edits(action="read")
    batch = pb.CheckBatchRequest(
        principal=edit.principal,
        items=[pb.BatchItem(action=r.action, resource=r.resource) for r in (edit, read, edit)],
    )

    def both() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        results = stub.CheckBatch(batch, timeout=10).results
        streamed = [r.result for r in stub.CheckStream(iter([edit, read, edit]), timeout=10)]
        return [(r.decision, r.reason) for r in results], [(r.decision, r.reason) for r in streamed]

    assert both() == ([(ALLOW, "")] * 3, [(ALLOW, "")] * 3)
    admin.kill("edits frozen", tenant="default", action="edit")
    frozen = [(DENY, "kill switch: edits frozen"), (ALLOW, ""), (DENY, "kill switch: edits frozen")]
    assert both() == (frozen, frozen)
    admin.kill("all frozen")
    everything = [(DENY, "kill switch: all frozen")] * 3
    assert both() == (everything, everything)
    admin.unkill()
    assert both() == (frozen, frozen)  # the narrower switch is still set
    admin.unkill(tenant="default", action="edit")
    assert both() == ([(ALLOW, "")] * 3, [(ALLOW, "")] * 3)


def test_a_bad_admin_request_is_refused_naming_the_field_and_changes_nothing(
    served: tuple[ServerProcess, Admin, pb_grpc.AuthorizationServiceStub],
) -> None:
    _, admin, stub = served
    bad = [
        (apb.SetKillSwitchRequest(scope=scope(), reason=""), "reason: required"),
        (apb.SetKillSwitchRequest(scope=scope(), reason="two\nlines"), "reason: must be at most"),
        (
            apb.SetKillSwitchRequest(scope=scope("", "edit"), reason="x"),
            "scope.tenant: required with an action",
        ),
        (apb.SetKillSwitchRequest(scope=scope("bad name"), reason="x"), "scope.tenant: must match"),
    ]
    for request, message in bad:
        with pytest.raises(grpc.RpcError) as err:
            admin.stub.SetKillSwitch(request, metadata=AUTH, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(message), err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        admin.stub.ReloadTenant(apb.ReloadTenantRequest(tenant="nobody"), metadata=AUTH, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        list(admin.stub.GetKillSwitch(apb.GetKillSwitchRequest(), metadata=AUTH).kill_switches)
        == []
    )
    assert check(stub).decision == ALLOW


def test_health_follows_the_kill_switch(
    served: tuple[ServerProcess, Admin, pb_grpc.AuthorizationServiceStub],
) -> None:
    srv, admin, _ = served
    with srv.channel() as ch:
        assert (health(ch, ""), health(ch, "default")) == (SERVING, SERVING)
        admin.kill("tenant down", tenant="default", action="edit")
        assert (health(ch, ""), health(ch, "default")) == (SERVING, SERVING)  # one action only
        admin.kill("tenant down", tenant="default")
        assert (health(ch, ""), health(ch, "default")) == (SERVING, NOT_SERVING)
        admin.kill("everything down")
        assert (health(ch, ""), health(ch, "pdp.v1.AuthorizationService")) == (
            NOT_SERVING,
            NOT_SERVING,
        )
        status = admin.stub.GetStatus(apb.GetStatusRequest(), metadata=AUTH)
        assert status.health == apb.HEALTH_NOT_SERVING
        assert [(t.tenant, t.health, t.kill_switch.reason) for t in status.tenants] == [
            ("default", apb.HEALTH_NOT_SERVING, "everything down")
        ]
        assert len(status.kill_switches) == 3
        admin.unkill()
        admin.unkill(tenant="default")
        assert (health(ch, ""), health(ch, "default")) == (SERVING, SERVING)


def test_metrics_and_decision_logs_show_it(cfg: AdminConfig) -> None:
    with running_server([*serve_args(cfg), "--decision-log", "stdout"]) as srv, srv.channel() as ch:
        stub, admin = pb_grpc.AuthorizationServiceStub(ch), Admin(srv)
        port = metrics_port(srv)
        # The incident note quotes a card number: the records mask it.
        admin.kill("metrics test, card 4111 1111 1111 1111", tenant="default")
        for _ in range(3):
            check(stub)
        families = scrape(port)
        assert value(families, "pdp_kill_switch_active", scope="tenant=default") == 1
        assert value(families, "pdp_decisions_total", tenant="default", decision="deny") == 3
        admin.unkill(tenant="default")
        check(stub)
        families = scrape(port)
        assert value(families, "pdp_kill_switch_active", scope="tenant=default") == 0
        assert value(families, "pdp_decisions_total", tenant="default", decision="allow") == 1

        def records() -> list[dict[str, object]]:
            return [json.loads(x) for x in list(srv.lines) if x.startswith('{"v":1')]

        eventually(lambda: len(records()) == 4)
    assert [r["reason"] for r in records()] == [
        "kill switch: metrics test, card <masked:pan>"
    ] * 3 + [""]
    assert [r["masked"] for r in records()] == [1, 1, 1, 0]


def write_flag(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_the_file_flag_alone_kills_while_it_exists(tmp_path: Path) -> None:
    flag = tmp_path / "KILL"
    cfg = token_config(tmp_path)
    args = [*serve_args(cfg), "--admin-listen", "off", "--kill-switch-file", str(flag)]
    with running_server(args) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert check(stub).decision == ALLOW

        def reason() -> str:
            return check(stub).reason

        cases = [
            (
                json.dumps({"scope": {"tenant": "default"}, "reason": "flag on"}),
                "kill switch: flag on",
            ),
            ("", f"kill switch: kill_switch_file {flag} exists"),  # touch FILE: everything
            ("{not json", f"kill switch: kill_switch_file {flag} unusable: "),
            (
                json.dumps([{"reason": "a list, the whole PDP"}]),
                "kill switch: a list, the whole PDP",
            ),
        ]
        delays = []
        for text, expected in cases:
            write_flag(flag, text)
            delays.append(eventually(lambda e=expected: reason().startswith(e)))  # type: ignore[misc]
            assert check(stub).decision == DENY
        flag.unlink()
        delays.append(eventually(lambda: check(stub).decision == ALLOW))
        assert check(stub).reason == ""
    assert max(delays) < 5  # polled every 100 ms: a broken watch would never apply it


def test_an_unreadable_state_file_denies_everything_naming_it(cfg: AdminConfig) -> None:
    cfg.data_dir.mkdir()
    state = cfg.data_dir / "kill_switch.json"
    state.write_text('{"version": 1, "kill_switches": [{"reason": 7}]}')
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        denied = check(pb_grpc.AuthorizationServiceStub(ch))
        assert denied.decision == DENY
        assert denied.reason.startswith(f"kill switch: state file {state} unusable: [0].reason")
        # An admin write replaces the state it could not read: the operator's decision.
        admin = Admin(srv)
        assert list(admin.unkill().kill_switches) == []
        assert check(pb_grpc.AuthorizationServiceStub(ch)).decision == ALLOW


def test_with_workers_worker_0_serves_admin_and_every_worker_applies_it(cfg: AdminConfig) -> None:
    with running_server([*serve_args(cfg), "--workers", "2"]) as srv:
        admin = Admin(srv)
        assert srv.log().count("admin API on") == 1  # worker 0 only

        def all_fresh_connections(decision: int, n: int = 12) -> bool:
            # Each channel is a new connection, spread by the kernel over both workers.
            for _ in range(n):
                with grpc.insecure_channel(
                    srv.address, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as ch:
                    if check(pb_grpc.AuthorizationServiceStub(ch)).decision != decision:
                        return False
            return True

        eventually(lambda: srv.log().count("listening on") == 2, timeout=30)  # both bound
        pids: set[str] = set()

        def both_workers_answer() -> bool:
            with grpc.insecure_channel(
                srv.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as ch:
                pids.add(check(pb_grpc.AuthorizationServiceStub(ch)).decision_id.split("-")[0])
            return len(pids) == 2  # decision id prefixes are per process

        eventually(both_workers_answer, timeout=30)
        admin.kill("workers", tenant="default")
        applied = eventually(lambda: all_fresh_connections(DENY))
        reloaded = admin.stub.ReloadTenant(apb.ReloadTenantRequest(tenant="default"), metadata=AUTH)
        assert [(t.tenant, t.ok) for t in reloaded.tenants] == [("default", True)]
        admin.unkill(tenant="default")
        eventually(lambda: all_fresh_connections(ALLOW))
        admin.channel.close()
    assert applied < 5
    assert os.path.exists(cfg.data_dir / "kill_switch.json")


def test_a_data_dir_that_cannot_hold_the_state_denies_all_and_refuses_to_set(
    tmp_path: Path,
) -> None:
    """The state cannot be read (so it is unknown: fail closed) nor written (so a switch
    set now would not survive a restart: the call fails, UNAVAILABLE)."""
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("a file where data_dir should be")
    cfg = token_config(tmp_path)
    with (
        running_server(
            [*serve_args(cfg), "--data-dir", str(not_a_dir)],
            # The entity store elsewhere: in an unusable data_dir it would refuse to start.
            env={"PDP_ENTITY_STORE_URL": f"sqlite:///{tmp_path / 'entities.sqlite3'}"},
        ) as srv,
        srv.channel() as ch,
    ):
        stub, admin = pb_grpc.AuthorizationServiceStub(ch), Admin(srv)
        denied = check(stub)
        assert denied.decision == DENY
        assert denied.reason.startswith(
            f"kill switch: state file {not_a_dir}/kill_switch.json unusable"
        )
        with pytest.raises(grpc.RpcError) as err:
            admin.kill("cannot persist", tenant="default")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot persist the kill switch state" in (err.value.details() or "")
        kills = admin.stub.GetKillSwitch(apb.GetKillSwitchRequest(), metadata=AUTH).kill_switches
        assert [(k.scope.tenant, k.source) for k in kills] == [("", "admin")]  # unchanged
        admin.channel.close()


def test_a_switch_on_an_action_group_covers_its_members(cfg: AdminConfig) -> None:
    """`edit` is in the group `write` (policies/schema.cedarschema): killing `write` kills
    `edit`, as a policy `action in Action::"write"` covers it; `read` (not in it) stays."""
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        reading = bob_edits(action="read")
        before = check(stub, reading).decision
        assert check(stub).decision == ALLOW
        Admin(srv).kill("writes frozen", tenant="default", action="write")
        denied = check(stub)
        assert (denied.decision, denied.reason) == (DENY, "kill switch: writes frozen")
        assert check(stub, reading).decision == before and not check(stub, reading).reason
