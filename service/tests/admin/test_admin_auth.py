"""Every admin call is authenticated and authorized, and audited, over the real server.

The matrix walks every AdminService and EntityService method (the entity store's writes
are admin calls too) with every kind of caller and expects the
exact status code; the audit log must hold one line per call with the caller's identity
and that code, and never the token itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.v1 import admin_pb2 as apb
from pdp._proto.v1 import entity_pb2 as epb
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.admin.auth import METHOD_ROLES

from ..certs import issue, make_ca, server_cert
from ..support import pdp_command, running_server
from .support import (
    BAD_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    admin_port,
    admin_stub,
    audit_lines,
    bearer,
    scope,
    serve_args,
    token_config,
    token_hash,
    write_config,
)

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

# Each method with a request that succeeds for a caller allowed to make it (harmless: the
# kill switch is set and cleared on a tenant that does not exist).
# (Entity writes delete an entity that was never stored: harmless, yet a real write.)
NOBODY = vpb.EntityUid(type="User", id="matrix-nobody")
CALLS: dict[str, Any] = {
    "AdminService/ReloadTenant": apb.ReloadTenantRequest(tenant="default"),
    "AdminService/GetStatus": apb.GetStatusRequest(),
    "AdminService/SetKillSwitch": apb.SetKillSwitchRequest(
        scope=scope("matrix"), reason="matrix test"
    ),
    "AdminService/ClearKillSwitch": apb.ClearKillSwitchRequest(
        scope=scope("matrix"), reason="matrix test"
    ),
    "AdminService/GetKillSwitch": apb.GetKillSwitchRequest(),
    "EntityService/Write": epb.WriteEntitiesRequest(deletes=[NOBODY]),
    "EntityService/Get": epb.GetEntityRequest(uid=NOBODY),
    "EntityService/List": epb.ListEntitiesRequest(),
    "EntityService/GetDataVersion": epb.GetDataVersionRequest(),
}
READS = {
    "AdminService/GetStatus",
    "AdminService/GetKillSwitch",
    "EntityService/Get",
    "EntityService/List",
    "EntityService/GetDataVersion",
}
# What an allowed call ends with, where not OK (the entity was never stored).
ALLOWED_CODE = {"EntityService/Get": grpc.StatusCode.NOT_FOUND}

# caller -> (metadata, audit identity, expected code for a read method, for a write method)
CALLERS: dict[str, tuple[list[tuple[str, str]], str, grpc.StatusCode, grpc.StatusCode]] = {
    "none": ([], "anonymous", UNAUTHENTICATED, UNAUTHENTICATED),
    "bad token": (bearer(BAD_TOKEN), "token-sha256:", UNAUTHENTICATED, UNAUTHENTICATED),
    "not bearer": (
        [("authorization", f"Basic {WRITE_TOKEN}")],
        "anonymous",
        UNAUTHENTICATED,
        UNAUTHENTICATED,
    ),
    "two tokens": (
        bearer(WRITE_TOKEN) + bearer(WRITE_TOKEN),
        "anonymous",
        UNAUTHENTICATED,
        UNAUTHENTICATED,
    ),
    "read token": (bearer(READ_TOKEN), token_hash(READ_TOKEN), OK, DENIED),
    "write token": (bearer(WRITE_TOKEN), token_hash(WRITE_TOKEN), OK, OK),
}


def call(stubs: dict[str, Any], method: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    service, name = method.split("/")
    try:
        getattr(stubs[service], name)(CALLS[method], metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return OK


def test_the_matrix_is_the_whole_service() -> None:
    """The matrix below covers every method of both services and the role table."""
    names = {
        f"{service}/{m.name}"
        for service, file in (("AdminService", apb), ("EntityService", epb))
        for m in file.DESCRIPTOR.services_by_name[service].methods
    }
    table = {f"{s.split('.')[-1]}/{m}" for s, methods in METHOD_ROLES.items() for m in methods}
    assert set(CALLS) == names == table


def test_every_method_times_every_caller_ends_with_its_exact_code(tmp_path: Path) -> None:
    cfg = token_config(tmp_path)
    with running_server(serve_args(cfg)) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{admin_port(srv)}") as ch:
            stubs = {
                "AdminService": admin_stub(ch),
                "EntityService": epb_grpc.EntityServiceStub(ch),
            }
            expected: list[tuple[str, str, grpc.StatusCode]] = []
            got = []
            for caller, (metadata, _, read_code, write_code) in CALLERS.items():
                for method in CALLS:
                    want = read_code if method in READS else write_code
                    if want == OK:
                        want = ALLOWED_CODE.get(method, OK)
                    expected.append((caller, method, want))
                    got.append((caller, method, call(stubs, method, metadata)))
            assert got == expected
        audit = audit_lines(cfg.audit)
        log = srv.log()
    assert len(audit) == len(expected)  # one line per call, allowed or not
    for line, (caller, method, code) in zip(audit, expected, strict=True):
        assert line["method"] == f"/pdp.v1.{method}"
        assert line["code"] == code.name
        assert line["identity"].startswith(CALLERS[caller][1]), (caller, line)
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert line["time"].endswith("Z")
    set_kill = next(a for a in audit if a["method"].endswith("SetKillSwitch") and a["code"] == "OK")
    assert set_kill["args"] == {"scope": {"tenant": "matrix"}, "reason": "matrix test"}
    text = cfg.audit.read_text()
    for token in (READ_TOKEN, WRITE_TOKEN, BAD_TOKEN):
        assert token not in text and token not in log  # only hashes, never the secret


def test_the_admin_api_is_not_on_the_decision_port_unless_configured(tmp_path: Path) -> None:
    cfg = token_config(tmp_path)
    with running_server(serve_args(cfg)) as srv, srv.channel() as ch:
        with pytest.raises(grpc.RpcError) as err:
            admin_stub(ch).GetStatus(apb.GetStatusRequest(), metadata=bearer(WRITE_TOKEN))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Nor the entity store's writes: the decision port's callers cannot grant roles.
        with pytest.raises(grpc.RpcError) as err:
            epb_grpc.EntityServiceStub(ch).Write(
                CALLS["EntityService/Write"], metadata=bearer(WRITE_TOKEN)
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    (tmp_path / "on-port").mkdir()
    on_port = token_config(tmp_path / "on-port")
    args = serve_args(on_port, "--admin-listen", "off")
    env = {"PDP_ADMIN_ON_DECISION_PORT": "true"}
    with running_server(args, env=env) as srv, srv.channel() as ch:
        stub = admin_stub(ch)
        assert stub.GetStatus(apb.GetStatusRequest(), metadata=bearer(READ_TOKEN)).tenants
        with pytest.raises(grpc.RpcError) as err:  # still behind the guard
            stub.GetStatus(apb.GetStatusRequest())
        assert err.value.code() == UNAUTHENTICATED
        assert srv.wait_for_log("admin API on the decision port")


def serve_fails(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pdp_command(), "serve", "--listen", "127.0.0.1:0", "--no-watch", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_plaintext_admin_listener_off_loopback_is_refused(tmp_path: Path) -> None:
    cfg = token_config(tmp_path)
    done = serve_fails(["--config", str(cfg.path), "--admin-listen", "0.0.0.0:0"])
    assert done.returncode == 1
    assert (
        "admin_listen 0.0.0.0:0 is not a loopback address and TLS is not configured" in done.stderr
    )


@pytest.mark.parametrize(
    ("identity", "problem"),
    [
        (WRITE_TOKEN, "must start with 'cert:' or 'token-sha256:'"),  # a raw token
        ("token-sha256:" + "A" * 64, "64 lowercase hex digits"),
        ("token-sha256:abc", "64 lowercase hex digits"),
        ("cert:", "must be followed by the identity's kind"),
        ("cert:spiffe://test/writer", "must be followed by the identity's kind"),  # untagged
        ("cert:uri:", "must be followed by a certificate identity"),
    ],
)
def test_a_bad_allow_list_entry_is_refused_naming_the_setting(
    tmp_path: Path, identity: str, problem: str
) -> None:
    cfg = tmp_path / "pdp.toml"
    cfg.write_text(f'admin_identities = [{{identity = "{identity}", role = "write"}}]\n')
    done = serve_fails(["--config", str(cfg)])
    assert done.returncode == 2
    assert "invalid setting admin_identities.0.identity" in done.stderr
    assert problem in done.stderr
    assert WRITE_TOKEN not in done.stderr  # a token pasted by mistake is not echoed


def test_a_method_missing_from_the_role_table_is_refused_to_everyone() -> None:
    """The table is the only grant: an in-process server whose table lacks GetStatus."""
    from concurrent import futures

    from pdp.admin.audit import AuditLog
    from pdp.admin.auth import Authenticator
    from pdp.admin.guard import Guard, add_guarded_service
    from pdp.admin.identities import AdminIdentity, Role
    from pdp.admin.servicer import AdminServicer
    from pdp.kill_switch import KillSwitch

    class Target:
        kill_switch = KillSwitch(None)

        def reload_now(self, tenants: set[str] | None) -> None: ...
        def tenants(self) -> dict[str, Any]:
            return {}

        def serving(self, tenant: str | None) -> bool:
            return True

    auth = Authenticator([AdminIdentity(identity=token_hash(WRITE_TOKEN), role="write")])
    roles = {"pdp.v1.AdminService": {"GetKillSwitch": Role.READ}}
    server = grpc.server(futures.ThreadPoolExecutor(2))
    descriptor = apb.DESCRIPTOR.services_by_name["AdminService"]
    add_guarded_service(
        server, descriptor, AdminServicer(Target()), Guard(auth, AuditLog(), roles=roles)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = admin_stub(ch)
            stubs = {"AdminService": stub}
            assert call(stubs, "AdminService/GetKillSwitch", bearer(WRITE_TOKEN)) == OK
            assert call(stubs, "AdminService/GetStatus", bearer(WRITE_TOKEN)) == DENIED
    finally:
        server.stop(0)


# caller over mutual TLS -> (client cert, token, audit identity, read code, write code)
CERT_CALLERS: dict[str, tuple[str, str, str, grpc.StatusCode, grpc.StatusCode]] = {
    "unknown cert": ("stranger", "", "cert:uri:spiffe://test/stranger", DENIED, DENIED),
    "read cert": ("reader", "", "cert:uri:spiffe://test/reader", OK, DENIED),
    "write cert": ("writer", "", "cert:uri:spiffe://test/writer", OK, OK),
    "read cert, bad token": (
        "reader",
        BAD_TOKEN,
        "token-sha256:",
        UNAUTHENTICATED,
        UNAUTHENTICATED,
    ),
    "read cert, write token": ("reader", WRITE_TOKEN, token_hash(WRITE_TOKEN), OK, OK),
    "unknown cert, read token": ("stranger", READ_TOKEN, token_hash(READ_TOKEN), OK, DENIED),
}


def test_over_mutual_tls_certificate_identities_get_their_roles(tmp_path: Path) -> None:
    """The same matrix for callers with a verified client certificate (its URI SAN is the
    identity): unknown certificates are PERMISSION_DENIED, a bad token beside a good
    certificate UNAUTHENTICATED, and a token adds its role to the certificate's."""
    ca = make_ca("admin test CA")
    server_crt, server_key = server_cert(ca).write(tmp_path, "server")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    clients = {
        name: issue(ca, name, uris=(f"spiffe://test/{name}",))
        for name in ("stranger", "reader", "writer")
    }
    cfg = write_config(
        tmp_path,
        [
            ("cert:uri:spiffe://test/reader", "read"),
            ("cert:uri:spiffe://test/writer", "write"),
            (token_hash(READ_TOKEN), "read"),
            (token_hash(WRITE_TOKEN), "write"),
        ],
        f'tls_cert_file = "{server_crt}"\ntls_key_file = "{server_key}"\n'
        f'tls_client_ca_file = "{ca_file}"\ntls_require_client_cert = true\n',
    )
    with running_server(serve_args(cfg)) as srv:
        port = admin_port(srv)
        expected, got = [], []
        for caller, (client, token, _, read_code, write_code) in CERT_CALLERS.items():
            creds = grpc.ssl_channel_credentials(
                ca.cert_pem, clients[client].key_pem, clients[client].cert_pem
            )
            with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
                stubs = {
                    "AdminService": admin_stub(ch),
                    "EntityService": epb_grpc.EntityServiceStub(ch),
                }
                for method in CALLS:
                    want = read_code if method in READS else write_code
                    if want == OK:
                        want = ALLOWED_CODE.get(method, OK)
                    expected.append((caller, method, want))
                    got.append(
                        (caller, method, call(stubs, method, bearer(token) if token else []))
                    )
        assert got == expected
        # Without a client certificate the handshake itself is refused: no call is made.
        with grpc.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca.cert_pem)
        ) as ch:
            assert (
                call(
                    {"AdminService": admin_stub(ch)}, "AdminService/GetStatus", bearer(WRITE_TOKEN)
                )
                == grpc.StatusCode.UNAVAILABLE
            )
    audit = audit_lines(cfg.audit)
    assert len(audit) == len(expected)
    for line, (caller, method, code) in zip(audit, expected, strict=True):
        assert (line["method"], line["code"]) == (f"/pdp.v1.{method}", code.name)
        assert line["identity"].startswith(CERT_CALLERS[caller][2]), (caller, line)
