"""The admin allow-list as configured: identities with a role, never a secret.

An identity is `cert:<kind>:<id>` (a verified client certificate's identity,
`pdp.grpc.tls.peer_identity`: `uri:` its first URI SAN, else `dns:` its first DNS SAN,
else `cn:` its subject CN) or `token-sha256:<hex>` (the SHA-256 of a bearer
token, so that the token itself is in no config file or log: `pdp admin hash-token`).
"""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

TOKEN_PREFIX = "token-sha256:"
CERT_PREFIX = "cert:"
CERT_KINDS = ("uri:", "dns:", "cn:")  # the tags of `pdp.grpc.tls.peer_identity`
_TOKEN_HASH = re.compile(r"[0-9a-f]{64}")


class Role(enum.IntEnum):
    """Ordered: a role grants every call of the roles below it."""

    READ = 1
    WRITE = 2


class AdminIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: str
    """`cert:uri:<id>`, `cert:dns:<id>`, `cert:cn:<id>` or `token-sha256:<64 lowercase hex>`."""

    role: Literal["read", "write"]

    @field_validator("identity")
    @classmethod
    def _check_identity(cls, v: str) -> str:
        if v.startswith(TOKEN_PREFIX):
            if not _TOKEN_HASH.fullmatch(v.removeprefix(TOKEN_PREFIX)):
                raise ValueError(
                    f"{TOKEN_PREFIX} must be followed by 64 lowercase hex digits "
                    "(the token's SHA-256: `pdp admin hash-token`), never the token"
                )
        elif v.startswith(CERT_PREFIX):
            rest = v.removeprefix(CERT_PREFIX)
            if not rest.startswith(CERT_KINDS):
                # An untagged name would match no certificate: said, not silently useless.
                raise ValueError(
                    f"{CERT_PREFIX} must be followed by the identity's kind, one of "
                    f"{', '.join(CERT_KINDS)} (e.g. cert:uri:spiffe://example.org/app)"
                )
            rest = rest.partition(":")[2]
            if not rest or not rest.isprintable() or len(rest) > 1024:
                raise ValueError(f"{CERT_PREFIX} must be followed by a certificate identity")
        else:
            raise ValueError(f"must start with {CERT_PREFIX!r} or {TOKEN_PREFIX!r}")
        return v

    @property
    def granted(self) -> Role:
        return Role.WRITE if self.role == "write" else Role.READ
