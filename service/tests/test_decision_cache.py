"""The decision cache in the engine: what a hostile caller could try, bounds, TTL, reload.

Every test compares a cached engine's answer with a fresh evaluation (`evaluate`, which
never sees the cache) of the same request against the same bundle.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from pdp.bundle import Bundle, load_bundle
from pdp.config import default_bundle
from pdp.decision_cache import DecisionCache, decision_key
from pdp.engine import Engine, Snapshot, evaluate
from pdp.errors import InvalidRequest
from pdp.grpc import convert
from pdp.model import (
    BundleVersion,
    CheckInput,
    CheckResult,
    Decision,
    EntityRef,
    PolicyError,
    RequestEntities,
)

from .support import DOCS_BUNDLE


@pytest.fixture(scope="module")
def docs() -> Bundle:
    return load_bundle(DOCS_BUNDLE)


@pytest.fixture(scope="module")
def default() -> Bundle:
    return load_bundle(default_bundle())


def cached_engine(bundle: Bundle, **kw: Any) -> Engine:
    cache = DecisionCache(
        kw.pop("max_entries", 10_000), kw.pop("max_bytes", 1 << 26), kw.pop("ttl", 60.0), **kw
    )
    return Engine(Snapshot.of({"default": bundle}), cache=cache)


def cache_of(engine: Engine) -> DecisionCache:
    assert engine.cache is not None
    return engine.cache


def req(principal: str, action: str = "read", resource: str = "doc1", **kw: Any) -> CheckInput:
    return CheckInput(
        EntityRef("User", principal),
        EntityRef("Action", action),
        EntityRef("Document", resource),
        **kw,
    )


def same(a: CheckResult, b: CheckResult) -> bool:
    """The same answer. Cedar reports determining policies and errors in no stable order
    (two fresh evaluations may differ), so they are compared as sets."""
    return (a.decision, a.version) == (b.decision, b.version) and (
        sorted(a.determining_policies),
        sorted((e.policy_id, e.message) for e in a.errors),
    ) == (sorted(b.determining_policies), sorted((e.policy_id, e.message) for e in b.errors))


def outcome(engine: Engine, request: CheckInput) -> CheckResult | str:
    try:
        return engine.check("", request)
    except InvalidRequest as exc:
        return f"InvalidRequest: {exc.message}"


def fresh(bundle: Bundle, request: CheckInput) -> CheckResult | str:
    try:
        return evaluate(bundle, [request])[0]
    except InvalidRequest as exc:
        return f"InvalidRequest: {exc.message}"


def agrees(engine: Engine, bundle: Bundle, request: CheckInput) -> CheckResult | str:
    got, want = outcome(engine, request), fresh(bundle, request)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        assert same(got, want), (got, want)
    return got


def test_a_hit_has_the_stored_answer_a_fresh_id_and_says_so(docs: Bundle) -> None:
    engine = cached_engine(docs)
    first = engine.check("", req("alice", "edit", context={"mfa": True}))
    second = engine.check("", req("alice", "edit", context='{ "mfa" : true }'))
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert same(first, second) and first.decision_id != second.decision_id
    assert (cache_of(engine).hits, cache_of(engine).misses, cache_of(engine).entries) == (1, 1, 1)


def test_errors_attributed_to_a_policy_are_cached(docs: Bundle) -> None:
    engine = cached_engine(docs)
    request = req("alice")  # `overflow` errors for any level > 0
    first, second = engine.check("", request), engine.check("", request)
    assert second.cache_hit and [e.policy_id for e in second.errors] == ["overflow"]
    assert same(first, second)


# A refund of `amount` by a stepped-up billing admin, as JSON text, the number as written.
REFUND = (
    '{"mfa": true, "device_trusted": true, "session_age": "20m", "idle": "2m", '
    '"currency": "EUR", "customer": {"__entity": {"type": "Customer", "id": "cust-1"}}, '
    '"amount_cents": %s}'
)


def refund(amount: str) -> CheckInput:
    return CheckInput(
        EntityRef("User", "dave"),
        EntityRef("Action", "refund"),
        EntityRef("Invoice", "inv-1001"),
        REFUND % amount,
    )


@pytest.mark.parametrize(
    ("warm", "probe"),
    [
        ("0", "-0"),  # Python reads both as 0; Cedar decides 0 and refuses -0
        ("5000", "5000.0"),  # 1 vs 1.0: Cedar has no floats
        ("5000", "5e3"),
        ("9223372036854775807", "9223372036854775808"),  # past i64: refused
        ("-9223372036854775808", "-9223372036854775809"),
    ],
)
def test_numbers_that_python_reads_alike_are_not_one_key(
    default: Bundle, warm: str, probe: str
) -> None:
    engine = cached_engine(default)
    assert not isinstance(agrees(engine, default, refund(warm)), str)  # a decision, cached
    for _ in range(2):
        assert isinstance(agrees(engine, default, refund(probe)), str)  # refused every time
    assert cache_of(engine).entries == 1 and cache_of(engine).hits == 0


def test_a_number_is_one_key_however_it_is_spaced(default: Bundle) -> None:
    engine = cached_engine(default)
    agrees(engine, default, refund("5000"))
    spaced = CheckInput(
        EntityRef("User", "dave"),
        EntityRef("Action", "refund"),
        EntityRef("Invoice", "inv-1001"),
        "\n" + (REFUND % " 5000 ").replace(": ", ":\t"),
    )
    hit = agrees(engine, default, spaced)
    assert isinstance(hit, CheckResult) and hit.cache_hit


def test_a_repeated_key_is_never_cached(default: Bundle) -> None:
    # The adapter refuses such JSON; an in-process caller may still send it.
    repeated = refund('150000, "amount_cents": 50')
    engine = cached_engine(default)
    for _ in range(2):
        got = agrees(engine, default, repeated)
        assert isinstance(got, CheckResult) and not got.cache_hit
    assert cache_of(engine).entries == 0
    assert decision_key("default", default, repeated) is None


def test_unicode_is_not_normalised(docs: Bundle) -> None:
    # Cedar compares ids by code points: "café" (NFC) and "café" (NFD) are two users.
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    org = {"type": "Org", "id": "acme"}
    user = {"uid": {"type": "User", "id": nfc}, "attrs": {"org": org, "level": 0}, "parents": []}
    ents = RequestEntities(json.dumps([user], ensure_ascii=False))
    engine = cached_engine(docs)
    allowed = agrees(engine, docs, req(nfc, entities=ents))
    other = agrees(engine, docs, req(nfd, entities=ents))
    assert isinstance(allowed, CheckResult) and isinstance(other, CheckResult)
    assert allowed.decision != other.decision and not other.cache_hit
    # The same string spelled with an escape is the same string: one key.
    escaped = RequestEntities(json.dumps([user]))  # "caf\u00e9"
    assert escaped.json != ents.json
    hit = agrees(engine, docs, req(nfc, entities=escaped))
    assert isinstance(hit, CheckResult) and hit.cache_hit


def test_context_values_are_compared_exactly(docs: Bundle) -> None:
    engine = cached_engine(docs)
    base = agrees(engine, docs, req("alice", "edit", context='{"mfa": true, "tags": ["a"]}'))
    for variant in (
        '{"mfa": false, "tags": ["a"]}',
        '{"mfa": true, "tags": ["A"]}',
        '{"mfa": true, "tags": ["a", "a"]}',  # a set in Cedar, but not the same JSON
        '{"mfa": true}',
    ):
        got = agrees(engine, docs, req("alice", "edit", context=variant))
        assert isinstance(got, CheckResult) and not got.cache_hit, variant
    reordered = agrees(engine, docs, req("alice", "edit", context={"tags": ["a"], "mfa": True}))
    assert isinstance(base, CheckResult) and isinstance(reordered, CheckResult)
    assert reordered.cache_hit


def test_an_invalid_request_is_refused_every_time(docs: Bundle) -> None:
    engine = cached_engine(docs)
    bad = [
        req("alice", context='{"mfa": "yes"}'),  # the schema says Bool
        req("alice", entities=RequestEntities('[{"uid": {"type": "Document", "id": "x"}}]')),
        req("alice", entities=RequestEntities('[{"uid": {"type": "User", "id": "bob"}}]')),
    ]
    for _ in range(3):
        for request in bad:
            assert isinstance(agrees(engine, docs, request), str)
    assert cache_of(engine).entries == 0 and cache_of(engine).hits == 0


def test_a_batch_names_the_same_bad_item_warm_or_cold(docs: Bundle) -> None:
    x = RequestEntities(
        json.dumps([{"uid": {"type": "Group", "id": "g"}, "attrs": {}, "parents": []}])
    )
    y = RequestEntities('[{"uid": {"type": "Document", "id": "forged"}}]')  # refused
    batch = [
        req("alice", entities=x),
        req("alice", entities=y),
        req("alice", entities=x, context='{"mfa": 1}'),
    ]

    def error(engine: Engine) -> tuple[int | None, str]:
        with pytest.raises(InvalidRequest) as exc:
            engine.check_batch("", batch)
        return exc.value.index, exc.value.message

    cold = error(cached_engine(docs))
    warm_engine = cached_engine(docs)
    warm_engine.check("", batch[0])  # item 0 now answers from the cache
    assert error(warm_engine) == cold
    assert cold[0] == 1  # the first bad item, however the items group


def test_bypass_reads_nothing_and_refreshes_the_entry(docs: Bundle) -> None:
    engine = cached_engine(docs)
    engine.check("", req("alice"))
    bypassed = engine.check("", req("alice"), bypass_cache=True)
    assert not bypassed.cache_hit and cache_of(engine).hits == 0
    assert cache_of(engine).entries == 1
    batch = engine.check_batch("", [req("alice"), req("bob")], bypass_cache=True)
    assert [r.cache_hit for r in batch] == [False, False] and cache_of(engine).hits == 0
    assert engine.check("", req("bob")).cache_hit


def test_unique_keys_cannot_exhaust_memory(docs: Bundle) -> None:
    engine = cached_engine(docs, max_entries=100, max_bytes=1 << 30)
    for i in range(2_000):
        engine.check("", req("alice", context={"tags": [f"t{i}"]}))
    cache = cache_of(engine)
    assert cache.entries == 100 and cache.evictions == 1_900
    # By bytes: contexts of ~16 KiB, at most 256 KiB held whatever the entry count.
    engine = cached_engine(docs, max_entries=1_000_000, max_bytes=256 * 1024)
    for i in range(200):
        engine.check("", req("alice", context={"tags": [f"{i}-" + "x" * 16_000]}))
    cache = cache_of(engine)
    assert cache.bytes <= 256 * 1024 and 10 <= cache.entries <= 16
    # An entry larger than the whole budget is not stored (and evicts nothing).
    engine.check("", req("alice", context={"tags": ["y" * 300_000]}))
    assert cache.bytes <= 256 * 1024 and cache.entries >= 10


def test_least_recently_used_goes_first(docs: Bundle) -> None:
    engine = cached_engine(docs, max_entries=2)
    a, b, c = req("alice"), req("bob"), req("mallory")
    engine.check("", a)
    engine.check("", b)
    assert engine.check("", a).cache_hit  # a is now the most recent
    engine.check("", c)  # evicts b
    assert engine.check("", a).cache_hit and not engine.check("", b).cache_hit


def test_an_entry_lives_its_ttl(docs: Bundle) -> None:
    now = [0.0]
    engine = cached_engine(docs, ttl=10.0, clock=lambda: now[0])
    engine.check("", req("alice"))
    now[0] = 9.9
    assert engine.check("", req("alice")).cache_hit
    now[0] = 10.0
    assert not engine.check("", req("alice")).cache_hit
    assert cache_of(engine).expirations == 1 and cache_of(engine).entries == 1


def test_an_unattributed_error_is_not_stored(docs: Bundle) -> None:
    cache = DecisionCache(10, 1 << 20, 60)
    [result] = evaluate(docs, [req("alice")])
    key = decision_key("default", docs, req("alice"))
    assert key is not None
    fault = PolicyError("", "evaluation failed: boom")
    cache.put(key, CheckResult(result.decision, [], [fault], result.version, "id"))
    assert cache.entries == 0
    cache.put(key, result)
    assert cache.entries == 1


def test_a_swap_drops_the_changed_tenants_entries(docs: Bundle, default: Bundle) -> None:
    cache = DecisionCache(100, 1 << 20, 60)
    engine = Engine(Snapshot.of({"a": docs, "b": docs}), cache=cache)
    for tenant in ("a", "b"):
        engine.check(tenant, req("alice"))
    engine.swap(Snapshot.of({"a": docs, "b": default}))  # b's bundle changed, a's did not
    assert (cache.entries, cache.dropped) == (1, 1)
    assert engine.check("a", req("alice")).cache_hit


def test_an_entry_stored_for_an_old_bundle_is_unreachable(docs: Bundle) -> None:
    # A decision in flight on the old bundle may store its answer after the swap.
    v2 = load_bundle(DOCS_BUNDLE)
    object.__setattr__(v2, "version", type(v2.version)("docs", "2", "sha256:" + "0" * 64))
    cache = DecisionCache(100, 1 << 20, 60)
    engine = Engine(Snapshot.of({"default": docs}), cache=cache)
    engine.swap(Snapshot.of({"default": v2}))
    request = req("alice", "edit")
    key = decision_key("default", docs, request)
    assert key is not None
    [old] = evaluate(docs, [request])
    cache.put(key, old)
    got = engine.check("", request)
    assert not got.cache_hit and got.version == v2.version


def test_threads_share_one_cache_within_its_bounds(docs: Bundle) -> None:
    engine = cached_engine(docs, max_entries=50)
    cache = cache_of(engine)
    failures: list[BaseException] = []
    expected = {p: evaluate(docs, [req(p)])[0].decision for p in ("alice", "bob", "mallory")}

    def work(n: int) -> None:
        try:
            for i in range(400):
                p = ("alice", "bob", "mallory")[i % 3]
                r = engine.check("", req(p, context={"tags": [str((i * n) % 120)]}))
                assert r.decision is expected[p]
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert cache.hits + cache.misses == 1_600 and cache.hits > 0 and cache.evictions > 0
    assert cache.entries <= 50


def test_the_canonical_form_memo_is_bounded_and_exact() -> None:
    from pdp import canonical_json

    for i in range(3 * canonical_json.MEMO_ENTRIES):
        canonical_json.canonical_text(f'{{"b": {i}, "a": "{i}"}}')
        assert len(canonical_json._memo) <= canonical_json.MEMO_ENTRIES
    long = '{"a": "' + "x" * canonical_json.MEMO_CHARS + '"}'
    canonical_json.canonical_text(long)
    assert long not in canonical_json._memo
    # Remembered by exact text: -0 and 0 stay two forms however often each is seen.
    for _ in range(2):
        assert canonical_json.canonical_text('{"n": -0}') == '{"n":-0}'
        assert canonical_json.canonical_text('{"n": 0}') == '{"n":0}'


def test_a_hit_answers_with_the_message_a_fresh_build_gives() -> None:
    """Hit responses are copied from templates (`convert.check_response`): each field must
    be what building the response field by field gives, errors and reasons included."""
    version = BundleVersion("docs", "1", "sha256:" + "a" * 64)
    hits = [
        CheckResult(Decision.ALLOW, ("p1", "p2"), (), version, "id-1", True, 3),
        CheckResult(Decision.DENY, (), (), version, "id-2", True, 0),
        CheckResult(
            Decision.DENY, ("p3",), (PolicyError("p3", "a message"),), version, "id-3", True, 1
        ),
    ]
    for result in [*hits, *hits]:  # the second time from the templates
        got = convert.check_response(result)
        assert got == convert._build_response(result)
        assert got.decision_id == result.decision_id and got.cache_hit
        assert [(e.policy_id, e.message) for e in got.errors] == [
            (e.policy_id, e.message) for e in result.errors
        ]
