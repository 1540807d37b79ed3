"""A seeded random walk: the decision cache never answers other than a fresh evaluation.

Interleaves checks and batches (contexts typed or as JSON text, keys reordered,
whitespace varied, request entities likewise), bypasses, TTL expiry, reloads that change
nothing, and bundle changes: a real bundle directory rewritten and reloaded through the
real `Reloader`. A second engine sharing the cache keeps deciding on the previous
bundle, as a call in flight during a swap does, so entries of an old digest sit beside
the new ones. Single checks go first through the exact-bytes lookup, as the servicer's
do. Every answer is compared with `evaluate` on the bundle it was decided on.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pdp.bundle import Bundle
from pdp.decision_cache import DecisionCache, kept_request
from pdp.engine import Engine, evaluate
from pdp.errors import InvalidRequest
from pdp.model import CheckInput, CheckResult, EntityRef, RequestEntities
from pdp.reloader import Reloader
from pdp.tenants import BundleSources

from .support import DOCS_BUNDLE

STEPS = 12_000
TENANTS = ("live", "steady")  # "live" is rewritten; "steady" never changes
PRINCIPALS = ("alice", "bob", "newcomer", "ghost")
RESOURCES = ("doc1", "doc2", "doc9")
ACTIONS = ("read", "edit")
CONTEXTS: list[dict[str, Any]] = [
    {},
    {"mfa": True},
    {"mfa": False},
    {"mfa": True, "score": {"__extn": {"fn": "decimal", "arg": "0.9"}}},
    {"mfa": True, "score": {"__extn": {"fn": "decimal", "arg": "0.1"}}},
    {"mfa": True, "tags": ["a", "b"], "at": {"__extn": {"fn": "datetime", "arg": "2026-12-01"}}},
    {"mfa": True, "tags": ["b", "a"]},
]
REFUSED_CONTEXTS: list[dict[str, Any]] = [
    {"mfa": "yes"},  # refused by the schema: never cached
    {"mfa": True, "unknown": 1},  # not in the schema
]


def newcomer(org: str, level: int, groups: list[str]) -> dict[str, Any]:
    return {
        "uid": {"type": "User", "id": "newcomer"},
        "attrs": {"org": {"__entity": {"type": "Org", "id": org}}, "level": level},
        "parents": [{"type": "Group", "id": g} for g in groups],
    }


GROUP = {"uid": {"type": "Group", "id": "eng"}, "attrs": {}, "parents": []}
ENTITY_SETS: list[list[dict[str, Any]] | None] = [
    None,
    [newcomer("acme", 1, [])],
    [newcomer("acme", 9, [])],
    [newcomer("globex", 9, [])],
    [GROUP, newcomer("acme", 7, ["eng"])],
]
FORGED = [{"uid": {"type": "Document", "id": "forged"}, "attrs": {}, "parents": []}]

# Versions of the live bundle: a lockdown forbid, alice's level, the manifest version.
LOCKDOWN = '@id("lockdown")\nforbid(principal, action == Action::"edit", resource);\n'


def write_version(bundle: Path, rng: random.Random) -> None:
    (bundle / "rules" / "lockdown.cedar").write_text(LOCKDOWN if rng.random() < 0.5 else "// -\n")
    entities = json.loads((DOCS_BUNDLE / "entities.json").read_text())
    for e in entities:
        if e["uid"] == {"type": "User", "id": "alice"}:
            e["attrs"]["level"] = rng.choice([1, 9])
    (bundle / "entities.json").write_text(json.dumps(entities))
    manifest = json.loads((DOCS_BUNDLE / "manifest.json").read_text())
    manifest["version"] = f"1.0.{rng.randrange(3)}"
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def spelled(value: Any, rng: random.Random) -> str:
    """`value` as JSON text with keys shuffled, random spacing and some escaped strings."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        sep = rng.choice([":", ": ", " :\t"])
        return "{" + ", ".join(spelled(k, rng) + sep + spelled(value[k], rng) for k in keys) + "}"
    if isinstance(value, list):
        return "[" + rng.choice([",", ", ", " ,\n"]).join(spelled(v, rng) for v in value) + "]"
    if isinstance(value, str) and value and rng.random() < 0.3:
        return '"' + "".join(f"\\u{ord(c):04x}" for c in value) + '"'
    return json.dumps(value)


def request(rng: random.Random) -> CheckInput:
    # About one request in 25 is refused (schema or trust), so most batches decide.
    ctx = rng.choice(REFUSED_CONTEXTS if rng.random() < 0.02 else CONTEXTS)
    context: Any = ctx if rng.random() < 0.4 else spelled(ctx, rng)
    ents = FORGED if rng.random() < 0.02 else rng.choice(ENTITY_SETS)
    return CheckInput(
        EntityRef("User", rng.choice(PRINCIPALS)),
        EntityRef("Action", rng.choice(ACTIONS)),
        EntityRef("Document", rng.choice(RESOURCES)),
        context,
        None if ents is None else RequestEntities(spelled(ents, rng)),
    )


def answer(result: CheckResult) -> tuple[Any, ...]:
    # Cedar reports determining policies and errors in no stable order: compared as sets.
    return (
        result.decision,
        sorted(result.determining_policies),
        sorted((e.policy_id, e.message) for e in result.errors),
        result.version,
    )


def exact(tenant: str, req: CheckInput) -> bytes:
    """Bytes that determine the request exactly, as a request's wire bytes do (the engine
    treats them as opaque): the spelled texts stay as spelled, so different spellings
    of one request are different bytes, as on the wire."""
    return repr((tenant, req)).encode()


def decide(
    engine: Engine, tenant: str, batch: list[CheckInput], bypass: bool, seen: Counter[str]
) -> Any:
    try:
        if len(batch) == 1:
            data = exact(tenant, batch[0])
            hit = None if bypass else engine.cached_exact(tenant, data)
            if hit is not None:  # as the servicer does before converting the request
                assert hit[0] == kept_request(batch[0])  # the same request, as texts
                seen["exact hits"] += 1
                return [hit[1]]
            return [engine.check(tenant, batch[0], bypass_cache=bypass, exact=data)]
        return engine.check_batch(tenant, batch, bypass_cache=bypass)
    except InvalidRequest as exc:
        return ("invalid", exc.index, exc.message)


def fresh(bundle: Bundle, batch: list[CheckInput]) -> Any:
    try:
        return evaluate(bundle, batch)
    except InvalidRequest as exc:
        return ("invalid", exc.index, exc.message)


@pytest.mark.slow
def test_cached_answers_equal_fresh_evaluations(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    paths = {t: tmp_path / t for t in TENANTS}
    for path in paths.values():
        shutil.copytree(DOCS_BUNDLE, path)
    write_version(paths["live"], rng)
    now = [0.0]
    cache = DecisionCache(2_000, 1 << 21, ttl_seconds=2_000, clock=lambda: now[0])
    engine = Engine(cache=cache)
    reloader = Reloader(engine, BundleSources(dict(paths), None))
    reloader.load_all()
    laggard: Engine | None = None  # the previous snapshot, still deciding, same cache
    seen = Counter[str]()
    ids: set[str] = set()
    last: tuple[str, list[CheckInput]] | None = None
    for step in range(STEPS):
        now[0] = float(step)
        roll = rng.random()
        if roll < 0.01:
            assert engine.snapshot is not None
            before = engine.snapshot
            write_version(paths["live"], rng)
            reloader.reload()
            assert engine.snapshot is not None
            changed = engine.snapshot.bundles["live"] is not before.bundles["live"]
            seen["bundle changes" if changed else "reloads unchanged"] += 1
            laggard = Engine(before, cache=cache)
            continue
        if roll < 0.015:
            reloader.reload()  # nothing changed: the same bundles, entries kept
            seen["reloads unchanged"] += 1
            continue
        who = laggard if laggard is not None and rng.random() < 0.1 else engine
        tenant = rng.choice(TENANTS)
        batch = [request(rng) for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 6))]
        if len(batch) == 1 and last is not None and rng.random() < 0.3:
            tenant, batch = last  # a client repeating a request: the same bytes again
        if len(batch) == 1:
            last = (tenant, batch)
        bypass = rng.random() < 0.05
        got = decide(who, tenant, batch, bypass, seen)
        want = fresh(who.bundle(tenant), batch)
        if isinstance(want, tuple) or isinstance(got, tuple):
            assert got == want, (step, batch)
            seen["invalid"] += 1
            continue
        assert [answer(r) for r in got] == [answer(r) for r in want], (step, batch)
        for r in got:
            assert r.decision_id not in ids
            ids.add(r.decision_id)
            seen["hits" if r.cache_hit else "misses"] += 1
            seen["bypassed"] += bypass
            assert not (bypass and r.cache_hit)
        seen["laggard"] += who is laggard
    seen["expirations"], seen["evictions"], seen["dropped"] = (
        cache.expirations,
        cache.evictions,
        cache.dropped,
    )
    print(dict(seen))
    # The walk reached every case it is about.
    assert seen["hits"] >= 3_000 and seen["misses"] >= 1_000 and seen["exact hits"] >= 500
    assert seen["bundle changes"] >= 50 and seen["reloads unchanged"] >= 40
    assert seen["invalid"] >= 300 and seen["bypassed"] >= 300 and seen["laggard"] >= 300
    assert seen["expirations"] >= 10 and seen["evictions"] >= 100 and seen["dropped"] >= 1_000
