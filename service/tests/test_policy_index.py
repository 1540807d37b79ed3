"""The policy index decides exactly as the whole policy set (differential tests).

Each request is evaluated twice by `pdp.engine.evaluate`: against the bundle as compiled
(indexed) and against the same bundle with `index=None` (every policy). Decision,
determining policies and errors (policy and message) must agree, and so must a refusal.
Cedar reports determining policies as a set and errors in its own iteration order, so
both are compared as sorted lists (the engine passes them on as Cedar gives them).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp import policy_index
from pdp.bundle import Bundle, compile_bundle
from pdp.bundle_files import BundleFiles, read_bundle_files
from pdp.engine import evaluate
from pdp.errors import BundleError, InvalidRequest
from pdp.model import CheckInput, Decision, EntityRef
from pdp.policy_index import Member, build_index, known_actions

from .sharing import POLICIES, SHARED_WITH, USERS, shared_user, sharing_bundle_files
from .test_conformance import ARCHIVE, CORPUS, HANDWRITTEN, _load, _read_archive, _tests

STEPPED_UP = {  # what the default bundle asks of admins and high-risk actions
    "mfa": True,
    "device_trusted": True,
    "session_age": {"__extn": {"fn": "duration", "arg": "20m"}},
    "idle": {"__extn": {"fn": "duration", "arg": "2m"}},
}


def outcome(bundle: Bundle, request: CheckInput) -> Any:
    try:
        [r] = evaluate(bundle, [request])
    except InvalidRequest as exc:
        return ("refused", exc.field, str(exc))
    return (
        r.decision,
        sorted(r.determining_policies),
        sorted((e.policy_id, e.message) for e in r.errors),
    )


def kind(bundle: Bundle, request: CheckInput) -> str:
    """Which way the index selected the request's policies (to count what was reached)."""
    index = bundle.index
    if index is None:
        return "no index"
    key = index.positions(
        (request.principal.type, request.principal.id),
        (request.action.type, request.action.id),
        (request.resource.type, request.resource.id),
    )
    if key is None:
        return "whole set: action unknown"
    if not key:
        return "empty sub-set"
    if len(key) == len(index._members):
        return "every policy"
    names = {index._members[p].cedar_id for p in key}
    if any(bundle.policies[n].template_id for n in names):
        return "sub-set with links"
    return "sub-set"


def disagreements(bundle: Bundle, requests: Sequence[CheckInput]) -> list[Any]:
    whole = dataclasses.replace(bundle, index=None)
    return [
        (r, got, want)
        for r in requests
        if (got := outcome(bundle, r)) != (want := outcome(whole, r))
    ]


# --- Cedar's conformance corpus ---------------------------------------------------------


def _uid(value: dict[str, Any]) -> EntityRef:
    value = value.get("__entity", value)
    return EntityRef(value["type"], value["id"])


def conformance_bundles() -> Iterator[tuple[Bundle, list[CheckInput]]]:
    """Each test file as a bundle whose base entities are the file's (so the index is on:
    trusted request entities turn it off), per request-validation setting."""
    files = _read_archive(ARCHIVE)
    for folder, subdir in ((HANDWRITTEN, "tests"), (CORPUS, "corpus-tests")):
        for label in _tests(files, folder, subdir):
            test = _load(files, folder, label, PurePosixPath(label).stem)
            for validate in sorted({r.get("validateRequest", True) for r in test.requests}):
                manifest = {"name": "conformance", "version": "1", "validate_requests": validate}
                if not test.data["shouldValidate"]:
                    manifest["validation"] = "off"
                try:
                    bundle = compile_bundle(
                        BundleFiles(
                            label,
                            {
                                "manifest.json": json.dumps(manifest).encode(),
                                "schema.cedarschema": test.schema,
                                "policies.cedar": test.policies,
                                "entities.json": test.entities.encode(),
                            },
                        )
                    )
                except BundleError:
                    continue  # counted below: almost every file compiles
                requests = [
                    CheckInput(
                        _uid(r["principal"]),
                        _uid(r["action"]),
                        _uid(r["resource"]),
                        context=json.dumps(r["context"]),
                    )
                    for r in test.requests
                    if r.get("validateRequest", True) == validate
                ]
                yield bundle, requests + recombined(requests)


# The random requests' links bundle: 2,000 links (the whole set costs ~50 ms a request at
# 10,000, and the index works the same at any size; bench/ measures 10,000).
LINK_DOCUMENTS = 400
RECOMBINED = 8  # per bundle


def recombined(requests: Sequence[CheckInput]) -> list[CheckInput]:
    """The file's principals, actions and resources recombined (each action with a context
    written for it): Cedar's corpus mostly asks requests every policy's scope can match."""
    principals = sorted({r.principal for r in requests}, key=str)
    resources = sorted({r.resource for r in requests}, key=str)
    contexts = {r.action: r.context for r in requests}
    out = [
        CheckInput(p, action, res, context=context)
        for action, context in sorted(contexts.items(), key=lambda kv: str(kv[0]))
        for p in principals
        for res in resources
    ]
    return [r for r in out if r not in requests][:RECOMBINED]


def test_indexed_and_whole_set_agree_on_the_conformance_corpus() -> None:
    kinds: Counter[str] = Counter()
    checked, bundles, bad = 0, 0, []
    for bundle, requests in conformance_bundles():
        bundles += 1
        checked += len(requests)
        kinds.update(kind(bundle, r) for r in requests)
        bad += disagreements(bundle, requests)
    assert bad == [], f"{len(bad)} of {checked} disagree, first: {bad[:3]}"
    print(f"conformance: {checked} requests over {bundles} bundles, {dict(kinds)}")
    assert bundles >= 2_000 and checked >= 15_000
    # The index was on for every request. Almost every corpus file holds one policy, so a
    # request's sub-set is that policy or nothing: ~2,000 times the index ruled the policy
    # out, and Cedar agreed it was neither satisfied nor errored.
    assert kinds["no index"] == 0
    assert kinds["empty sub-set"] >= 1_500 and kinds["every policy"] >= 10_000


# --- random requests over the default bundle and a 10,000-link bundle -------------------


@pytest.fixture(scope="module")
def default_bundle() -> Bundle:
    return compile_bundle(read_bundle_files(POLICIES))


@pytest.fixture(scope="module")
def links_bundle() -> Bundle:
    return compile_bundle(sharing_bundle_files(LINK_DOCUMENTS))


def uids(bundle: Bundle) -> list[EntityRef]:
    entities = json.loads((POLICIES / "entities.json").read_text())
    return [EntityRef(e["uid"]["type"], e["uid"]["id"]) for e in entities]


CONTEXTS = [
    {},
    STEPPED_UP,
    {**STEPPED_UP, "amount_cents": 5000, "reason": "r", "currency": "EUR"},
    {**STEPPED_UP, "amount_cents": 500000, "currency": "EUR"},
    {**STEPPED_UP, "purpose": "support"},
    {**STEPPED_UP, "tokens": 100},
]


def shapes(bundle: Bundle, actions: Sequence[EntityRef]) -> list[tuple[EntityRef, str, str, Any]]:
    """(action, principal type, resource type, context) combinations the schema accepts, as
    Cedar says (a random combination is nearly always refused before any policy runs)."""
    whole = dataclasses.replace(bundle, index=None)
    types = sorted({e.type for e in uids(bundle)})

    def accepts(a: EntityRef, pt: str, rt: str, contexts: Sequence[Any]) -> list[Any]:
        probes = (
            CheckInput(EntityRef(pt, "?"), a, EntityRef(rt, "?"), context=c) for c in contexts
        )
        return [p.context for p in probes if outcome(whole, p)[0] != "refused"]

    # Types first (with the least and the most demanding context), then every context.
    pairs = [(a, pt, rt) for a in actions for pt in types for rt in types]
    typed = [t for t in pairs if accepts(*t, [CONTEXTS[0], CONTEXTS[2]])]
    return [(*t, c) for t in typed for c in accepts(*t, CONTEXTS)]


def requests_over(bundle: Bundle, extra: Sequence[EntityRef]) -> st.SearchStrategy[CheckInput]:
    known = [*uids(bundle), *extra, EntityRef("User", "nobody"), EntityRef("Document", "nodoc")]
    assert bundle.index is not None
    actions = [EntityRef(t, i) for t, i in sorted(bundle.index.actions)]
    by_type = {t: [e for e in known if e.type == t] for t in {e.type for e in known}}
    valid = shapes(bundle, actions)
    assert len(valid) >= 50, valid

    @st.composite
    def accepted(draw: st.DrawFn) -> CheckInput:
        action, pt, rt, context = draw(st.sampled_from(valid))
        principal = draw(st.sampled_from(by_type[pt]))
        return CheckInput(principal, action, draw(st.sampled_from(by_type[rt])), context=context)

    entity = st.sampled_from(known)
    action = st.sampled_from([*actions, EntityRef("Action", "no-such-action")])
    anything = st.builds(CheckInput, entity, action, entity, context=st.sampled_from(CONTEXTS))
    if not extra:
        return st.one_of(accepted(), accepted(), accepted(), anything)
    # A user and a document it is linked to (else a random pair almost never is).
    doc_actions = [(a, c) for a, pt, rt, c in valid if (pt, rt) == ("User", "Document")]
    shared = st.builds(
        lambda d, k, ac: CheckInput(
            EntityRef("User", shared_user(d, k)),
            ac[0],
            EntityRef("Document", f"d{d}"),
            context=ac[1],
        ),
        st.integers(0, LINK_DOCUMENTS - 1),
        st.integers(0, SHARED_WITH - 1),
        st.sampled_from(doc_actions),
    )
    return st.one_of(accepted(), shared, anything)


LINKED = [EntityRef("User", f"u{u}") for u in range(0, USERS, 7)] + [
    EntityRef("Document", f"d{d}") for d in range(0, LINK_DOCUMENTS, 13)
]
EXAMPLES = 1_500


@pytest.mark.parametrize("which", ["default", "links"])
def test_indexed_and_whole_set_agree_on_random_requests(
    which: str, request: pytest.FixtureRequest
) -> None:
    bundle: Bundle = request.getfixturevalue(f"{which}_bundle")
    kinds: Counter[str] = Counter()
    bad: list[Any] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(requests_over(bundle, LINKED if which == "links" else []))
    def check(req: CheckInput) -> None:
        kinds[kind(bundle, req)] += 1
        got = outcome(bundle, req)
        kinds[str(got[0])] += 1
        want = outcome(dataclasses.replace(bundle, index=None), req)
        if got != want:
            bad.append((req, got, want))

    check()
    assert bad == [], bad[:3]
    print(f"{which}: {dict(kinds)}")
    # Decided, not just refused by the schema, and both ways.
    assert kinds[str(Decision.ALLOW)] >= 30 and kinds[str(Decision.DENY)] >= 300
    assert kinds["whole set: action unknown"] >= 20
    assert kinds["sub-set"] >= 200
    if which == "links":
        assert kinds["sub-set with links"] >= 50


def test_a_batch_mixing_sub_sets_agrees_item_by_item(links_bundle: Bundle) -> None:
    # One batch whose items select different sub-sets (and the whole set): each item's
    # answer is the one it gets alone and the one the whole set gives.
    batch = [
        CheckInput(EntityRef("User", shared_user(d, 1)), EntityRef("Action", a), res)
        for d in range(0, 40, 3)
        for a in ("read", "comment", "edit", "delete")
        for res in (EntityRef("Document", f"d{d}"), EntityRef("Document", "doc-1"))
    ]
    whole = dataclasses.replace(links_bundle, index=None)
    together = [(r.decision, sorted(r.determining_policies)) for r in evaluate(links_bundle, batch)]
    assert together == [
        (r.decision, sorted(r.determining_policies)) for r in evaluate(whole, batch)
    ]
    assert together == [outcome(links_bundle, r)[:2] for r in batch]
    assert sum(1 for r in batch if kind(links_bundle, r) == "sub-set with links") >= 10


def test_the_differential_check_catches_a_broken_index(default_bundle: Bundle) -> None:
    # An index that forgets action groups (`action in Action::"write"` then matches only
    # `write` itself) must be caught: the checks above can fail.
    index = default_bundle.index
    assert index is not None
    flat = {a: frozenset[tuple[str, str]]() for a in index.actions}
    broken = dataclasses.replace(default_bundle, index=build_index(index._members, flat))
    # `forbid (principal is Agent, action in Action::"high_risk", resource)` is then lost.
    requests = [
        CheckInput(agent, EntityRef("Action", a), resource, context=STEPPED_UP)
        for agent in (e for e in uids(default_bundle) if e.type == "Agent")
        for a in ("delete", "export", "share")
        for resource in (e for e in uids(default_bundle) if e.type == "Document")
    ]
    assert len(disagreements(broken, requests)) >= 1
    assert disagreements(default_bundle, requests) == []


# --- when the index steps aside, and what it keeps ------------------------------------


def with_manifest(**extra: Any) -> Bundle:
    files = read_bundle_files(POLICIES)
    manifest = {**json.loads(files.files["manifest.json"]), **extra}
    return compile_bundle(
        BundleFiles(files.source, {**files.files, "manifest.json": json.dumps(manifest).encode()})
    )


def test_the_index_steps_aside_where_it_cannot_be_sure() -> None:
    assert with_manifest().index is not None
    assert with_manifest(index_policies=False).index is None  # the diagnosis switch
    trusted = with_manifest(request_entities="trusted", authoritative_types=None)
    assert trusted.index is None  # a request could bring its own action entities
    # A rule letting requests supply action entities cannot arise: Action is no entity
    # type of the schema, so the bundle is refused (the index checks for it all the same).
    with pytest.raises(BundleError, match="request_entities.Action"):
        with_manifest(request_entities={"Action": {"parents": []}})


def test_a_bad_index_setting_is_refused_naming_it() -> None:
    with pytest.raises(BundleError) as err:
        with_manifest(index_policies="maybe")
    assert "index_policies" in str(err.value)


def test_action_groups_come_from_the_schema(default_bundle: Bundle) -> None:
    hierarchy = known_actions(default_bundle.schema)
    assert hierarchy[("Action", "comment")] == {("Action", "write")}
    assert hierarchy[("Action", "refund")] == {("Action", "write"), ("Action", "high_risk")}
    assert hierarchy[("Action", "read")] == frozenset()


def test_sub_sets_are_built_lazily_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_index, "MAX_SUBSETS", 8)
    bundle = compile_bundle(sharing_bundle_files(documents=60, shared_with=1))
    index = bundle.index
    assert index is not None and index.built == 0  # nothing built at load
    requests = [
        CheckInput(EntityRef("User", shared_user(d, 0)), EntityRef("Action", "read"), res)
        for d in range(60)
        for res in (EntityRef("Document", f"d{d}"),)
    ]
    assert disagreements(bundle, requests) == []
    assert index.built == 60 and len(index._subsets) <= 8
    evaluate(bundle, requests[-1:])  # a hit: nothing rebuilt
    assert index.built == 60


def test_members_keep_the_bundles_order_and_ids(links_bundle: Bundle) -> None:
    index = links_bundle.index
    assert index is not None
    members: list[Member] = list(index._members)
    assert [m.cedar_id for m in members] == [
        s.cedar_id for s in links_bundle.policies.values() if not s.is_template
    ]
    assert len(members) == LINK_DOCUMENTS * SHARED_WITH + 2 + sum(
        1 for s in links_bundle.policies.values() if s.template_id is None and not s.is_template
    )


def test_a_sub_set_cedar_will_not_build_falls_back_to_the_whole_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = compile_bundle(read_bundle_files(POLICIES))
    index = bundle.index
    assert index is not None

    def refuse(statics: tuple[int, ...]) -> Any:
        raise ValueError("injected: Cedar refused the sub-set")

    monkeypatch.setattr(index, "_parse", refuse)
    request = CheckInput(
        EntityRef("User", "bob"), EntityRef("Action", "edit"), EntityRef("Document", "doc-1")
    )
    assert kind(bundle, request) == "sub-set"
    assert disagreements(bundle, [request]) == []
    assert outcome(bundle, request)[0] is Decision.ALLOW and index.built == 0
