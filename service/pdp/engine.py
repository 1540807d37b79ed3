"""The decision engine: the one place cedarpy evaluates requests.

`Engine` holds the only mutable state of the PDP, a reference to an immutable
`Snapshot`, replaced whole by `swap()`. A decision reads that reference once, so
it runs start to finish on one snapshot even while a reload swaps in another.
`evaluate()` is pure and is shared by the server and the policy test runner.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cedarpy

from pdp.bundle import Bundle, locate_entity_errors
from pdp.decision_cache import DecisionCache, decision_key
from pdp.errors import InvalidRequest, NotReady, TokenRejected, UnknownTenant
from pdp.model import (
    DEFAULT_TENANT,
    CheckInput,
    CheckResult,
    Decision,
    PolicyError,
    RequestEntities,
    TokenPrincipal,
)
from pdp.trust import check_request_entities, token_entities

# Cedar names the policy of an evaluation error only in the message text. Bundle ids
# hold no backtick (`pdp.bundle.ID_CHARS`), so the id is exactly the text up to the
# first one; an id the bundle does not know blocks an Allow.
_POLICY_ERROR = re.compile(r"^error while evaluating policy `(?P<id>[^`]*)`: (?P<msg>.*)$", re.S)
_REQUEST_ERROR = "failed to build request"  # how Cedar reports a request the schema refuses
_FIELDS = ("context", "principal", "resource", "action", "entities")
BATCH_SLICE = 8  # requests per cedarpy call in `Engine.check_batch`


@dataclass(frozen=True)
class Snapshot:
    """The bundles being served, by tenant. Never mutated once built."""

    bundles: Mapping[str, Bundle] = field(default_factory=lambda: MappingProxyType({}))

    @staticmethod
    def of(bundles: Mapping[str, Bundle]) -> Snapshot:
        return Snapshot(MappingProxyType(dict(bundles)))

    def replacing(self, tenant: str, bundle: Bundle) -> Snapshot:
        return Snapshot.of({**self.bundles, tenant: bundle})


class Engine:
    """Decides requests against the current snapshot, through the decision cache if given.

    `bypass_cache=True` (the API's `CONSISTENCY_HIGHER_CONSISTENCY`) evaluates afresh
    without reading the cache; the fresh decision is still stored, replacing the entry.
    """

    def __init__(
        self, snapshot: Snapshot | None = None, cache: DecisionCache | None = None
    ) -> None:
        self._snapshot = snapshot
        self.cache = cache

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def swap(self, snapshot: Snapshot) -> None:
        # A single reference assignment: atomic, and in-flight decisions keep the
        # snapshot they already read.
        old, self._snapshot = self._snapshot, snapshot
        if self.cache is not None and old is not None:
            # A changed bundle has a new digest, so its tenant's entries can no longer be
            # hit: free them now rather than when they age out. (A decision in flight on
            # the old bundle may still store one; it stays unreachable and ages out.)
            for tenant, bundle in old.bundles.items():
                if snapshot.bundles.get(tenant) is not bundle:
                    self.cache.drop_tenant(tenant)

    def bundle(self, tenant: str) -> Bundle:
        snapshot = self._snapshot
        if snapshot is None:
            raise NotReady("no policy bundle is active yet")
        bundle = snapshot.bundles.get(tenant or DEFAULT_TENANT)
        if bundle is None:
            raise UnknownTenant(tenant or DEFAULT_TENANT)
        return bundle

    def check(self, tenant: str, request: CheckInput, *, bypass_cache: bool = False) -> CheckResult:
        bundle = self.bundle(tenant)
        cache = self.cache
        if cache is None:
            return evaluate(bundle, [request])[0]
        key = decision_key(tenant or DEFAULT_TENANT, bundle, request)
        hit = None if key is None or bypass_cache else cache.get(key)
        if hit is not None:
            return hit.result(_decision_id())
        result = evaluate(bundle, [request])[0]
        if key is not None:
            cache.put(key, result)
        return result

    def check_batch(
        self, tenant: str, requests: Sequence[CheckInput], *, bypass_cache: bool = False
    ) -> list[CheckResult]:
        bundle = self.bundle(tenant)  # every request on the same snapshot
        cache = self.cache
        if cache is None:
            return _sliced(bundle, requests)
        name = tenant or DEFAULT_TENANT
        memo: dict[str, str] = {}  # batch-level texts are canonicalised once
        keys = [decision_key(name, bundle, r, memo) for r in requests]
        results: list[CheckResult | None] = [None] * len(requests)
        misses: list[int] = []
        for i, key in enumerate(keys):
            hit = None if key is None or bypass_cache else cache.get(key)
            if hit is None:
                misses.append(i)
            else:
                results[i] = hit.result(_decision_id())
        if not misses:
            return [r for r in results if r is not None]
        try:
            fresh = _sliced(bundle, [requests[i] for i in misses])
        except InvalidRequest:
            if len(misses) == len(requests):
                raise
            # Raise the error a fresh evaluation of the whole batch raises: which item is
            # reported must not depend on what happens to be cached.
            return _sliced(bundle, requests)
        for i, result in zip(misses, fresh, strict=True):
            key = keys[i]
            if key is not None:
                cache.put(key, result)
            results[i] = result
        return [r for r in results if r is not None]


def _sliced(bundle: Bundle, requests: Sequence[CheckInput]) -> list[CheckResult]:
    """Decide every request, BATCH_SLICE requests per cedarpy call: a cedarpy call holds
    the GIL for its whole length, so a large batch decided in one call would stall every
    other call of the process; between two slices the GIL can pass to them. The slices
    share one parse of each set of request entities."""
    parsed: dict[RequestEntities, Any] = {}
    results: list[CheckResult] = []
    for start in range(0, len(requests), BATCH_SLICE):
        chunk = requests[start : start + BATCH_SLICE]
        results += evaluate(bundle, chunk, parsed=parsed, first_index=start)
    return results


def evaluate(
    bundle: Bundle,
    requests: Sequence[CheckInput],
    *,
    parsed: dict[RequestEntities, Any] | None = None,
    first_index: int = 0,
    trust_request_entities: bool = False,
) -> list[CheckResult]:
    """Decide every request against one bundle, in order.

    Requests that share the same request entities share one parse of them, and
    each such group is decided in one cedarpy call. A caller deciding a batch in
    slices passes the same `parsed` cache to each slice, and the slice's position
    as `first_index` (errors name the request by its index in the whole batch).

    Request entities must pass the bundle's rule (`pdp.trust`). Only a caller that
    wrote the entities on the bundle owners' behalf (the policy-test harness) passes
    `trust_request_entities=True`; the server never does.
    """
    groups: dict[RequestEntities | None, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.entities, []).append(i)
    results: list[CheckResult | None] = [None] * len(requests)
    schema = bundle.schema if bundle.manifest.validate_requests else None
    cache = {} if parsed is None else parsed
    contexts: dict[int, str] = {}  # a context shared by many requests is serialised once
    for delta, indices in groups.items():
        if delta is None:
            entities = bundle.entities
        elif delta in cache:
            entities = cache[delta]
        else:
            at = first_index + indices[0]
            if not trust_request_entities:
                check_request_entities(bundle.trust, delta, at)
            entities = cache[delta] = _entities(bundle, delta, at)
        batch = [_cedar_request(requests[i], contexts) for i in indices]
        for i, outcome in zip(indices, _authorize(batch, bundle, entities, schema), strict=True):
            results[i] = _result(bundle, outcome, first_index + i)
    return [r for r in results if r is not None]


def _cedar_request(req: CheckInput, contexts: dict[int, str]) -> dict[str, Any]:
    context = req.context
    if not context:
        context = "{}"  # the usual empty context, without a json.dumps per request
    elif not isinstance(context, str):
        key = id(context)
        if key not in contexts:
            contexts[key] = json.dumps(context, separators=(",", ":"))
        context = contexts[key]
    return {
        "principal": req.principal.as_cedar(),
        "action": req.action.as_cedar(),
        "resource": req.resource.as_cedar(),
        "context": context,
    }


def _entities(bundle: Bundle, delta: RequestEntities, index: int) -> Any:
    # A token's principal joins the caller's entities under its own rule (pdp.trust).
    text = delta.json if delta.token is None else token_entities(bundle.trust, delta, index)
    try:
        if bundle.entity_count == 0:
            return cedarpy.Entities.from_json_str(text, bundle.schema)
        # A disjoint union: a request may add entities but never redefine a base
        # entity (that would let a caller rewrite its own group memberships).
        return bundle.entities.with_added_json_str(text, bundle.schema)
    except ValueError as exc:
        if delta.token is not None:
            _check_token_entity(bundle, delta.token)
        problems = locate_entity_errors("entities", delta.json, bundle.schema, str(exc))
        detail = "; ".join(
            f"{p.message} (line {p.line})" if p.line and p.line > 1 else p.message for p in problems
        )
        if "duplicate" in str(exc):
            detail = f"{exc} (request entities may not redefine base entities)"
        raise InvalidRequest("entities", detail, index) from exc


def _check_token_entity(bundle: Bundle, token: TokenPrincipal) -> None:
    """TokenRejected if Cedar refuses the token principal's own entity (its claims do not
    fit the schema): the token's fault, not the caller's entities'."""
    try:
        cedarpy.Entities.from_json_str(f"[{token.entity_json()}]", bundle.schema)
    except ValueError as exc:
        raise TokenRejected(
            f"its claims do not make a valid {token.uid.type} entity for this bundle: {exc}"
        ) from exc


def _authorize(
    batch: list[dict[str, Any]], bundle: Bundle, entities: Any, schema: Any
) -> list[dict[str, Any]]:
    # The one place a policy set is picked: the bundle's index (`pdp.policy_index`) groups
    # the requests by the sub-set of the policies whose scope can match them (None: all).
    index = bundle.index
    groups = [(None, range(len(batch)))] if index is None else index.split(batch)
    if len(groups) == 1:
        subset = groups[0][0]
        return _decide(batch, bundle.policy_set if subset is None else subset, entities, schema)
    outcomes: list[dict[str, Any]] = [{}] * len(batch)
    for subset, positions in groups:
        part = [batch[i] for i in positions]
        policy_set = bundle.policy_set if subset is None else subset
        for i, outcome in zip(positions, _decide(part, policy_set, entities, schema), strict=True):
            outcomes[i] = outcome
    return outcomes


def _decide(
    batch: list[dict[str, Any]], policy_set: Any, entities: Any, schema: Any
) -> list[dict[str, Any]]:
    try:
        return [
            r._authz_resp for r in cedarpy.is_authorized_batch(batch, policy_set, entities, schema)
        ]
    except Exception as exc:  # noqa: BLE001 - any engine fault must become Deny, never Allow
        fault = {"decision": "Deny", "diagnostics": {"errors": [f"evaluation failed: {exc}"]}}
        return [fault] * len(batch)


def _result(bundle: Bundle, outcome: Mapping[str, Any], index: int) -> CheckResult:
    diagnostics = outcome.get("diagnostics") or {}
    raw_errors: list[str] = list(diagnostics.get("errors") or [])
    verdict = outcome.get("decision")
    if verdict not in ("Allow", "Deny"):
        message = "; ".join(raw_errors) or "no decision"
        if _REQUEST_ERROR in message:
            raise InvalidRequest(_field_of(message), message, index)
        raw_errors, verdict = [f"evaluation failed: {message}"], "Deny"  # any other fault: Deny
    errored = [_errored_policy(e) for e in raw_errors]
    reasons: list[str] = list(diagnostics.get("reason") or [])
    decision = Decision.ALLOW if verdict == "Allow" else Decision.DENY
    if decision is Decision.ALLOW:
        # Fail closed: an error that names no policy of the bundle, or (by default) any
        # policy but a permit. Only an errored permit is known not to matter: Cedar skips
        # it, and a skipped permit never grants.
        skip = bundle.manifest.forbid_errors == "skip"
        blocking = [
            cedar_id
            for cedar_id, _ in errored
            if cedar_id not in bundle.policies
            or not (bundle.is_permit(cedar_id) or (skip and bundle.is_forbid(cedar_id)))
        ]
        if blocking:
            decision, reasons = Decision.DENY, [b for b in blocking if b]
    return CheckResult(
        decision=decision,
        determining_policies=[bundle.policy_id(p) for p in reasons],
        errors=[PolicyError(bundle.policy_id(c) if c else "", m) for c, m in errored],
        version=bundle.version,
        decision_id=_decision_id(),
    )


# Decision ids: a random per-process prefix (96 bits) and a counter, unique across a
# fleet without a uuid4 per decision (2.5 µs each, 100 µs per 40-item batch).
_ID_PREFIX = os.urandom(12).hex()
_ID_COUNTER = itertools.count(1)


def _decision_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):012x}"


def _errored_policy(message: str) -> tuple[str, str]:
    """(Cedar policy id, message) of an evaluation error; id "" if it names no policy."""
    m = _POLICY_ERROR.match(message)
    return ("", message) if m is None else (m["id"], m["msg"])


def _field_of(message: str) -> str:
    """Name the request field a Cedar request error is about."""
    lowered = message.lower()
    positions = [(lowered.find(f), f) for f in _FIELDS if f in lowered]
    return min(positions)[1] if positions else "request"
