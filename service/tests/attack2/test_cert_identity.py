"""attack2: an admin certificate identity is one string whatever part of the certificate
it came from (`pdp.grpc.tls.peer_identity`: first URI SAN, else first DNS SAN, else the
subject CN). A certificate from the trusted CA with no SAN and the subject CN
`spiffe://test/writer` is the allow-listed URI identity `cert:spiffe://test/writer`, and
gets its write role: whoever may get a certificate with a CN of their choosing (a CA that
puts a requester's name in the CN) becomes any URI or DNS identity on the list."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import entity_pb2_grpc as epb_grpc

from ..admin.support import admin_port, admin_stub, serve_args, write_config
from ..admin.test_admin_auth import CALLS, DENIED, OK, call
from ..certs import issue, make_ca, server_cert
from ..support import running_server

__all__ = ["CALLS"]


@pytest.mark.parametrize(
    ("listed", "cn", "dns"),
    [
        # The listed identities in the tagged form the fix introduced (`cert:uri:`, ...);
        # an untagged `cert:spiffe://...` is now refused at start-up (test_admin_auth).
        ("cert:uri:spiffe://test/writer", "spiffe://test/writer", ()),  # CN posing as URI SAN
        ("cert:dns:admin.test", "admin.test", ()),  # CN posing as a DNS SAN
        ("cert:uri:spiffe://test/writer", "x", ("spiffe://test/writer",)),  # DNS posing as URI
    ],
)
def test_a_cn_only_certificate_is_not_a_san_identity(
    tmp_path: Path, listed: str, cn: str, dns: tuple[str, ...]
) -> None:
    ca = make_ca("admin test CA")
    server_crt, server_key = server_cert(ca).write(tmp_path, "server")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    poser = issue(ca, cn, dns=dns)
    # The certificate the listed identity names, which must still get in (so the test
    # fails on code that matched nothing, as on code that let the poser in).
    kind, value = listed.removeprefix("cert:").split(":", 1)
    genuine = issue(ca, "genuine", **{"uris" if kind == "uri" else "dns": (value,)})
    cfg = write_config(
        tmp_path,
        [(listed, "write")],
        f'tls_cert_file = "{server_crt}"\ntls_key_file = "{server_key}"\n'
        f'tls_client_ca_file = "{ca_file}"\ntls_require_client_cert = true\n',
    )
    with running_server(serve_args(cfg)) as srv:
        for who, expected in ((genuine, OK), (poser, DENIED)):
            creds = grpc.ssl_channel_credentials(ca.cert_pem, who.key_pem, who.cert_pem)
            with grpc.secure_channel(f"127.0.0.1:{admin_port(srv)}", creds) as ch:
                stubs = {
                    "AdminService": admin_stub(ch),
                    "EntityService": epb_grpc.EntityServiceStub(ch),
                }
                assert call(stubs, "AdminService/GetStatus", []) == expected
