"""In-process decision benchmarks against the default bundle (pytest-benchmark).

    .venv/bin/pytest bench/ --benchmark-only                 # or: make bench
    .venv/bin/pytest bench/ --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,mean,ops,rounds

Groups:
  check     one Engine.check: allow, deny, typed context (refund)
  entities  one Engine.check with request entities (entities_json with 1, 2, 3 entities)
  batch     Engine.check_batch of 40 items (base entities / 11 request entities)
  servicer  the gRPC servicer's own code, wire bytes in -> wire bytes out, no transport:
            decode, convert, engine, convert, encode (what one server call costs in Python)
  cache     the decision cache: Engine.check and the servicer wire to wire, a warm hit and a
            miss (cache on, every call evicted), beside the same call with the cache off
  floor     cedarpy.is_authorized_batch alone with the bundle's pre-parsed handles, the
            lower bound the engine's own overhead is measured against
  layer     the `check` shape three ways: bare cedarpy.is_authorized with the same
            pre-parsed handles and the same request; Engine.check; the servicer wire to
            wire (issue 7 §4: Engine.check within 1.2x of bare, the servicer within 1.5x)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import cedarpy
import pytest
import scenario

from pdp._proto.v1 import authorization_pb2 as pb
from pdp.bundle import Bundle
from pdp.decision_cache import DecisionCache
from pdp.engine import Engine, Snapshot
from pdp.grpc.servicer import AuthorizationServicer
from pdp.model import CheckInput, Decision, EntityRef, RequestEntities

ALLOW, DENY = Decision.ALLOW, Decision.DENY


def ref(text: str) -> EntityRef:
    type_, id_ = text.split("::", 1)
    return EntityRef(type_, id_.strip('"'))


def check_input(principal: str, action: str, resource: str, **kw: Any) -> CheckInput:
    return CheckInput(ref(principal), ref(action), ref(resource), **kw)


STEPPED_UP = json.loads(scenario.CONTEXT_JSON)  # what bundle 1.1.0 asks of admins and refunds


# --------------------------------------------------------------------------- check --
@pytest.mark.benchmark(group="check")
def test_check_allow(benchmark: Any, engine: Engine) -> None:
    req = check_input('User::"bob"', 'Action::"edit"', 'Document::"doc-1"')
    result = benchmark(engine.check, "", req)
    assert result.decision is ALLOW
    assert list(result.determining_policies) == ["document-editor-write"]


@pytest.mark.benchmark(group="check")
def test_check_deny(benchmark: Any, engine: Engine) -> None:
    req = check_input(
        'User::"alice"', 'Action::"read"', 'Document::"globex-doc-1"', context=STEPPED_UP
    )
    result = benchmark(engine.check, "", req)
    assert result.decision is DENY
    assert list(result.determining_policies) == ["tenant-isolation-forbid-cross-org"]


@pytest.mark.benchmark(group="check")
def test_check_refund_context(benchmark: Any, engine: Engine) -> None:
    # A billing admin's refund below the dual-control threshold: the context is evaluated.
    req = check_input(
        'User::"dave"',
        'Action::"refund"',
        'Invoice::"inv-1001"',
        context={
            **STEPPED_UP,
            "amount_cents": 5000,
            "reason": "duplicate charge",
            "currency": "EUR",
            "customer": scenario.ent("Customer", "cust-1"),
        },
    )
    result = benchmark(engine.check, "", req)
    assert result.decision is ALLOW


# ------------------------------------------------------------------------ entities --
def _request_entities(n: int) -> tuple[str, list[dict[str, Any]]]:
    """(principal, entities): 1 = a document bob edits; 2 = + a request principal;
    3 = + a request project holding the document."""
    doc = json.loads(json.dumps(scenario.BENCH_DOCS[0][0]))  # bench-doc-00, editor bench-bob
    if n == 1:
        doc["attrs"]["editors"] = [scenario.ent("User", "bob")]
        return 'User::"bob"', [doc]
    if n == 2:
        return 'User::"bench-bob"', [scenario.BENCH_PRINCIPAL, doc]
    project = {
        "uid": scenario.uid("Project", "bench-project"),
        "attrs": {
            "org": scenario.ent("Org", "acme"),
            "owner": scenario.ent("User", "carol"),
            "editors": [],
            "viewers": [],
        },
        "parents": [],
    }
    doc["attrs"]["project"] = scenario.ent("Project", "bench-project")
    return 'User::"bench-bob"', [scenario.BENCH_PRINCIPAL, project, doc]


@pytest.mark.benchmark(group="entities")
@pytest.mark.parametrize("n", [1, 2, 3])
def test_check_request_entities(benchmark: Any, engine: Engine, n: int) -> None:
    principal, entities = _request_entities(n)
    req = check_input(
        principal,
        'Action::"edit"',
        'Document::"bench-doc-00"',
        entities=RequestEntities(json.dumps(entities, separators=(",", ":"))),
    )
    result = benchmark(engine.check, "", req)
    assert result.decision is ALLOW, result


# --------------------------------------------------------------------------- batch --
@pytest.mark.benchmark(group="batch")
@pytest.mark.parametrize("shape", ["batch", "batch-ent"])
def test_check_batch_40(benchmark: Any, engine: Engine, shape: str) -> None:
    s = scenario.SHAPES[shape]
    inputs = scenario.check_inputs(s)
    assert len(inputs) == 40
    results = benchmark(engine.check_batch, "", inputs)
    assert [r.decision.name for r in results] == s.expected


# ------------------------------------------------------------------------ servicer --
class _NoContext:
    """Stands in for grpc.ServicerContext: only used on errors, which must not happen."""

    def time_remaining(self) -> float | None:
        return None  # no deadline

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # no caller metadata (no traceparent)

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"servicer aborted: {code} {details}")


def wire_caller(servicer: AuthorizationServicer, s: scenario.Shape) -> Callable[[], bytes]:
    """One servicer call, wire bytes in -> wire bytes out."""
    method = getattr(servicer, s.method)
    request_type = type(s.message)
    wire = s.message.SerializeToString()
    ctx = _NoContext()

    def call() -> bytes:
        return bytes(method(request_type.FromString(wire), ctx).SerializeToString())

    return call


@pytest.mark.benchmark(group="servicer")
@pytest.mark.parametrize("shape", ["check", "batch", "check-ent", "batch-ent"])
def test_servicer_wire_to_wire(benchmark: Any, engine: Engine, shape: str) -> None:
    s = scenario.SHAPES[shape]
    call = wire_caller(AuthorizationServicer(engine, max_batch_items=100), s)
    out = benchmark(call)
    assert s.decode_decisions(out) == s.expected


# --------------------------------------------------------------------------- cache --
def _cached(bundle: Bundle, entries: int) -> Engine:
    return Engine(Snapshot.of({"default": bundle}), cache=DecisionCache(entries, 1 << 26, 3600))


CACHE_MODES = ["off", "hit", "miss"]


def _engine_for(bundle: Bundle, mode: str) -> Engine:
    # "miss": a cache of one entry, and calls alternate between two requests, so every
    # call looks up, evaluates, stores and evicts: what a miss adds to an uncached call.
    return Engine(Snapshot.of({"default": bundle})) if mode == "off" else _cached(bundle, 1)


@pytest.mark.benchmark(group="cache-engine")
@pytest.mark.parametrize("mode", CACHE_MODES)
def test_cache_engine_check(benchmark: Any, bundle: Bundle, mode: str) -> None:
    s = scenario.SHAPES["check"]
    [req] = scenario.check_inputs(s)
    other = check_input('User::"bob"', 'Action::"read"', 'Document::"doc-1"', context=req.context)
    engine = _engine_for(bundle, mode)
    calls = iter(itertools.cycle([req] if mode == "hit" else [other, req]))  # req is cached
    engine.check("", req)
    result = benchmark(lambda: engine.check("", next(calls)))
    assert result.decision is ALLOW and result.cache_hit == (mode == "hit")


@pytest.mark.benchmark(group="cache-servicer")
@pytest.mark.parametrize("mode", CACHE_MODES)
def test_cache_servicer_wire_to_wire(benchmark: Any, bundle: Bundle, mode: str) -> None:
    s = scenario.SHAPES["check"]
    servicer = AuthorizationServicer(_engine_for(bundle, mode), max_batch_items=100)
    other = pb.CheckRequest()
    other.CopyFrom(s.message)
    other.action.id = "read"
    wires = [s.message.SerializeToString()]
    if mode != "hit":
        wires.append(other.SerializeToString())
    calls = itertools.cycle(wires)
    ctx = _NoContext()

    def call() -> bytes:
        return bytes(
            servicer.Check(pb.CheckRequest.FromString(next(calls)), ctx).SerializeToString()
        )

    call()
    out = benchmark(call)
    response = pb.CheckResponse.FromString(out)
    assert response.decision == pb.DECISION_ALLOW and response.cache_hit == (mode == "hit")


# --------------------------------------------------------------------------- floor --
@pytest.mark.benchmark(group="floor")
@pytest.mark.parametrize("n", [1, 40])
def test_cedarpy_floor(benchmark: Any, bundle: Bundle, n: int) -> None:
    """cedarpy alone (schema-validated requests, as the engine runs them)."""
    s = scenario.SHAPES["check" if n == 1 else "batch"]
    inputs = scenario.check_inputs(s)
    batch = [
        {
            "principal": i.principal.as_cedar(),
            "action": i.action.as_cedar(),
            "resource": i.resource.as_cedar(),
            "context": STEPPED_UP,
        }
        for i in inputs
    ]

    def call() -> list[Any]:
        return cedarpy.is_authorized_batch(batch, bundle.policy_set, bundle.entities, bundle.schema)

    out = benchmark(call)
    assert [r.decision.name.upper() for r in out] == s.expected


# --------------------------------------------------------------------------- layer --
@pytest.mark.benchmark(group="layer")
def test_layer_bare_is_authorized(benchmark: Any, bundle: Bundle) -> None:
    """The floor of one decision: cedarpy.is_authorized, the check shape's exact request."""
    [i] = scenario.check_inputs(scenario.SHAPES["check"])
    request = {
        "principal": i.principal.as_cedar(),
        "action": i.action.as_cedar(),
        "resource": i.resource.as_cedar(),
        "context": i.context,  # the request's context_json text, as the engine passes it
    }
    out = benchmark(
        cedarpy.is_authorized, request, bundle.policy_set, bundle.entities, bundle.schema
    )
    assert out.decision.name.upper() == "ALLOW"


@pytest.mark.benchmark(group="layer")
def test_layer_engine_check(benchmark: Any, engine: Engine) -> None:
    [i] = scenario.check_inputs(scenario.SHAPES["check"])
    assert benchmark(engine.check, "", i).decision is ALLOW


@pytest.mark.benchmark(group="layer")
def test_layer_servicer_check(benchmark: Any, engine: Engine) -> None:
    s = scenario.SHAPES["check"]
    check = AuthorizationServicer(engine, max_batch_items=100).Check
    wire, ctx = s.message.SerializeToString(), _NoContext()

    def call() -> bytes:
        return bytes(check(pb.CheckRequest.FromString(wire), ctx).SerializeToString())

    assert s.decode_decisions(benchmark(call)) == ["ALLOW"]
