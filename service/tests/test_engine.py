"""The engine in-process: decisions, fail-closed errors, snapshots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pdp.bundle import Bundle, compile_bundle, load_bundle
from pdp.bundle_files import read_bundle_files
from pdp.engine import Engine, Snapshot, evaluate
from pdp.errors import InvalidRequest, NotReady, UnknownTenant
from pdp.model import CheckInput, Decision, EntityRef, RequestEntities

from .support import DOCS_BUNDLE


@pytest.fixture(scope="module")
def docs() -> Bundle:
    return load_bundle(DOCS_BUNDLE)


def req(principal: str, action: str = "read", resource: str = "doc1", **kw: object) -> CheckInput:
    return CheckInput(
        EntityRef("User", principal),
        EntityRef("Action", action),
        EntityRef("Document", resource),
        **kw,
    )  # type: ignore[arg-type]


def newcomer(org: str, level: int = 1) -> RequestEntities:
    e = {
        "uid": {"type": "User", "id": "newcomer"},
        "attrs": {"org": {"type": "Org", "id": org}, "level": level},
        "parents": [],
    }
    return RequestEntities(json.dumps([e]))


def with_manifest(extra: dict[str, object]) -> Bundle:
    files = read_bundle_files(DOCS_BUNDLE)
    manifest = {**json.loads(files.files["manifest.json"]), **extra}
    return compile_bundle(
        type(files)(files.source, {**files.files, "manifest.json": json.dumps(manifest).encode()})
    )


def test_an_errored_forbid_fails_closed(docs: Bundle) -> None:
    # doc9 does not exist, so `org-boundary` errors reading resource.org; Cedar would skip it
    # and let `overflow`'s permit through. The default bundle setting denies instead.
    [r] = evaluate(docs, [req("newcomer", resource="doc9", entities=newcomer("globex", level=0))])
    assert r.decision is Decision.DENY
    assert list(r.determining_policies) == ["org-boundary"]
    assert "org-boundary" in {e.policy_id for e in r.errors}


def test_cedar_semantics_when_the_bundle_asks_for_them(docs: Bundle) -> None:
    skip = with_manifest({"forbid_errors": "skip"})
    [r] = evaluate(skip, [req("newcomer", resource="doc9", entities=newcomer("globex", level=0))])
    assert r.decision is Decision.ALLOW  # exactly what Cedar decides
    assert list(r.determining_policies) == ["overflow"]


def test_an_errored_permit_never_grants(docs: Bundle) -> None:
    # Unknown principal: every attribute read errors; only errors, no grant.
    [r] = evaluate(docs, [req("ghost")])
    assert r.decision is Decision.DENY
    assert {e.policy_id for e in r.errors} >= {"read-public", "org-boundary"}


def test_batch_results_keep_request_order_across_entity_groups(docs: Bundle) -> None:
    ins = [
        req("alice"),
        req("newcomer", entities=newcomer("acme")),
        req("mallory"),
        req("newcomer", entities=newcomer("globex")),
        req("alice", action="edit"),
    ]
    out = evaluate(docs, ins)
    assert [r.decision for r in out] == [
        Decision.ALLOW,
        Decision.ALLOW,
        Decision.DENY,
        Decision.DENY,
        Decision.DENY,
    ]


def test_invalid_request_names_field_and_index(docs: Bundle) -> None:
    with pytest.raises(InvalidRequest) as err:
        evaluate(docs, [req("alice"), req("alice", context={"mfa": "yes"})])
    assert err.value.field == "context" and err.value.index == 1


def test_request_validation_can_be_turned_off(docs: Bundle) -> None:
    lax = with_manifest({"validate_requests": False})
    [r] = evaluate(lax, [req("alice", context={"unknown": 1})])
    assert r.decision is Decision.ALLOW
    with pytest.raises(InvalidRequest):
        evaluate(docs, [req("alice", context={"unknown": 1})])


def test_engine_reads_one_snapshot_and_swaps_atomically(docs: Bundle) -> None:
    engine = Engine()
    with pytest.raises(NotReady):
        engine.check("", req("alice"))
    engine.swap(Snapshot.of({"docs": docs}))
    with pytest.raises(UnknownTenant):
        engine.check("", req("alice"))  # empty tenant means "default", which is not loaded
    before = engine.snapshot
    engine.swap(before.replacing("default", docs))  # type: ignore[union-attr]
    assert engine.check("", req("alice")).decision is Decision.ALLOW
    assert dict(before.bundles) == {"docs": docs}  # type: ignore[union-attr]  # never mutated


def test_the_default_bundle_loads_strictly() -> None:
    bundle = load_bundle(Path(__file__).resolve().parents[2] / "policies")
    assert bundle.manifest.validation == "strict"
    unannotated = [
        s for s in bundle.policies.values() if s.template_id is None and s.policy_id == s.cedar_id
    ]
    assert unannotated == []  # every policy and template carries an @id


def test_an_engine_fault_is_a_deny_with_the_error_listed(docs: Bundle) -> None:
    # A handle cedarpy cannot use makes the evaluator itself raise: the answer is still Deny.
    # (index=None: the whole set is what each request is decided by.)
    broken = dataclasses.replace(
        docs, policy_set="permit(principal, action, resource) when { 1 + };", index=None
    )
    out = evaluate(broken, [req("alice"), req("bob")])
    assert [r.decision for r in out] == [Decision.DENY, Decision.DENY]
    assert all(r.errors and r.errors[0].message.startswith("evaluation failed:") for r in out)
    assert all(r.errors[0].policy_id == "" for r in out)
