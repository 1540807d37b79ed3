"""Who is calling an admin method, and may they: the one place admin calls are checked.

Credentials: a verified client certificate (`cert:<id>`) and/or `authorization: Bearer
<token>` metadata, whose SHA-256 is compared in constant time with every configured
`token-sha256:` hash (the token itself is never stored or logged). A token that matches
none is refused outright (UNAUTHENTICATED), even beside a good certificate: a caller
presenting a bad credential is not guessed at. With no credentials at all the call is
UNAUTHENTICATED; an identity the allow-list does not grant the method's role (or does not
know: a certificate from the trusted CA that is not listed) is PERMISSION_DENIED.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pdp.admin.identities import CERT_PREFIX, TOKEN_PREFIX, AdminIdentity, Role
from pdp.errors import PdpError, PermissionDenied, Unauthenticated

ANONYMOUS = "anonymous"
BEARER = "bearer "
MAX_TOKEN_BYTES = 4096

# Method -> role it needs, by service (full proto name). A method missing here is refused
# to everyone: a new admin method is closed until someone decides who may call it.
METHOD_ROLES: dict[str, dict[str, Role]] = {
    "pdp.v1.AdminService": {
        "ReloadTenant": Role.WRITE,
        "GetStatus": Role.READ,
        "SetKillSwitch": Role.WRITE,
        "ClearKillSwitch": Role.WRITE,
        "GetKillSwitch": Role.READ,
    },
    # The entity store's entities are facts decisions trust: writing them is an admin act.
    "pdp.v1.EntityService": {
        "Write": Role.WRITE,
        "Get": Role.READ,
        "List": Role.READ,
        "GetDataVersion": Role.READ,
    },
}


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str  # for the audit log: the allow-list entry, or what was presented
    role: Role | None  # None: authenticated as nobody the allow-list knows
    refused: PdpError | None = None  # set when the credentials themselves were refused


class Authenticator:
    def __init__(self, identities: Sequence[AdminIdentity]) -> None:
        self._certs: dict[str, Role] = {}
        self._tokens: list[tuple[bytes, str, Role]] = []
        for entry in identities:
            if entry.identity.startswith(CERT_PREFIX):
                self._certs[entry.identity] = max(
                    self._certs.get(entry.identity, Role.READ), entry.granted
                )
            else:
                digest = bytes.fromhex(entry.identity.removeprefix(TOKEN_PREFIX))
                self._tokens.append((digest, entry.identity, entry.granted))

    def identify(self, metadata: Iterable[tuple[str, str | bytes]], cert: str | None) -> Caller:
        """The caller of a call with this metadata and verified certificate identity."""
        headers = [v for k, v in metadata if k == "authorization"]
        cert_id = None if cert is None else CERT_PREFIX + cert
        if not headers:
            if cert_id is None:
                return Caller(
                    ANONYMOUS,
                    None,
                    Unauthenticated(
                        "not authenticated: neither a client certificate nor a token "
                        "in the authorization metadata"
                    ),
                )
            return Caller(cert_id, self._certs.get(cert_id))
        token = _bearer(headers)
        if isinstance(token, Unauthenticated):
            return Caller(cert_id or ANONYMOUS, None, token)
        digest = hashlib.sha256(token).digest()
        found: tuple[str, Role] | None = None
        for known, name, role in self._tokens:  # every hash compared: no early exit
            if hmac.compare_digest(digest, known) and (found is None or role > found[1]):
                found = (name, role)  # listed twice: the higher role, as for certificates
        if found is None:
            shown = f"{TOKEN_PREFIX}{digest.hex()[:16]}… (unknown)"
            return Caller(shown, None, Unauthenticated("the presented token is not valid"))
        roles = [found[1]] + ([self._certs[cert_id]] if cert_id in self._certs else [])
        return Caller(found[0] if cert_id is None else f"{found[0]} {cert_id}", max(roles))

    @staticmethod
    def authorize(caller: Caller, needed: Role | None) -> None:
        """Raise the error the call ends with, if it may not proceed."""
        if caller.refused is not None:
            raise caller.refused
        if needed is None:
            raise PermissionDenied("no admin role may call this method")
        if caller.role is None:
            raise PermissionDenied(f"{caller.identity} is not in admin_identities")
        if caller.role < needed:
            raise PermissionDenied(
                f"{caller.identity} has role {caller.role.name.lower()}; "
                f"this call needs {needed.name.lower()}"
            )


def _bearer(headers: Sequence[str | bytes]) -> bytes | Unauthenticated:
    if len(headers) > 1:
        return Unauthenticated("more than one authorization header")
    value = headers[0]
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not text[: len(BEARER)].lower() == BEARER or not text[len(BEARER) :].strip():
        return Unauthenticated(
            # Worded so that the audit log's masking (which hides `Bearer <word>`) keeps it.
            "authorization metadata must be the word Bearer, a space, then the token"
        )
    token = text[len(BEARER) :].strip().encode("utf-8", "surrogateescape")
    if len(token) > MAX_TOKEN_BYTES:
        return Unauthenticated(f"the presented token is longer than {MAX_TOKEN_BYTES} bytes")
    return token


def role_of(
    service: str, method: str, table: Mapping[str, Mapping[str, Role]] = METHOD_ROLES
) -> Role | None:
    return table.get(service, {}).get(method)
