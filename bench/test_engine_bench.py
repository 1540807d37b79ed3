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
  floor     cedarpy.is_authorized_batch alone with the bundle's pre-parsed handles, the
            lower bound the engine's own overhead is measured against
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import cedarpy
import pytest
import scenario

from pdp.bundle import Bundle
from pdp.engine import Engine
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
    """Stands in for grpc.aio.ServicerContext: only used on errors, which must not happen."""

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"servicer aborted: {code} {details}")


def wire_caller(
    servicer: AuthorizationServicer, s: scenario.Shape
) -> tuple[Callable[[], bytes], asyncio.AbstractEventLoop]:
    """One servicer call, wire bytes in -> wire bytes out, and the loop it runs on."""
    method = getattr(servicer, s.method)
    request_type = type(s.message)
    wire = s.message.SerializeToString()
    ctx = _NoContext()
    # One event loop, as in the server: a batch yields to it between slices of items.
    loop = asyncio.new_event_loop()

    def call() -> bytes:
        request = request_type.FromString(wire)
        return bytes(loop.run_until_complete(method(request, ctx)).SerializeToString())

    return call, loop


@pytest.mark.benchmark(group="servicer")
@pytest.mark.parametrize("shape", ["check", "batch", "check-ent", "batch-ent"])
def test_servicer_wire_to_wire(benchmark: Any, engine: Engine, shape: str) -> None:
    s = scenario.SHAPES[shape]
    call, loop = wire_caller(AuthorizationServicer(engine, max_batch_items=100), s)
    try:
        out = benchmark(call)
    finally:
        loop.close()
    assert s.decode_decisions(out) == s.expected


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
