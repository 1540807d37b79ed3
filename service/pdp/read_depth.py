"""How deep a policy reads into the entity graph, from Cedar's JSON form of it (EST).

A decision is made against a slice of the entities (`pdp.entity_slice`): the request's
entities, everything their attributes reference up to `entity_slice_depth` hops, and the
ancestors of all of those. A policy that reads further than that reads an entity the
slice left out, and Cedar does not fail there in the way one would hope: `e in G` for a
missing `e` is simply false (no error), and so is every membership through it, so a
`forbid` guarded by `principal.manager.manager in Group::"suspended"` would silently not
apply. Such a policy is refused when the bundle loads instead (`too_deep`).

The count, on the policy's expression tree:

* `chain(e)`: attribute accesses (`.a`, `getTag`) chained on `e`, back to its root (a
  variable or an entity literal). Anything else (`if`, sets, records, operators) has the
  largest chain of its operands: where an entity value comes from is not tracked further.
* Reading an entity's data (`e.a`, `e has a`, `e.getTag`, `e.hasTag`, and `e in ...`,
  which reads `e`'s ancestors) needs the entity `e` evaluates to, `chain(e)` hops from a
  root; the slice holds it when `chain(e) <= depth`.

Without types, a record field counts as a hop too (`context.approver.suspended` counts
2, though `approver` is a field of the context record and the entity is a seed of the
slice): an over-approximation, so a policy may be refused that would be decided right,
never the reverse. A deployment raises `entity_slice_depth` to admit it.

Every entity literal in a policy (scope and conditions) must be in every slice:
`read_literals` collects them all, wherever they sit. Tracking only the literals that are
the root of a read chain loses them through `if`, records, sets and operators (`(if c
then context.approver else User::"x") in G`), and a missing entity makes `in`/`has`
silently false, so a `forbid` would not apply. Seeding every literal fails closed; a
policy's literals are few, so the slice grows by at most that many seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Uid = tuple[str, str]

DEFAULT_SLICE_DEPTH = 2  # the setting `entity_slice_depth`'s default

# Nodes whose left operand's entity is read: its attributes, tags or ancestors.
_READS = frozenset({".", "has", "getTag", "hasTag", "in"})
_CHAINS = frozenset({".", "getTag"})  # the value is one more hop from the root


@dataclass(frozen=True)
class Reach:
    """The deepest read of one policy: the hops it needs, and the chain that needs them."""

    depth: int
    chain: str  # e.g. `principal.manager.manager in ...`


@dataclass
class _Walk:
    deepest: Reach
    literals: set[Uid]


def policy_reach(est: Mapping[str, Any]) -> tuple[Reach, frozenset[Uid]]:
    """The policy's deepest read, and every entity literal in its scope and conditions."""
    walk = _Walk(Reach(0, ""), set())
    for part in ("principal", "action", "resource"):
        _scope_literals(est.get(part), walk.literals)
    for condition in est.get("conditions") or ():
        if isinstance(condition, Mapping):
            _chain(condition.get("body"), walk)
    return walk.deepest, frozenset(walk.literals)


def too_deep(est: Mapping[str, Any], depth: int) -> Reach | None:
    """The read that goes past `depth`, or None when the policy stays within it."""
    reach, _ = policy_reach(est)
    return reach if reach.depth > depth else None


def read_literals(ests: Iterable[Mapping[str, Any]]) -> frozenset[Uid]:
    """The entity literals whose data any of the policies reads: seeds of every slice."""
    out: set[Uid] = set()
    for est in ests:
        out |= policy_reach(est)[1]
    return frozenset(out)


def _chain(node: Any, walk: _Walk) -> tuple[int, str]:
    """(chain, rendering) of an expression node, recording reads and entity literals.

    Every operand is walked (each one's reads are counted on its own); the node's chain
    is the largest of them."""
    if isinstance(node, list):
        best: tuple[int, str] = (0, "…")
        for item in node:
            found = _chain(item, walk)
            if found[0] >= best[0]:
                best = found
        return best
    if not isinstance(node, Mapping) or len(node) != 1:
        return (0, "…")
    ((op, arg),) = node.items()
    if op == "Var":
        return (0, str(arg))
    if op == "Value":
        _value_literals(arg, walk.literals)
        uid = _literal(arg)
        return (0, "…") if uid is None else (0, f'{uid[0]}::"{uid[1]}"')
    if op in _READS and isinstance(arg, Mapping):
        hops, shown = _chain(arg.get("left"), walk)
        for key, value in arg.items():
            if key != "left":
                _chain(value, walk)
        what = _shown(op, shown, arg)
        if hops > walk.deepest.depth:
            walk.deepest = Reach(hops, what)
        if op in _CHAINS:
            return (hops + 1, what)
        return (0, what)
    if op == "is" and isinstance(arg, Mapping) and "in" in arg:
        # `e is T in G` reads e's ancestors like `e in G`.
        return _chain({"in": {"left": arg.get("left"), "right": arg.get("in")}}, walk)
    if isinstance(arg, Mapping):
        return _chain(list(arg.values()), walk)
    return _chain(arg, walk)


def _value_literals(value: Any, out: set[Uid]) -> None:
    """Entity references anywhere inside a literal value (sets, records of them too)."""
    uid = _literal(value)
    if uid is not None:
        out.add(uid)
    elif isinstance(value, Mapping):
        for item in value.values():
            _value_literals(item, out)
    elif isinstance(value, list):
        for item in value:
            _value_literals(item, out)


def _scope_literals(scope: Any, out: set[Uid]) -> None:
    """The entities a scope constraint names: `entity`, `entities`, and `is ... in`."""
    if not isinstance(scope, Mapping):
        return
    refs = [scope.get("entity"), *(scope.get("entities") or ())]
    if isinstance(scope.get("in"), Mapping):
        refs.append(scope["in"].get("entity"))
    for ref in refs:
        if isinstance(ref, Mapping) and isinstance(ref.get("type"), str):
            if isinstance(ref.get("id"), str):
                out.add((ref["type"], ref["id"]))


def _shown(op: str, left: str, arg: Mapping[str, Any]) -> str:
    if op == ".":
        return f"{left}.{arg.get('attr')}"
    if op == "has":
        return f"{left} has {arg.get('attr')}"
    if op == "in":
        return f"{left} in …"
    return f"{left}.{op}(…)"


def _literal(value: Any) -> Uid | None:
    if isinstance(value, Mapping) and isinstance(value.get("__entity"), Mapping):
        ref = value["__entity"]
        if isinstance(ref.get("type"), str) and isinstance(ref.get("id"), str):
            return (ref["type"], ref["id"])
    return None
