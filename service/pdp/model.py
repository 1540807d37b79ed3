"""Frozen domain types shared by the engine, the adapters and the CLI.

Context and entities are kept in Cedar's own JSON shapes: that is what cedarpy
consumes, and it lets `context_json` / `entities_json` pass through untouched.
"""

from __future__ import annotations

import enum
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
class RequestEntities:
    """Entities supplied with a request: a Cedar JSON entity list as text.

    Kept as text so that a batch can share one parse among the items that use it.
    `items` is the same list already parsed, where the adapter parsed it (strictly, with
    no repeated keys), so the trust check does not parse it again; it takes no part in
    equality or hashing.
    """

    json: str
    items: list[Any] | None = field(default=None, compare=False, hash=False)


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
    # Why a Deny was forced without evaluating policies (kill switch, stale bundle); empty
    # when the policies decided.
    reason: str = ""
