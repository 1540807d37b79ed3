"""Typed errors of the PDP core, each carrying a transport-neutral `Code`.

    PdpError
    ├── InvalidRequest      a request field is malformed or does not match the schema
    ├── UnknownTenant       no bundle is loaded for the named tenant
    ├── NotReady            no bundle is active yet, or the server is shutting down
    ├── BundleError         a bundle failed to load; carries every `BundleProblem`
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
    UNAUTHENTICATED = "unauthenticated"


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
