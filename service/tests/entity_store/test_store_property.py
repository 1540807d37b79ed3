"""For random entity graphs written in random order, with re-parenting and deletes, the
closure table equals a transitive closure computed here from the parents, and `slice`
returns exactly the slice computed here from the definition (api.py)."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.entity_store.api import EntityStore, EntityUid
from pdp.errors import EntityRejected

from .conftest import open_backend

NODES: list[EntityUid] = [(t, str(i)) for t in ("A", "B") for i in range(5)]
node = st.sampled_from(NODES)


def ref_json(uid: EntityUid) -> dict[str, Any]:
    return {"__entity": {"type": uid[0], "id": uid[1]}}


@st.composite
def attr_value(draw: st.DrawFn) -> tuple[Any, set[EntityUid]]:
    """An attribute value and the uids it references: plain, in a record, in a set."""
    targets = draw(st.lists(node, min_size=1, max_size=3))
    shape = draw(st.sampled_from(["ref", "record", "set", "ref", "none"]))
    if shape == "none":
        return 7, set()
    if shape == "ref":
        return ref_json(targets[0]), {targets[0]}
    if shape == "record":
        return {"inner": {"who": ref_json(targets[0]), "n": 1}}, {targets[0]}
    return [ref_json(t) for t in targets], set(targets)


@st.composite
def upsert(
    draw: st.DrawFn,
) -> tuple[EntityUid, tuple[EntityUid, ...], dict[str, Any], set[EntityUid]]:
    uid = draw(node)
    parents = tuple(draw(st.lists(node, max_size=2, unique=True)))
    attrs: dict[str, Any] = {}
    refs: set[EntityUid] = set()
    for name in draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, unique=True)):
        value, found = draw(attr_value())
        attrs[name] = value
        refs |= found
    return uid, parents, attrs, refs


@st.composite
def write(draw: st.DrawFn) -> tuple[list[Any], list[EntityUid]]:
    ups = draw(st.lists(upsert(), max_size=6, unique_by=lambda u: u[0]))
    taken = {u[0] for u in ups}
    deletes = draw(st.lists(node.filter(lambda n: n not in taken), max_size=2, unique=True))
    return ups, deletes


@dataclass
class Model:
    parents: dict[EntityUid, tuple[EntityUid, ...]] = field(default_factory=dict)
    refs: dict[EntityUid, set[EntityUid]] = field(default_factory=dict)
    deep: bool = False

    def ancestors(self, uid: EntityUid) -> set[EntityUid]:
        out: set[EntityUid] = set()
        todo = list(self.parents.get(uid, ()))
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(self.parents.get(p, ()))
        return out

    def acyclic(self) -> bool:
        return all(u not in self.ancestors(u) for u in self.parents)

    def slice(self, uids: list[EntityUid], depth: int) -> tuple[set[EntityUid], bool]:
        reached = set(uids)
        frontier = set(uids)
        self.deep = False  # a stored entity first reached at hop 2 or more
        for hop in range(1, depth + 1):
            frontier = {t for s in frontier for t in self.refs.get(s, ())} - reached
            reached |= frontier
            self.deep |= hop >= 2 and any(t in self.parents for t in frontier)
        wanted = reached | {a for u in reached for a in self.ancestors(u)}
        beyond = {t for s in frontier for t in self.refs.get(s, ())} - wanted
        return {u for u in wanted if u in self.parents}, any(t in self.parents for t in beyond)


def shared_ancestor(model: Model) -> bool:
    """Some entity reaches one ancestor by two paths (a diamond)."""
    for u in model.parents:
        ps = model.parents[u]
        seen: set[EntityUid] = set()
        for p in ps:
            reach = {p} | model.ancestors(p)
            if seen & reach:
                return True
            seen |= reach
    return False


def run(store: EntityStore, writes: list[Any], probes: list[Any], cases: Counter[str]) -> None:
    tenant = f"p-{uuid.uuid4().hex[:12]}"
    model = Model()
    for ups, deletes in writes:
        trial = Model(dict(model.parents), dict(model.refs))
        for uid, parents, _, refs in ups:
            if uid in trial.parents and trial.parents[uid] != parents:
                cases["re-parent"] += 1
            trial.parents[uid], trial.refs[uid] = parents, refs
        for uid in deletes:
            if uid in trial.parents and any(uid in ps for ps in trial.parents.values()):
                cases["delete-with-children"] += 1
            trial.parents.pop(uid, None)
            trial.refs.pop(uid, None)
        body = [
            {
                "uid": {"type": u[0], "id": u[1]},
                "attrs": a,
                "parents": [{"type": p[0], "id": p[1]} for p in ps],
            }
            for u, ps, a, _ in ups
        ]
        if trial.acyclic():
            store.write(tenant, body, deletes)
            model = trial
        else:
            cases["cycle-refused"] += 1
            with pytest.raises(EntityRejected, match="cycle"):
                store.write(tenant, body, deletes)
        if shared_ancestor(model):
            cases["shared-ancestor"] += 1
    for uid in NODES:
        assert store.ancestors(tenant, uid) == model.ancestors(uid), uid
        if len(model.ancestors(uid)) >= 3:
            cases["ancestors>=3"] += 1
    for uids, depth in probes:
        got = store.slice(tenant, uids, depth)
        want, truncated = model.slice(uids, depth)
        assert {e.uid for e in got.entities} == want, (uids, depth)
        assert got.truncated == truncated, (uids, depth)
        for e in got.entities:
            assert set(e.parents) == set(model.parents[e.uid])
        cases["truncated" if truncated else "complete"] += 1
        if model.deep:
            cases["deep-slice"] += 1


@pytest.mark.parametrize("examples", [200])
def test_closure_and_slice_equal_the_reference(
    request: pytest.FixtureRequest, backend: str, tmp_path: Any, examples: int
) -> None:
    store = open_backend(request, backend, tmp_path)
    cases: Counter[str] = Counter()

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        writes=st.lists(write(), min_size=1, max_size=8),
        probes=st.lists(
            st.tuples(
                st.lists(node, min_size=1, max_size=2, unique=True),
                st.sampled_from([0, 1, 2, 3, 3]),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def check(writes: list[Any], probes: list[Any]) -> None:
        run(store, writes, probes, cases)

    try:
        check()
    finally:
        store.close()
    print(f"\n{backend}: interesting cases reached: {dict(sorted(cases.items()))}")
    for case in (
        "re-parent",
        "delete-with-children",
        "cycle-refused",
        "shared-ancestor",
        "ancestors>=3",
        "truncated",
        "deep-slice",
    ):
        assert cases[case] >= 1, (case, cases)  # typically 4-300 each (printed with -s)
