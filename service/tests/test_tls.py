"""TLS and mutual TLS on the decision port (issue 10, "Transport"), over real connections to
the real server, with certificates made here (`certs.py`): two CAs, a server certificate for
127.0.0.1/localhost, client certificates (good, from the other CA, expired)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.cli import _parser
from pdp.config import Settings
from pdp.errors import TlsConfigError
from pdp.grpc.tls import check_tls_files

from .certs import Issued, issue, make_ca, server_cert
from .support import ServerProcess, pdp_command, running_server

CHECK = pb.CheckRequest(
    principal=vpb.EntityUid(type="User", id="bob"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc-1"),
)
BASE = ["--no-watch", "--metrics-listen", "off"]
FIELDS = set(Settings.model_fields)


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Issued
    other_ca: Issued
    server: Issued

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def server_flags(self) -> list[str]:
        return [
            "--tls-cert-file",
            str(self.directory / "server.crt"),
            "--tls-key-file",
            str(self.directory / "server.key"),
        ]

    def mtls_flags(self) -> list[str]:
        return [
            *self.server_flags(),
            "--tls-client-ca-file",
            str(self.ca_file),
            "--tls-require-client-cert",
        ]


def make_pki(directory: Path) -> Pki:
    ca, other = make_ca("pdp-test-ca"), make_ca("pdp-other-ca")
    pki = Pki(directory, ca, other, server_cert(ca))
    pki.server.write(directory, "server")
    pki.ca_file.write_bytes(ca.cert_pem)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def decide(channel: grpc.Channel) -> int:
    return pb_grpc.AuthorizationServiceStub(channel).Check(CHECK, timeout=10).decision


def refused(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        decide(channel)
    return info.value


def served_serial(port: int) -> int:
    """The serial of the certificate a new TLS connection is served (not verified here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# ---------------------------------------------------------------------------- TLS ---


def test_tls_call_works_and_plaintext_is_refused(pki: Pki) -> None:
    with running_server([*BASE, *pki.server_flags()]) as srv:
        assert "(tls)" in srv.wait_for_log("listening on")
        with srv.tls_channel(pki.ca.cert_pem) as ch:
            assert decide(ch) == pb.DECISION_ALLOW
        with srv.channel() as ch:  # plaintext to a TLS port: no HTTP/2 conversation
            assert refused(ch).code() == grpc.StatusCode.UNAVAILABLE
        with srv.tls_channel(pki.other_ca.cert_pem) as ch:  # a server the client cannot verify
            assert refused(ch).code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- mTLS ---

GOOD_URI = "spiffe://pdp.test/ns/apps/sa/billing"


@pytest.fixture(scope="module")
def mtls(pki: Pki) -> Iterator[ServerProcess]:
    # One call per client identity, then RESOURCE_EXHAUSTED naming it: how an operator
    # sees which identity a call was counted under.
    limit = ["--rate-limit-per-client", "0.001", "--rate-limit-per-client-burst", "1"]
    with running_server([*BASE, *pki.mtls_flags(), *limit]) as srv:
        yield srv


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(None, id="no-client-cert"),
        pytest.param("other-ca", id="cert-from-another-ca"),
        pytest.param("expired", id="expired-cert"),
        pytest.param("server-cert", id="a-cert-for-serving"),
    ],
)
def test_mtls_refuses_the_handshake(pki: Pki, mtls: ServerProcess, client: str | None) -> None:
    cert: Issued | None = {
        None: None,
        "other-ca": issue(pki.other_ca, "intruder", uris=(GOOD_URI,)),
        "expired": issue(pki.ca, "late", uris=("spiffe://pdp.test/late",), expired=True),
        # Only a certificate for client authentication identifies a client.
        "server-cert": issue(pki.ca, "srv", uris=("spiffe://pdp.test/srv",), server=True),
    }[client]
    with mtls.tls_channel(
        pki.ca.cert_pem, cert.cert_pem if cert else None, cert.key_pem if cert else None
    ) as ch:
        err = refused(ch)
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert "rate limited" not in (err.details() or "")  # refused before any call


@pytest.mark.parametrize(
    ("sans", "identity"),
    [
        ({"uris": (GOOD_URI,), "dns": ("billing.internal",)}, f"uri:{GOOD_URI}"),  # first URI
        ({"dns": ("ledger.internal", "other.internal")}, "dns:ledger.internal"),  # else DNS
        ({}, "cn:cn-only-client"),  # else the subject CN
    ],
    ids=["uri-san", "dns-san", "common-name"],
)
def test_mtls_good_cert_is_served_under_its_identity(
    pki: Pki, mtls: ServerProcess, sans: dict[str, tuple[str, ...]], identity: str
) -> None:
    cn = "cn-only-client" if not sans else "some-cn"
    client = issue(pki.ca, cn, **sans)
    with mtls.tls_channel(pki.ca.cert_pem, client.cert_pem, client.key_pem) as ch:
        assert decide(ch) == pb.DECISION_ALLOW
        err = refused(ch)  # the budget of this identity, and only this one, is spent
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"rate limited (rate_limit_per_client): client {identity}:" in (err.details() or "")


def test_pdp_check_speaks_mtls(pki: Pki, mtls: ServerProcess, tmp_path: Path) -> None:
    client = issue(pki.ca, "cli", uris=("spiffe://pdp.test/cli",))
    cert, key = client.write(tmp_path, "client")
    base = [*pdp_command(), "check", "--server", mtls.address, "--json"]
    request = ["--principal", 'User::"bob"', "--action", 'Action::"read"']
    request += ["--resource", 'Document::"doc-1"']
    r = subprocess.run(
        [*base, *request, "--tls-ca", str(pki.ca_file), "--tls-cert", str(cert)]
        + ["--tls-key", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["decision"] == "ALLOW"
    r = subprocess.run(
        [*base, *request, "--tls-ca", str(pki.ca_file)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "UNAVAILABLE" in r.stderr, r.stderr


# ----------------------------------------------------------------------- rotation ---


def test_rotated_server_cert_reaches_new_connections_and_keeps_old_ones(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    first = pki.server
    with running_server([*BASE, *pki.server_flags()]) as srv:
        old = srv.tls_channel(pki.ca.cert_pem)
        assert decide(old) == pb.DECISION_ALLOW
        assert served_serial(srv.port) == first.serial

        # The new certificate comes from another CA, which the old channel does not trust:
        # the old channel still answering proves its connection was kept, not remade.
        second = server_cert(pki.other_ca)
        second.write(tmp_path, "server")
        assert served_serial(srv.port) == second.serial
        srv.wait_for_log(f"serving certificate serial {second.serial:x}")
        assert decide(old) == pb.DECISION_ALLOW
        with srv.tls_channel(pki.ca.cert_pem) as ch:  # a new connection gets the new cert
            assert refused(ch).code() == grpc.StatusCode.UNAVAILABLE
        with srv.tls_channel(pki.other_ca.cert_pem) as ch:
            assert decide(ch) == pb.DECISION_ALLOW

        # Broken replacements: the last good certificate keeps serving, and it is logged.
        (tmp_path / "server.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
        assert served_serial(srv.port) == second.serial
        srv.wait_for_log("not reloaded.*tls_cert_file")
        third = server_cert(pki.ca)
        (tmp_path / "server.crt").write_bytes(third.cert_pem)  # with the second's key
        assert served_serial(srv.port) == second.serial
        srv.wait_for_log("not reloaded.*tls_key_file.*is not the key")
        (tmp_path / "server.key").unlink()
        assert served_serial(srv.port) == second.serial
        srv.wait_for_log("not reloaded.*tls_key_file: cannot read")
        assert decide(old) == pb.DECISION_ALLOW

        third.write(tmp_path, "server")  # fixed: served from the next handshake on
        assert served_serial(srv.port) == third.serial
        with srv.tls_channel(pki.ca.cert_pem) as ch:
            assert decide(ch) == pb.DECISION_ALLOW

        # An expired certificate is served (the clock may be what is wrong) but said.
        expired = server_cert(pki.ca, expired=True)
        expired.write(tmp_path, "server")
        assert served_serial(srv.port) == expired.serial
        srv.wait_for_log(f"serial {expired.serial:x} is not valid now .*clients will refuse it")
        with srv.tls_channel(pki.ca.cert_pem) as ch:
            assert refused(ch).code() == grpc.StatusCode.UNAVAILABLE
        old.close()


def test_tls_with_workers(pki: Pki) -> None:
    with running_server([*BASE, "--workers", "2", *pki.mtls_flags()]) as srv:
        client = issue(pki.ca, "w", uris=("spiffe://pdp.test/w",))
        for _ in range(4):  # new connections, spread by the kernel over both workers
            with srv.tls_channel(pki.ca.cert_pem, client.cert_pem, client.key_pem) as ch:
                assert decide(ch) == pb.DECISION_ALLOW
            with srv.tls_channel(pki.ca.cert_pem) as ch:
                assert refused(ch).code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------------ start-up ---


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """`pdp serve` expected to refuse to start."""
    return subprocess.run(
        [*pdp_command(), "serve", *BASE, *args], capture_output=True, text=True, timeout=60
    )


def test_plaintext_off_loopback_is_refused_unless_allowed(pki: Pki) -> None:
    for listen in ("0.0.0.0:0", "[::]:0"):
        r = serve("--listen", listen)
        assert r.returncode == 2, r
        assert "invalid setting allow_plaintext: " in r.stderr
        assert f"plaintext gRPC on {listen}, which is not a loopback address" in r.stderr
    with running_server([*BASE, "--listen", "0.0.0.0:0", "--allow-plaintext"]) as srv:
        assert "(plaintext)" in srv.wait_for_log("listening on 0.0.0.0:")
        with srv.channel() as ch:
            assert decide(ch) == pb.DECISION_ALLOW
    with running_server([*BASE, "--listen", "0.0.0.0:0", *pki.server_flags()]) as srv:
        with srv.tls_channel(pki.ca.cert_pem) as ch:
            assert decide(ch) == pb.DECISION_ALLOW
    with running_server([*BASE, "--listen", "localhost:0"]) as srv:  # loopback: the default
        with srv.channel() as ch:
            assert decide(ch) == pb.DECISION_ALLOW


def test_bad_tls_files_and_settings_stop_the_start_naming_the_setting(
    pki: Pki, tmp_path: Path
) -> None:
    d = pki.directory
    other = server_cert(pki.ca)
    other_cert, other_key = other.write(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    cases: list[tuple[list[str], str]] = [
        (["--tls-cert-file", str(d / "server.crt")], "tls_key_file: tls_cert_file and"),
        (
            [
                "--tls-cert-file",
                str(tmp_path / "nope.crt"),
                "--tls-key-file",
                str(d / "server.key"),
            ],
            "tls_cert_file: cannot read",
        ),
        (
            ["--tls-cert-file", str(garbage), "--tls-key-file", str(d / "server.key")],
            "tls_cert_file: " + str(garbage) + ": not a PEM certificate",
        ),
        (
            ["--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(garbage)],
            "tls_key_file: " + str(garbage) + ": not an unencrypted PEM private key",
        ),
        (
            ["--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(other_key)],
            "tls_key_file: " + str(other_key) + " is not the key of the certificate",
        ),
        (
            [*pki.server_flags(), "--tls-require-client-cert"],
            "tls_client_ca_file: required by tls_require_client_cert",
        ),
        (
            [*pki.server_flags(), "--tls-client-ca-file", str(pki.ca_file)],
            "tls_client_ca_file: only used with tls_require_client_cert",
        ),
        (
            [
                *pki.server_flags(),
                "--tls-client-ca-file",
                str(garbage),
                "--tls-require-client-cert",
            ],
            "tls_client_ca_file: " + str(garbage) + ": not a PEM certificate",
        ),
        (
            ["--workers", "2", "--tls-cert-file", str(other_cert), "--tls-key-file", str(garbage)],
            "tls_key_file: ",
        ),
    ]
    # The start-up check itself, on every case (starting a process costs seconds)...
    for args, message in cases:
        flags = vars(_parser().parse_args(["serve", *args]))
        settings = Settings(**{k: v for k, v in flags.items() if k in FIELDS and v is not None})
        with pytest.raises(TlsConfigError) as info:
            check_tls_files(settings)
        assert f"{info.value.setting}: {info.value.reason}".startswith(message), (args, info)
    # ...and how `pdp serve` reports it, once alone and once with --workers.
    for args, message in (cases[4], cases[-1]):
        r = serve(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert f"pdp: invalid setting {message}" in r.stderr, (args, r.stderr)
        assert "listening" not in r.stdout + r.stderr
