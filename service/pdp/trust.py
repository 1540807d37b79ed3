"""What a request may tell the PDP: which request entities a bundle accepts.

Request entities are facts the caller asserts for one decision. A fact about an
entity the bundle owns (a role, a membership, an approver) would let the caller
fabricate authority: a made-up `User::"sock"` in `Role::"billing-admin"` approves
its own refund. So, unless the manifest says `"request_entities": "trusted"`
(Cedar's own model), every request entity must be

    a. of a type the manifest declares in `request_entities`,
    b. not of an authoritative type (facts only the bundle defines),
    c. with parents only of the types its declaration allows,
    d. not a base entity, nor an entity the base names (as a parent or in an
       attribute) without defining it: defining one would graft facts onto the
       base graph (alice in `Group::"team"`, the request's `Group::"team"` in admins).

`compile_trust` checks the manifest against the schema once per bundle and
precomputes the base's uids; `check_request_entities` then costs O(request).

A bearer token's principal (`TokenPrincipal`) is different: its facts are asserted by
the token's issuer, whom the server trusts, so the PDP builds that entity itself from
the claims (`token_entities`), under three more rules, whatever the manifest says
(`"trusted"` included):

    e. a principal the bundle owns (its type is authoritative, or it is a base entity or
       named by one) takes its facts from the bundle alone: a token that asserts any
       attribute or parent of it is refused (TokenRejected), and no entity is added;
    f. a parent of an authoritative type is refused: memberships in what the bundle owns
       (roles, organisations) are the bundle's to grant, not a claim's;
    g. no caller entity may be the token's principal: neither add to nor override it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import cedarpy
from pydantic import BaseModel, ConfigDict

from pdp.errors import BundleProblem, InvalidRequest, TokenRejected
from pdp.model import TYPE_NAME, EntityRef, RequestEntities

MANIFEST = "manifest.json"
_UID_SHAPE = 'an entity uid {"type", "id"} or {"__entity": {"type", "id"}}'

Uid = tuple[str, str]


class RequestEntityRule(BaseModel):
    """What a request may say about an entity of one type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestTrust:
    """A bundle's rule for request entities, precomputed. The default refuses them all."""

    trusted: bool = False
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)  # type -> parent types
    authoritative: frozenset[str] = frozenset()
    defined: frozenset[Uid] = frozenset()  # uids the base entities define
    named: frozenset[Uid] = frozenset()  # uids they name (parent, attribute) but do not define
    known: frozenset[Uid] = frozenset()  # defined | named: one lookup per request entity


def compile_trust(
    authoritative_types: tuple[str, ...] | None,
    request_entities: Mapping[str, RequestEntityRule] | None,
    schema: Any,
    base: Any,
    problems: list[BundleProblem],
) -> RequestTrust:
    """The bundle's rule; each manifest problem is appended to `problems`, naming its key.

    `request_entities` None is the manifest's "trusted".
    """
    defined, named, base_types = _base_uids(base)
    if request_entities is None:
        if authoritative_types is not None:
            problems.append(
                BundleProblem(
                    MANIFEST,
                    'authoritative_types: has no effect with "request_entities": "trusted" '
                    "(the caller is trusted with every entity it sends)",
                )
            )
        # The base's uids still decide who owns a token's principal (rule e).
        known = frozenset(defined | named)
        return RequestTrust(True, defined=frozenset(defined), named=frozenset(named), known=known)
    for i, t in enumerate(authoritative_types or ()):
        if not _declared(t, schema):
            problems.append(BundleProblem(MANIFEST, f"authoritative_types[{i}]: {_undeclared(t)}"))
    authoritative = (
        frozenset(base_types) if authoritative_types is None else frozenset(authoritative_types)
    )
    for t, rule in request_entities.items():
        key = f"request_entities.{t}"
        if not _declared(t, schema):
            problems.append(BundleProblem(MANIFEST, f"{key}: {_undeclared(t)}"))
            continue
        if t in authoritative:
            why = (
                "is also listed in authoritative_types"
                if authoritative_types is not None
                else "has entities in entities.json, so it is authoritative by default "
                "(list authoritative_types to let requests supply it)"
            )
            problems.append(
                BundleProblem(MANIFEST, f"{key}: type {t} {why}; a request may never supply it")
            )
        for i, p in enumerate(rule.parents):
            if not _declared(p, schema):
                problems.append(BundleProblem(MANIFEST, f"{key}.parents[{i}]: {_undeclared(p)}"))
            elif not _may_be_parent(t, p, schema):
                problems.append(
                    BundleProblem(
                        MANIFEST,
                        f"{key}.parents[{i}]: the schema does not allow {p} as a parent of {t}",
                    )
                )
    allowed = {t: frozenset(rule.parents) for t, rule in request_entities.items()}
    return RequestTrust(
        False,
        allowed,
        authoritative,
        frozenset(defined),
        frozenset(named),
        frozenset(defined | named),
    )


def check_request_entities(trust: RequestTrust, delta: RequestEntities, index: int) -> None:
    """Raise InvalidRequest (naming `entities[i]...`) unless the bundle accepts every entity."""
    if trust.trusted:
        return
    # A repeated key ({"uid": A, "uid": B}) reads as B here; Cedar refuses every repeated
    # field of an entity, uid or parent, so a request cannot pass this check as B and be
    # evaluated as A (test_trust: test_a_repeated_key_cannot_smuggle_an_entity).
    for i, item in enumerate(request_items(delta, index)):
        # The hot loop: plain tuples, and field names formatted only for an error.
        if type(item) is not dict:
            raise InvalidRequest(f"entities[{i}]", "must be a JSON object (a Cedar entity)", index)
        uid = _uid(item.get("uid")) or _bad_uid(f"entities[{i}].uid", index)
        t = uid[0]
        if t in trust.authoritative or t not in trust.allowed or uid in trust.known:
            _refuse_entity(trust, f"entities[{i}]", uid, index)
        parents = item.get("parents", [])
        if type(parents) is not list:
            raise InvalidRequest(f"entities[{i}].parents", "must be a list of entity uids", index)
        allowed = trust.allowed[t]
        for j, raw in enumerate(parents):
            parent = _uid(raw) or _bad_uid(f"entities[{i}].parents[{j}]", index)
            if parent[0] not in allowed:
                may = ", ".join(sorted(allowed)) or "none"
                raise InvalidRequest(
                    f"entities[{i}].parents[{j}]",
                    f"{_show(parent)}: type {parent[0]} may not be a parent of a request entity "
                    f"of type {uid[0]} (request_entities.{uid[0]}.parents allows: {may})",
                    index,
                )


def request_items(delta: RequestEntities, index: int) -> list[Any]:
    """The request entities as a parsed list, or InvalidRequest naming `entities`."""
    items = delta.items
    if items is None:  # not parsed by the adapter (e.g. in-process callers)
        try:
            items = json.loads(delta.json)
        except ValueError as exc:
            raise InvalidRequest("entities", f"not valid JSON: {exc}", index) from exc
    if not isinstance(items, list):
        raise InvalidRequest("entities", "must be a JSON list of Cedar entities", index)
    return items


def token_entities(trust: RequestTrust, delta: RequestEntities, index: int) -> list[Any]:
    """The request entities (parsed) as Cedar gets them: the caller's, and the entity of the token's
    principal unless the bundle owns it (rules e, f, g of the module's docstring)."""
    token = delta.token
    assert token is not None
    principal = (token.uid.type, token.uid.id)
    items = request_items(delta, index)
    for i, item in enumerate(items):
        if type(item) is dict and _uid(item.get("uid")) == principal:
            raise InvalidRequest(
                f"entities[{i}]",
                f"{token.uid}: is the principal the token names (its facts come from the "
                "token's issuer, not from request entities)",
                index,
            )
    if principal[0] in trust.authoritative or principal in trust.known:
        if token.asserted:
            why = "its type is authoritative" if principal[0] in trust.authoritative else ""
            why = why or "the bundle's base entities define or name it"
            raise TokenRejected(
                f"claims {', '.join(token.asserted)} assert facts about {token.uid}, which "
                f"this bundle owns ({why}): a token may only name such a principal"
            )
        return items
    for claim, parent in token.parents:
        if parent.type in trust.authoritative:
            raise TokenRejected(
                f"claim {claim}: {parent}: type {parent.type} is authoritative in this bundle "
                "(its memberships are the bundle's to grant, not a token's)"
            )
    return [*items, json.loads(token.entity_json())]


def _refuse_entity(trust: RequestTrust, at: str, uid: Uid, index: int) -> NoReturn:
    """Which of rules a, b and d the entity `uid` breaks."""
    if uid[0] in trust.authoritative:
        why = f"type {uid[0]} may not be supplied by a request (the bundle owns it: "
        why += "authoritative_types)"
    elif uid[0] not in trust.allowed:
        why = f"type {uid[0]} may not be supplied by a request (the bundle does not declare "
        why += "it in request_entities)"
    elif uid in trust.defined:
        why = "is a base entity (request entities may not redefine it)"
    else:
        why = "is named by the bundle's base entities without being defined there (a "
        why += "request may not define it)"
    raise InvalidRequest(at, f"{_show(uid)}: {why}", index)


def _uid(raw: Any) -> Uid | None:
    """An entity uid in either of Cedar's JSON forms, else None (then refused: fail closed)."""
    if type(raw) is dict and len(raw) == 1:
        raw = raw.get("__entity")
    if type(raw) is not dict or len(raw) != 2:
        return None
    t, i = raw.get("type"), raw.get("id")
    return (t, i) if type(t) is str and type(i) is str else None


def _bad_uid(at: str, index: int) -> NoReturn:
    raise InvalidRequest(at, f"must be {_UID_SHAPE}", index)


def _show(uid: Uid) -> str:
    return str(EntityRef(*uid))


def _base_uids(base: Any) -> tuple[set[Uid], set[Uid], set[str]]:
    """(defined, named but not defined, types with an entity), from Cedar's rendering."""
    defined: set[Uid] = set()
    mentioned: set[Uid] = set()
    types: set[str] = set()
    for entity in json.loads(str(base)):
        uid = entity["uid"]
        defined.add((uid["type"], uid["id"]))
        types.add(uid["type"])
        for p in entity.get("parents", []):
            mentioned.add((p["type"], p["id"]))
        for v in (entity.get("attrs", {}), entity.get("tags", {})):
            mentioned.update(_entity_refs(v))
    return defined, mentioned - defined, types


def _entity_refs(value: Any) -> Iterator[Uid]:
    """Every `{"__entity": ...}` in a Cedar JSON value (Cedar writes references escaped).

    A record that merely looks like a reference counts too: a spurious name only
    refuses more.
    """
    if isinstance(value, dict):
        ref = value.get("__entity")
        if isinstance(ref, dict) and isinstance(ref.get("type"), str):
            yield (ref["type"], str(ref.get("id")))
        for v in value.values():
            yield from _entity_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _entity_refs(v)


def _undeclared(t: str) -> str:
    return f"entity type {t!r} is not declared in the schema"


def _probe(schema: Any, condition: str) -> bool:
    """Does `permit(...) when { condition }` validate against the schema?"""
    policy = f"permit(principal, action, resource) when {{ {condition} }};"
    try:
        return bool(cedarpy.validate_policies(policy, schema).validation_passed)
    except ValueError:
        return False


def _declared(t: str, schema: Any) -> bool:
    """Cedar's validator knows `t` as an entity type (an action type is not one)."""
    # `t` goes into policy text: only a plain Cedar name may get there.
    return bool(TYPE_NAME.fullmatch(t)) and _probe(schema, f'{t}::"a" == {t}::"a"')


def _may_be_parent(t: str, p: str, schema: Any) -> bool:
    """May an entity of type `t` be in one of type `p`, by the schema?

    Cedar types `T::"a" in P::"b"` as False when it is impossible and does not
    type-check the right of a False `&&`, so the ill-typed `1 + "x"` is reported
    exactly when the schema allows it. The validator cannot tell for t == p (an
    entity is in itself), nor a direct parent from an ancestor; for those the
    answer is yes, and Cedar's schema check of each request entity still refuses
    a parent the schema does not allow.
    """
    return t == p or not _probe(schema, f'{t}::"a" in {p}::"b" && (1 + "x" == 2)')
