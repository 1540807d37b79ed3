"""The decision cache: decisions already made, keyed by everything they read.

The key is the contract. A decision is a function of the tenant's bundle (its content
digest: policies, schema, manifest and base entities), the data version of the entities
it read, and the request: principal, action, resource, context and request entities.
The key holds each of them exactly (the context and entities in their canonical JSON
form, `pdp.canonical_json`), compared by equality, never by a short hash: OpenFGA's
cache left the request's contextual tuples out of its key and served wrong answers
(openfga#1058), and its keys are 64-bit hashes. So a cached decision is one a fresh
evaluation would make, for as long as the entry lives; a new bundle has a new digest,
and the entries of the old one can no longer be reached (the engine also drops them).

Only decisions are cached: an invalid request is refused every time, and a result
with an error Cedar did not attribute to a policy of the bundle (an engine fault,
which might not recur) is not stored.

Bounded by entries and by bytes (an estimate of what an entry holds), with a TTL and
least-recently-used eviction. `cachetools` bounds one size only and would still need
our lock, the second bound and the per-tenant drop, so this is our own: an OrderedDict
under one lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from sys import getsizeof

from pdp.bundle import Bundle
from pdp.canonical_json import NotCanonical, canonical_text, canonical_value
from pdp.model import BundleVersion, CheckInput, CheckResult, Decision, PolicyError

# (tenant, bundle digest, data version, principal type, id, action type, id, resource
# type, id, canonical context, canonical request entities or "")
Key = tuple[str, str, str, str, str, str, str, str, str, str, str]
# (tenant, bundle digest, data version, the request's exact bytes): a request that arrives
# as the same bytes as one decided before is that request, so it is answered without
# being converted again (the key of the decoded, converted form is `Key`). A 4-tuple
# never equals an 11-tuple, and bytes never equal a str: the two kinds cannot meet.
ExactKey = tuple[str, str, str, bytes]
AnyKey = Key | ExactKey

# Bytes of an entry beyond the characters of its strings: the key tuple, the OrderedDict
# and per-tenant index slots, the stored tuples and the string headers. tracemalloc says
# ~400 bytes of containers per entry (20,000 entries, short keys) plus ~50 per string
# object; 1 KiB rounds that up, so `bytes` over-estimates rather than under.
ENTRY_OVERHEAD = 1024


def data_version(bundle: Bundle, store_version: int) -> str:
    """The version of the entity data a decision against `bundle` reads: the bundle's base
    entities (which its digest covers) and the entity store's data version."""
    return f"{bundle.version.digest}+{store_version}"


def stored_under(key: Key, bundle: Bundle, store_version: int) -> Key:
    """`key` with the store data version the decision actually read."""
    return (key[0], key[1], data_version(bundle, store_version), *key[3:])


def exact_key(tenant: str, bundle: Bundle, store_version: int, data: bytes) -> ExactKey:
    """The key of a request by its exact bytes (see `ExactKey`)."""
    return (tenant, bundle.version.digest, data_version(bundle, store_version), data)


def exact_under(key: ExactKey, bundle: Bundle, store_version: int) -> ExactKey:
    """`key` with the store data version the decision actually read."""
    return (key[0], key[1], data_version(bundle, store_version), key[3])


def decision_key(
    tenant: str,
    bundle: Bundle,
    request: CheckInput,
    store_version: int = 0,
    memo: dict[str, str] | None = None,
) -> Key | None:
    """The cache key of `request` against `bundle`, or None when it has no canonical form
    (then the decision is made without the cache). A batch passes one `memo` for all its
    items: batch-level context and entities texts are shared, and each is canonicalised
    once per batch, not once per item (a 4 MB entities text times 100 items otherwise)."""
    try:
        ctx = request.context
        context = _text(ctx, memo) if isinstance(ctx, str) else canonical_value(ctx)
        delta = request.entities
        entities = "" if delta is None else _text(delta.json, memo)
        if delta is not None and delta.token is not None:
            # The facts a token asserted about its principal are read too. A NUL never
            # occurs in canonical JSON (it is escaped), so it parts the two unambiguously.
            entities += "\x00" + delta.token.key
    except NotCanonical:
        return None
    p, a, r = request.principal, request.action, request.resource
    return (
        tenant,
        bundle.version.digest,
        data_version(bundle, store_version),
        p.type,
        p.id,
        a.type,
        a.id,
        r.type,
        r.id,
        context,
        entities,
    )


def _text(text: str, memo: dict[str, str] | None) -> str:
    if memo is None:
        return canonical_text(text)
    found = memo.get(text)
    if found is None:
        found = memo[text] = canonical_text(text)
    return found


@dataclass(frozen=True, slots=True)
class Cached:
    """What a cache hit answers with; the decision id is always fresh."""

    decision: Decision
    determining_policies: tuple[str, ...]
    errors: tuple[PolicyError, ...]
    version: BundleVersion
    data_version: int
    # Under an `ExactKey`: the request as converted when it was decided, which equal
    # bytes convert to again (the metrics, log and span of a hit read it).
    request: CheckInput | None = None

    @staticmethod
    def of(result: CheckResult, request: CheckInput | None = None) -> Cached | None:
        """The result as stored, or None if it must not be (see the module's docstring)."""
        if not all(e.policy_id for e in result.errors):
            return None
        return Cached(
            result.decision,
            tuple(result.determining_policies),
            tuple(result.errors),
            result.version,
            result.data_version,
            request,
        )

    def result(self, decision_id: str) -> CheckResult:
        return CheckResult(
            self.decision,
            self.determining_policies,
            self.errors,
            self.version,
            decision_id,
            cache_hit=True,
            data_version=self.data_version,
        )

    def size(self) -> int:
        return (
            sum(map(getsizeof, self.determining_policies))
            + sum(getsizeof(e.policy_id) + getsizeof(e.message) for e in self.errors)
            + 64 * (len(self.determining_policies) + len(self.errors))
            + (0 if self.request is None else _request_size(self.request))
        )


def kept_request(request: CheckInput) -> CheckInput | None:
    """The request as an exact entry keeps it: texts only, so its size is what
    `getsizeof` counts (a parsed entity list or context takes ~10x its text). None when
    the context is not plain JSON (then there is no exact entry)."""
    ctx = request.context
    if not isinstance(ctx, str):
        try:
            ctx = json.dumps(ctx, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return None
    ents = request.entities
    if ents is not None and ents.items is not None:
        ents = replace(ents, items=None)
    return replace(request, context=ctx, entities=ents)


def _request_size(request: CheckInput) -> int:
    """Bytes a kept request (`kept_request`) holds beyond ENTRY_OVERHEAD."""
    parts = [request.principal, request.action, request.resource]
    size = sum(getsizeof(r.type) + getsizeof(r.id) for r in parts) + getsizeof(request.context)
    if request.entities is not None:
        size += getsizeof(request.entities.json)
    return size


class DecisionCache:
    """Thread-safe LRU of decisions, bounded by entries and bytes, entries live `ttl`."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (expiry, size, cached); oldest use first
        self._entries: OrderedDict[AnyKey, tuple[float, int, Cached]] = OrderedDict()
        self._by_tenant: dict[str, dict[AnyKey, None]] = {}  # to drop a tenant's entries
        self._bytes = 0
        # Counters, for the metrics exporter (monotonic, never reset).
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # entries pushed out by the entries or bytes bound
        self.expirations = 0  # entries found past their TTL
        self.dropped = 0  # entries dropped because their tenant's bundle changed

    @property
    def entries(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: AnyKey, *, count_miss: bool = True) -> Cached | None:
        """The entry under `key`, if alive. `count_miss=False` for a first probe that a
        second lookup follows when it misses (that one counts the hit or the miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += count_miss
                return None
            if entry[0] <= self._clock():
                self._remove(key)
                self.expirations += 1
                self.misses += count_miss
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[2]

    def put(self, key: AnyKey, result: CheckResult, request: CheckInput | None = None) -> None:
        cached = Cached.of(result, request)
        if cached is None:
            return
        # Memory, not characters: a str of astral characters takes 4 bytes each.
        size = ENTRY_OVERHEAD + sum(map(getsizeof, key)) + cached.size()
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        with self._lock:
            if key in self._entries:
                self._remove(key)
            self._entries[key] = (self._clock() + self.ttl_seconds, size, cached)
            self._by_tenant.setdefault(key[0], {})[key] = None
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))
                self.evictions += 1

    def drop_tenant(self, tenant: str) -> int:
        """Forget every entry of `tenant` (its bundle changed: they can no longer be hit)."""
        with self._lock:
            keys = list(self._by_tenant.get(tenant, ()))
            for key in keys:
                self._remove(key)
            self.dropped += len(keys)
            return len(keys)

    def _remove(self, key: AnyKey) -> None:
        _, size, _ = self._entries.pop(key)
        self._bytes -= size
        index = self._by_tenant[key[0]]
        del index[key]
        if not index:
            del self._by_tenant[key[0]]
