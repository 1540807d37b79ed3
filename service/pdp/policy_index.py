"""The policy index: which policies' scopes can match a request, so Cedar evaluates only those.

Why leaving a policy out is exact: Cedar evaluates a policy as
`principalScope && (actionScope && (resourceScope && conditions))` (cedar-spec,
`Cedar/Spec/Policy.lean`, `Policy.toExpr`), `&&` short-circuits, and a scope test
(`==`, `in`, `is` against entity literals) never errors (an unknown entity is simply not
`in` anything). So a policy whose scope is false for a request is neither satisfied nor
errored: it adds nothing to the decision, the determining policies or the errors, and a
sub-policy-set of the rest (under the same Cedar ids) decides exactly as the whole set.

Every scope is read from Cedar's own JSON form (`PolicySource.est`; a link is its template's
form with the slot values of links.json), never from policy text. What the index cannot be
sure of keeps the policy: an unrecognised scope form is "matches anything", and a request
whose action the index does not know is decided against the whole set.

Memory: sub-policy-sets are built lazily and kept in a bounded LRU cache keyed by the
exact set of policies they hold. A bundle of 10,000 per-document links has one distinct set
per (user, document, action) share asked about; building them all eagerly would copy the
set tens of thousands of times (~30 KB each in Cedar), while a request stream revisits few,
so the cache holds the hot ones and rebuilds the rest (one link step on a cached base).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

Uid = tuple[str, str]  # (entity type, id), exactly as Cedar's JSON form spells them

# Sub-policy-sets kept: with links ~30 KB each in Cedar (a base's clone plus its links),
# so the cache stays near 30 MB; bases (the static policies, ~90 KB each, parsed) are few:
# about one per (action, principal type, resource type) asked about.
MAX_SUBSETS = 1024
MAX_BASES = 256
MAX_TYPE_PAIRS = 4096  # (action, principal type, resource type) selections kept
# Static policies parsed on the request path for one base, at most: parsing costs ~10x
# evaluating (~0.03 ms against ~0.0025 ms a policy), and which base a request needs is
# the caller's choice (each principal with its own static policy selects its own), so a
# larger base is the bundle's static set parsed at load instead: a superset of the policies
# that can match, as exact (see above) and no dearer than the whole set.
MAX_PARSED = 64


@dataclass(frozen=True, slots=True)
class Scope:
    """What a principal or resource scope can match: an entity, a type, or anything."""

    uid: Uid | None = None  # `== uid`
    type: str | None = None  # `is T` and `is T in ...`

    def admits(self, uid: Uid) -> bool:
        if self.uid is not None:
            return self.uid == uid
        return self.type is None or self.type == uid[0]


ANY = Scope()


@dataclass(frozen=True, slots=True)
class Entry:
    position: int  # its place in the bundle's policy set (sub-sets keep Cedar's order)
    cedar_id: str
    principal: Scope
    resource: Scope
    actions: frozenset[Uid] | None  # the known actions it can match; None: every action


@dataclass(frozen=True, slots=True)
class Member:
    """A policy of the bundle as the index rebuilds sub-sets from it."""

    cedar_id: str
    est_json: str  # the policy's (for a link: its template's) Cedar JSON
    template: str | None = None  # a link's template cedar id
    values: Mapping[str, Mapping[str, str]] | None = None  # a link's slot values


class _Bucket:
    """The policies that can match one action, split so a request looks up, not scans."""

    __slots__ = ("by_principal", "by_resource", "general", "memo")

    def __init__(self) -> None:
        self.general: list[Entry] = []  # neither principal nor resource `==` an entity
        self.by_resource: dict[Uid, list[Entry]] = {}  # resource `==` this entity
        self.by_principal: dict[Uid, list[Entry]] = {}  # principal (not resource) `==` it
        self.memo: dict[tuple[str, str], tuple[int, ...]] = {}

    def add(self, entry: Entry) -> None:
        if entry.resource.uid is not None:
            self.by_resource.setdefault(entry.resource.uid, []).append(entry)
        elif entry.principal.uid is not None:
            self.by_principal.setdefault(entry.principal.uid, []).append(entry)
        else:
            self.general.append(entry)

    def positions(self, principal: Uid, resource: Uid) -> tuple[int, ...]:
        types = (principal[0], resource[0])
        general = self.memo.get(types)
        if general is None:
            general = tuple(
                e.position
                for e in self.general
                if e.principal.admits(principal) and e.resource.admits(resource)
            )
            if len(self.memo) < MAX_TYPE_PAIRS:  # request types are caller input: bounded
                self.memo[types] = general
        extra = [
            e.position for e in self.by_resource.get(resource, ()) if e.principal.admits(principal)
        ]
        extra += [
            e.position for e in self.by_principal.get(principal, ()) if e.resource.admits(resource)
        ]
        return tuple(sorted(general + tuple(extra))) if extra else general


class PolicyIndex:
    """Selects, per request, the sub-policy-set of the policies whose scope can match it."""

    def __init__(
        self,
        members: Sequence[Member],
        entries: Iterable[Entry],
        actions: Iterable[Uid],
        statics: Any = None,
    ) -> None:
        """`statics`: the bundle's static policies and templates, unlinked, as parsed at
        load (None: a sub-set too large to parse here is decided by the whole set)."""
        self._members = members
        self._statics = statics
        self._buckets: dict[Uid, _Bucket] = {a: _Bucket() for a in actions}
        for entry in entries:
            for action in self._buckets if entry.actions is None else entry.actions:
                bucket = self._buckets.get(action)
                if bucket is not None:
                    bucket.add(entry)
        self._subsets: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._bases: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._templates = {m.template: m.est_json for m in members if m.template is not None}
        self._lock = threading.Lock()  # the server decides on many threads
        self.built = 0  # sub-sets built so far (a count for tests and figures)

    @property
    def actions(self) -> frozenset[Uid]:
        return frozenset(self._buckets)

    def positions(self, principal: Uid, action: Uid, resource: Uid) -> tuple[int, ...] | None:
        """The policies (by position) whose scope can match; None: use the whole set."""
        bucket = self._buckets.get(action)
        return None if bucket is None else bucket.positions(principal, resource)

    def select(self, request: Mapping[str, Any]) -> tuple[Any, tuple[int, ...] | None]:
        """(sub-policy-set, its key) for one cedarpy request with {"type","id"} uids;
        (None, None) where the request is decided by the bundle's whole set."""
        p, a, r = request["principal"], request["action"], request["resource"]
        key = self.positions((p["type"], p["id"]), (a["type"], a["id"]), (r["type"], r["id"]))
        if key is None or len(key) == len(self._members):
            return None, None
        with self._lock:
            subset = self._subsets.get(key)
            if subset is not None:
                self._subsets.move_to_end(key)
                return subset, key
        try:
            subset = self._build(key)  # outside the lock: a parse must not stall other threads
        except Exception:  # noqa: BLE001 - Cedar refusing a sub-set: the whole set is as exact
            return None, None
        if subset is None:
            return None, None
        with self._lock:
            self._subsets[key] = subset
            self.built += 1
            while len(self._subsets) > MAX_SUBSETS:
                self._subsets.popitem(last=False)
        return subset, key

    def split(self, batch: Sequence[Mapping[str, Any]]) -> list[tuple[Any, list[int]]]:
        """The batch's requests grouped by the policy set each is decided against
        (None: the whole set)."""
        if len(batch) == 1:
            return [(self.select(batch[0])[0], [0])]
        groups: dict[tuple[int, ...] | None, tuple[Any, list[int]]] = {}
        for i, request in enumerate(batch):
            policy_set, key = self.select(request)
            groups.setdefault(key, (policy_set, []))[1].append(i)
        return list(groups.values())

    def _build(self, key: tuple[int, ...]) -> Any:
        """The sub-set: its static policies' base (parsed once, cached), plus its links.

        Cedar parses a policy's JSON slowly (~0.3 ms a policy here), while linking a
        template in an existing set costs ~0.1 ms and shares the base's policies, so a
        sub-set with links is its base with those links linked, as the bundle's are.
        None: the whole set (too many statics to parse, and no parsed set of them)."""
        statics = tuple(p for p in key if self._members[p].template is None)
        links = [
            {"template_id": m.template, "new_id": m.cedar_id, "values": m.values}
            for p in key
            if (m := self._members[p]).template is not None
        ]
        with self._lock:
            base = self._bases.get(statics)
            if base is not None:
                self._bases.move_to_end(statics)
        if base is None and len(statics) > MAX_PARSED:
            if self._statics is None:
                return None
            base = self._statics
        elif base is None:
            base = self._parse(statics)
            with self._lock:
                self._bases[statics] = base
                while len(self._bases) > MAX_BASES:
                    self._bases.popitem(last=False)
        return base.with_linked_batch(links) if links else base

    def _parse(self, statics: tuple[int, ...]) -> Any:
        """A set of these static policies and every template, under their Cedar ids."""

        def members(items: Iterable[tuple[str, str]]) -> str:
            return ",".join(f"{json.dumps(k)}:{v}" for k, v in items)

        chosen = members((self._members[p].cedar_id, self._members[p].est_json) for p in statics)
        document = (
            f'{{"staticPolicies":{{{chosen}}},"templates":{{{members(self._templates.items())}}},'
            f'"templateLinks":[]}}'
        )
        return cedarpy.PolicySet.from_json_str(document, release_gil=True)


def known_actions(schema: Any) -> dict[Uid, frozenset[Uid]]:
    """Each action the schema declares with all its ancestor groups, as Cedar builds them.

    Cedar adds the schema's action entities (with their groups as parents) to any entity set
    it parses with the schema, and refuses an action entity that disagrees with it; so an
    entity set of nothing but the schema holds exactly the action hierarchy every request
    of the bundle is decided with.
    """
    entities = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    parents: dict[Uid, list[Uid]] = {
        _uid(e["uid"]): [_uid(p) for p in e.get("parents") or []] for e in entities
    }
    out: dict[Uid, frozenset[Uid]] = {}
    for action in parents:
        seen: set[Uid] = set()
        todo = list(parents[action])
        while todo:
            group = todo.pop()
            if group not in seen:
                seen.add(group)
                todo.extend(parents.get(group, ()))
        out[action] = frozenset(seen)
    return out


def build_index(
    members: Sequence[Member], hierarchy: Mapping[Uid, frozenset[Uid]], statics: Any = None
) -> PolicyIndex:
    """The index of `members`: every policy of a set but its templates, in the set's order;
    `statics`: that set's static policies and templates, unlinked (see `PolicyIndex`)."""
    # A template's scope is read once, not once per link (10,000 links share one).
    scopes: dict[str, tuple[Any, frozenset[Uid] | None, Any]] = {}
    entries = []
    for position, m in enumerate(members):
        scope = scopes.get(m.est_json)
        if scope is None:
            est = json.loads(m.est_json)
            actions = _actions(est.get("action"), hierarchy)
            scope = scopes[m.est_json] = (est.get("principal"), actions, est.get("resource"))
        principal, actions, resource = scope
        values = m.values or {}
        entries.append(
            Entry(
                position,
                m.cedar_id,
                _scope(principal, values.get("?principal")),
                _scope(resource, values.get("?resource")),
                actions,
            )
        )
    return PolicyIndex(members, entries, hierarchy, statics)


def _uid(value: Any) -> Uid:
    value = value.get("__entity", value)
    return (value["type"], value["id"])


def _entity(constraint: Mapping[str, Any], slot_value: Mapping[str, str] | None) -> Uid | None:
    """The entity a scope constraint names: its literal, or for a slot the link's value."""
    if "entity" in constraint:
        return _uid(constraint["entity"])
    if "slot" in constraint and slot_value is not None:
        return _uid(slot_value)
    return None


def _scope(constraint: Any, slot_value: Mapping[str, str] | None) -> Scope:
    """Principal/resource scope; anything not understood (or `in`, which can hold entities
    of any type) matches anything: the index only ever keeps a policy it cannot rule out."""
    try:
        op = constraint["op"]
        if op == "==":
            uid = _entity(constraint, slot_value)
            return ANY if uid is None else Scope(uid=uid)
        if op == "is" and isinstance(constraint["entity_type"], str):
            return Scope(type=constraint["entity_type"])
    except (KeyError, TypeError):
        pass
    return ANY


def _actions(constraint: Any, hierarchy: Mapping[Uid, frozenset[Uid]]) -> frozenset[Uid] | None:
    """The known actions an action scope matches (`in` a group: each member); None: all."""
    try:
        op = constraint["op"]
        if op == "==":
            return frozenset([_uid(constraint["entity"])])
        if op == "in":
            named = (
                [_uid(e) for e in constraint["entities"]]
                if "entities" in constraint
                else [_uid(constraint["entity"])]
            )
            groups = set(named)
            return frozenset(
                a for a, ancestors in hierarchy.items() if a in groups or ancestors & groups
            )
    except (KeyError, TypeError, AttributeError):
        pass
    return None
