"""Frozen domain types shared by the engine, the adapters and the CLI.

Context and entities are kept in Cedar's own JSON shapes: that is what cedarpy
consumes, and it lets `context_json` / `entities_json` pass through untouched.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TENANT = "default"
# What a tenant may be called: names reach logs, status and health, so no odd characters.
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

CedarJson = Any  # a value in Cedar's JSON value format

# Cedar entity type names: identifiers joined by `::` (namespaces).
TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True, slots=True)
class EntityRef:
    type: str
    id: str

    def as_cedar(self) -> dict[str, str]:
        # cedarpy takes {"type","id"} dicts ~4x faster than `Type::"id"` text, and
        # they carry any id (fuzzer-made ids are not valid in Cedar's text syntax).
        return {"type": self.type, "id": self.id}

    def __str__(self) -> str:
        escaped = self.id.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.type}::"{escaped}"'


@dataclass(frozen=True, slots=True)
class TokenPrincipal:
    """The principal a validated bearer token names, with the facts its issuer asserts.

    Built by `pdp.jwt_identity` from the token's claims, never from the caller's entities;
    whether a bundle lets those facts in is `pdp.trust`'s rule. `attrs` is Cedar JSON text
    (keys sorted); `parents` pairs each parent with the claim that named it; `key` is one
    canonical text of all of it, for the decision cache.
    """

    uid: EntityRef
    attrs: str = "{}"
    parents: tuple[tuple[str, EntityRef], ...] = ()
    attr_claims: tuple[str, ...] = ()  # the claims that supplied `attrs`
    key: str = ""

    @property
    def asserted(self) -> tuple[str, ...]:
        """Every claim that asserted a fact (an attribute or a parent)."""
        return tuple(sorted({*self.attr_claims, *(c for c, _ in self.parents)}))

    def entity_json(self) -> str:
        parents = ",".join(json.dumps(p.as_cedar()) for _, p in self.parents)
        uid = json.dumps(self.uid.as_cedar())
        return f'{{"uid":{uid},"attrs":{self.attrs},"parents":[{parents}]}}'


@dataclass(frozen=True, slots=True)
class RequestEntities:
    """Entities supplied with a request: a Cedar JSON entity list as text.

    Kept as text so that a batch can share one parse among the items that use it.
    `items` is the same list already parsed, where the adapter parsed it (strictly, with
    no repeated keys), so the trust check does not parse it again; it takes no part in
    equality or hashing. `token` is the principal a bearer token named: its entity is
    built by the PDP and added beside the caller's (`json` never holds it).
    """

    json: str
    items: list[Any] | None = field(default=None, compare=False, hash=False)
    token: TokenPrincipal | None = None


@dataclass(frozen=True, slots=True)
class CheckInput:
    principal: EntityRef
    action: EntityRef
    resource: EntityRef
    # A Cedar JSON record, as a mapping or as the JSON text of one (passed through).
    context: Mapping[str, CedarJson] | str = field(default_factory=dict)
    entities: RequestEntities | None = None


class Decision(enum.Enum):
    DENY = "deny"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class PolicyError:
    policy_id: str
    message: str


@dataclass(frozen=True, slots=True)
class BundleVersion:
    name: str
    version: str
    digest: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    decision: Decision
    determining_policies: Sequence[str]
    errors: Sequence[PolicyError]
    version: BundleVersion
    decision_id: str
    cache_hit: bool = False  # answered from the decision cache
    data_version: int = 0  # the entity store data version the decision read
    # Why a Deny was forced without evaluating policies (kill switch, stale bundle); empty
    # when the policies decided.
    reason: str = ""
