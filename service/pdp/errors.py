"""Typed errors of the PDP core, each carrying a transport-neutral `Code`.

    PdpError
    ├── InvalidRequest      a request field is malformed or does not match the schema
    │   └── EntityRejected  an entity store write refused (schema, cycle, cap): nothing written
    ├── UnknownTenant       no bundle is loaded for the named tenant
    ├── NotReady            no bundle is active yet, or the server is shutting down
    ├── BundleError         a bundle failed to load; carries every `BundleProblem`
    ├── StoreUnavailable    the entity store cannot be read or written (e.g. its server is down)
    ├── EntityNotFound      EntityService.Get of an entity the store does not hold
    ├── SliceFailed         a decision's entities could not be read consistently (retry)
    ├── TlsConfigError      TLS files or settings that cannot be served (start-up only)
    ├── RateLimited         a tenant's or client's request budget is spent
    ├── DeadlineExceeded    the caller's deadline passed before its turn to decide
    ├── Unauthenticated     an admin call without valid credentials
    ├── PermissionDenied    an admin identity without the role the call needs
    ├── TokenRejected       a bearer token (JWT) did not authenticate a principal
    └── KeySetError         the JWKS (token verification keys) could not be read or used

The gRPC adapter maps `Code` to a status in one table (`pdp.grpc.status`); nothing
below it knows about gRPC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    FAILED_PRECONDITION = "failed_precondition"
    INTERNAL = "internal"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    # admin API (`pdp.admin`) and bearer tokens (`pdp.jwt_identity`)
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"


class PdpError(Exception):
    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(PdpError):
    """`field` names the offending request field, e.g. `items[3].context`."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
        self.index = index  # which input of a batch, where the engine knows it

    def within(self, prefix: str) -> InvalidRequest:
        """The same error, with its field named inside `prefix` (e.g. a batch item)."""
        return InvalidRequest(f"{prefix}.{self.field}", self.reason)


class UnknownTenant(PdpError):
    code = Code.NOT_FOUND

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant: no policy bundle is loaded for tenant {tenant!r}")
        self.tenant = tenant


class NotReady(PdpError):
    code = Code.UNAVAILABLE


@dataclass(frozen=True)
class BundleProblem:
    """One reason a bundle was refused, located as precisely as Cedar allows."""

    file: str
    message: str
    line: int | None = None
    policy_id: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        who = f" [{self.policy_id}]" if self.policy_id else ""
        return f"{where}{who}: {self.message}"


class BundleError(PdpError):
    code = Code.FAILED_PRECONDITION

    def __init__(self, source: str, problems: list[BundleProblem]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"bundle {source} refused ({len(problems)} problem(s)):\n{lines}")
        self.source = source
        self.problems = problems


# The entity store (`pdp.entity_store`).


class EntityRejected(InvalidRequest):
    """A write to the entity store was refused as a whole; nothing of it was written.

    `field` is e.g. `upserts[3]` (or `upserts` for the write as a whole), `uid` the
    entity's (type, id) where known, `reason` why (Cedar's message as Cedar gave it)."""

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        index: int | None = None,
        uid: tuple[str, str] | None = None,
    ) -> None:
        who = f"{uid[0]}::{_quoted(uid[1])}: " if uid is not None else ""
        super().__init__(field, f"{who}{reason}", index)
        self.uid = uid
        self.cedar_reason = reason


def _quoted(eid: str) -> str:
    return '"' + eid.replace("\\", "\\\\").replace('"', '\\"') + '"'


class StoreUnavailable(PdpError):
    """The entity store did not answer (a database down, a disk full): retry later."""

    code = Code.UNAVAILABLE


# The EntityService and the decision path's slices of the store (`pdp.entity_slice`).


class EntityNotFound(PdpError):
    """EntityService.Get of an entity the tenant's store does not hold."""

    code = Code.NOT_FOUND


class SliceFailed(PdpError):
    """The entities of a decision could not be read consistently (writes kept landing
    between the reads of one slice): the check is not decided; retry."""

    code = Code.UNAVAILABLE


# Transport and abuse limits (pdp.grpc.tls, pdp.rate_limit).
class TlsConfigError(PdpError):
    """`setting` names the TLS setting at fault (a file it names, or a combination)."""

    code = Code.FAILED_PRECONDITION

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.reason = message


class RateLimited(PdpError):
    """`limit` is the setting whose budget is spent (`rate_limit_per_tenant` or
    `rate_limit_per_client`)."""

    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class DeadlineExceeded(PdpError):
    code = Code.DEADLINE_EXCEEDED


# The admin API (`pdp.admin`): who may call it.
class Unauthenticated(PdpError):
    """No credentials, or credentials that do not verify (a token whose hash is unknown)."""

    code = Code.UNAUTHENTICATED


class PermissionDenied(PdpError):
    """A verified identity that the allow-list does not grant the call's role."""

    code = Code.PERMISSION_DENIED


# Bearer-token principals (`pdp.jwt_identity`).
class TokenRejected(PdpError):
    """A request's bearer token names no principal: a bad signature, an expired token, a
    wrong issuer or audience, a refused algorithm or key, a missing claim, or claims the
    tenant's bundle does not let a token assert. Never a decision: the caller is not
    authenticated, so nothing was decided."""

    code = Code.UNAUTHENTICATED

    def __init__(self, reason: str) -> None:
        super().__init__(f"token: {reason}")
        self.reason = reason


class KeySetError(PdpError):
    """The JWKS could not be read, or holds no usable key: fatal at start-up; later, the
    refresher logs it and keeps the last good key set. Never reaches a caller."""

    code = Code.UNAVAILABLE
