"""TLS and mutual TLS on a gRPC port: credentials that follow the files, and peer identity.

`server_credentials(settings)` gives grpcio dynamic SSL credentials: grpcio calls the
fetcher before every TLS handshake, so a new connection sees certificates replaced on disk
while established connections keep the session they negotiated (nothing is dropped). The
fetcher is cheap on the common path (one `stat` per file, no read) and fails safe: files
that are unreadable, malformed or do not match each other are logged once and the last
good configuration goes on serving.

`peer_identity(context)` is the identity of the verified client certificate of a call.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pdp.errors import TlsConfigError

log = logging.getLogger("pdp.tls")


class TlsSettings(Protocol):
    """The settings this module reads (`pdp.config.Settings` has them)."""

    @property
    def tls_cert_file(self) -> Path | None: ...
    @property
    def tls_key_file(self) -> Path | None: ...
    @property
    def tls_client_ca_file(self) -> Path | None: ...
    @property
    def tls_require_client_cert(self) -> bool: ...


@dataclass(frozen=True)
class CertificateSet:
    """The PEM bytes of one consistent configuration, checked with `cryptography`."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes | None
    serial: int  # of the server certificate, for the log
    valid: tuple[datetime.datetime, datetime.datetime]  # its not-before and not-after

    def warn_if_not_valid_now(self) -> None:
        """Served anyway (the clock may be what is wrong), but said: clients will refuse it."""
        start, end = self.valid
        if not start <= datetime.datetime.now(datetime.UTC) <= end:
            log.warning(
                "TLS server certificate serial %x is not valid now (valid from %s to %s): "
                "clients will refuse it",
                self.serial,
                start.isoformat(),
                end.isoformat(),
            )

    def grpc_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert_chain)], root_certificates=self.client_ca
        )


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from exc


def _certificates(setting: str, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsConfigError(setting, f"{path}: not a PEM certificate file ({exc})") from exc
    return certs


def _public_bytes(key: Any) -> bytes:
    return cast(
        bytes,
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def load_certificate_set(
    cert_file: Path, key_file: Path, client_ca_file: Path | None
) -> CertificateSet:
    """Read and check the files: each parses, and the key is the certificate's. Raises
    TlsConfigError naming the setting of the file at fault."""
    chain = _read("tls_cert_file", cert_file)
    key_pem = _read("tls_key_file", key_file)
    ca = None if client_ca_file is None else _read("tls_client_ca_file", client_ca_file)
    leaf = _certificates("tls_cert_file", cert_file, chain)[0]
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: an encrypted key, no password
        raise TlsConfigError(
            "tls_key_file", f"{key_file}: not an unencrypted PEM private key ({exc})"
        ) from exc
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise TlsConfigError(
            "tls_key_file", f"{key_file} is not the key of the certificate in {cert_file}"
        )
    if ca is not None and client_ca_file is not None:
        _certificates("tls_client_ca_file", client_ca_file, ca)
    return CertificateSet(
        chain,
        key_pem,
        ca,
        leaf.serial_number,
        (leaf.not_valid_before_utc, leaf.not_valid_after_utc),
    )


def _signature(paths: Sequence[Path]) -> tuple[tuple[int, int, int, int], ...]:
    """What changes when a file is rewritten or replaced (a rename brings a new inode)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append((-1, -1, -1, -1))  # missing: a signature of its own, retried on change
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ReloadingCertificates:
    """The certificate-configuration fetcher of grpcio's dynamic SSL credentials."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self._files = (cert_file, key_file, client_ca_file)
        self._paths = [p for p in self._files if p is not None]
        self._seen = _signature(self._paths)
        self.current = load_certificate_set(*self._files)  # start-up: errors are fatal
        # grpcio may run handshakes (and so this fetcher) on several threads at once.
        self._lock = threading.Lock()

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self.current.grpc_config()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """None keeps the configuration grpcio has; a new one replaces it for this and
        later handshakes. Never raises: the last good configuration keeps serving."""
        signature = _signature(self._paths)
        if signature == self._seen:
            return None
        with self._lock:
            if signature == self._seen:
                return None
            # Remembered even if the files are broken: they are read again only once they
            # change again, so a bad file costs one log line, not one per handshake.
            self._seen = signature
            try:
                fresh = load_certificate_set(*self._files)
            except TlsConfigError as exc:
                log.error(
                    "TLS certificates not reloaded, still serving certificate serial %x: %s",
                    self.current.serial,
                    exc.message,
                )
                return None
            except Exception:  # whatever else goes wrong, the handshake must go on
                log.exception("TLS certificates not reloaded; still serving the last good ones")
                return None
            if fresh == self.current:
                return None
            log.info(
                "TLS certificates reloaded: serving certificate serial %x (was %x)",
                fresh.serial,
                self.current.serial,
            )
            self.current = fresh
            fresh.warn_if_not_valid_now()
            return fresh.grpc_config()


def check_settings(s: TlsSettings) -> None:
    """The combinations that cannot be served, named by setting."""
    if (s.tls_cert_file is None) != (s.tls_key_file is None):
        missing = "tls_key_file" if s.tls_key_file is None else "tls_cert_file"
        raise TlsConfigError(missing, "tls_cert_file and tls_key_file go together")
    if s.tls_require_client_cert and s.tls_client_ca_file is None:
        raise TlsConfigError(
            "tls_client_ca_file", "required by tls_require_client_cert: the CA to verify with"
        )
    if s.tls_client_ca_file is not None and not s.tls_require_client_cert:
        # grpcio's dynamic credentials either require a verified client certificate or
        # ask for none; a CA that verifies nothing would look like protection.
        raise TlsConfigError(
            "tls_client_ca_file", "only used with tls_require_client_cert = true; set both"
        )
    if s.tls_cert_file is None and s.tls_client_ca_file is not None:
        raise TlsConfigError("tls_cert_file", "mutual TLS needs a server certificate")


def check_tls_files(s: TlsSettings) -> None:
    """What `server_credentials` checks, without making credentials: for a process that
    only starts the `--workers` that serve."""
    check_settings(s)
    if s.tls_cert_file is not None and s.tls_key_file is not None:
        load_certificate_set(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)


def server_credentials(s: TlsSettings) -> grpc.ServerCredentials | None:
    """Credentials for a gRPC port, or None for plaintext (no certificate configured).

    The files are read and checked now (TlsConfigError naming the setting), and again
    whenever they change, before the next handshake."""
    check_settings(s)
    if s.tls_cert_file is None or s.tls_key_file is None:
        return None
    fetcher = ReloadingCertificates(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
    log.info(
        "TLS on: certificate %s (serial %x)%s",
        s.tls_cert_file,
        fetcher.current.serial,
        f", client certificates required (CA {s.tls_client_ca_file})"
        if s.tls_require_client_cert
        else "",
    )
    fetcher.current.warn_if_not_valid_now()
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial(),
        fetcher,  # type: ignore[arg-type]  # grpcio accepts None (keep the current one)
        require_client_authentication=s.tls_require_client_cert,
    )


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The verified client certificate's identity, tagged by the part it came from:
    `uri:<first URI SAN>` (e.g. a SPIFFE id), else `dns:<first DNS SAN>`, else
    `cn:<subject CN>`; None without a verified client certificate (plaintext, or TLS
    without `tls_require_client_cert`). The tag is what keeps a CN (often whatever the
    requester asked for) from passing for a SAN of the same text.

    grpcio fills the auth context only from a certificate the handshake verified against
    `tls_client_ca_file` (a connection with any other certificate never gets this far)."""
    auth = cast("dict[str, list[bytes]]", context.auth_context())  # grpc-stubs says bytes
    if not auth.get("x509_pem_cert"):
        return None
    for prop, kind in (("peer_uri", "uri"), ("peer_dns", "dns"), ("x509_common_name", "cn")):
        values = auth.get(prop)
        if values:
            return f"{kind}:{values[0].decode('utf-8', 'replace')}"
    return None


def client_identity(context: grpc.ServicerContext) -> str:
    """Who a call is from, for per-client limits: the verified certificate's identity,
    else the peer address without its port (`ipv4:10.0.0.7`), as grpcio names it."""
    identity = peer_identity(context)
    if identity is not None:
        return identity
    peer = context.peer()
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer  # e.g. `unix:/path`: no port to strip
