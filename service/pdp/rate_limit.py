"""Request budgets per tenant and per client: token buckets in bounded tables.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second; a request costs
one token per decision it asks for (a CheckBatch its item count) and is refused, without
taking any, when the bucket holds fewer. Each table keeps at most `max_keys` buckets, the
least recently used forgotten first, so memory is bounded whatever names callers send. A
forgotten bucket starts again full, as one idle for burst / rate seconds is anyway: idle
buckets need no expiry of their own, and only a flood of `max_keys` other names between two
calls of a key can hand that key a fresh budget early (those calls spend their own budgets).

The table is an OrderedDict, not a cachetools cache: 3-4 us a call against 12-15 us for
TTLCache and 5-6 us for LRUCache (interleaved, on the shared development machine).

Budgets are per server process: with `--workers N` each worker enforces its own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pdp.errors import RateLimited


class RateLimitSettings(Protocol):
    @property
    def rate_limit_per_tenant(self) -> float | None: ...
    @property
    def rate_limit_per_tenant_burst(self) -> int | None: ...
    @property
    def rate_limit_per_client(self) -> float | None: ...
    @property
    def rate_limit_per_client_burst(self) -> int | None: ...
    @property
    def rate_limit_max_keys(self) -> int: ...


class Limiter:
    """Token buckets by key for one limit (named by its setting, for messages)."""

    def __init__(
        self,
        setting: str,
        rate: float,
        burst: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.setting = setting
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, when counted), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()  # calls arrive on many threads

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def take(self, key: str, cost: int) -> bool:
        """Take `cost` tokens from `key`'s bucket if it holds that many."""
        with self._lock:
            now = self._clock()
            held = self._buckets.get(key)
            tokens = (
                float(self.burst)
                if held is None
                else min(self.burst, held[0] + (now - held[1]) * self.rate)
            )
            admitted = cost <= tokens
            buckets = self._buckets
            buckets[key] = (tokens - cost if admitted else tokens, now)
            buckets.move_to_end(key)
            if len(buckets) > self._max_keys:
                buckets.popitem(last=False)
            return admitted


@dataclass(frozen=True)
class RateLimits:
    tenant: Limiter | None
    client: Limiter | None

    @staticmethod
    def of(s: RateLimitSettings) -> RateLimits | None:
        """The configured limits, or None when both are off (the request path then checks
        nothing but that None)."""
        tenant = _limiter(
            "rate_limit_per_tenant",
            s.rate_limit_per_tenant,
            s.rate_limit_per_tenant_burst,
            s.rate_limit_max_keys,
        )
        client = _limiter(
            "rate_limit_per_client",
            s.rate_limit_per_client,
            s.rate_limit_per_client_burst,
            s.rate_limit_max_keys,
        )
        return None if tenant is None and client is None else RateLimits(tenant, client)

    def admit(self, tenant: str, client: str | None, cost: int) -> None:
        """Charge `cost` decisions to the client (first: every request, even one for an
        unknown tenant, spends the caller's budget) and then to the tenant; RateLimited
        naming the limit if either budget is short."""
        if self.client is not None and client is not None and not self.client.take(client, cost):
            raise _refused(self.client, f"client {client}", cost)
        if self.tenant is not None and not self.tenant.take(tenant, cost):
            raise _refused(self.tenant, f"tenant {tenant!r}", cost)


def _limiter(setting: str, rate: float | None, burst: int | None, max_keys: int) -> Limiter | None:
    if rate is None:
        return None
    return Limiter(setting, rate, burst if burst is not None else max(1, round(rate)), max_keys)


def _refused(limiter: Limiter, who: str, cost: int) -> RateLimited:
    if cost > limiter.burst:
        why = f"{cost} decisions in one call exceed its burst of {limiter.burst}"
    else:
        why = f"{limiter.rate:g} decisions/s, burst {limiter.burst}, spent"
    return RateLimited(
        limiter.setting, f"rate limited ({limiter.setting}): {who}: {why}; retry later"
    )
