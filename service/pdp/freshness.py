"""`max_bundle_age`: a tenant whose bundle source has not been confirmed current for longer
than the limit fails closed instead of serving stale policy forever (opa#4338).

A tenant is confirmed when a load or reload of it succeeds, which includes a periodic
re-read finding the source equal to the served bundle (`pdp.reloader`: same digest, signature
verified). A source that is missing, unreadable, invalid or refused confirms nothing. The
engine asks `stale` before the decision cache, so no cached Allow outlives the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Freshness:
    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._confirmed: dict[str, float] = {}  # replaced whole: read without a lock

    def confirm(self, tenant: str) -> None:
        self._confirmed = {**self._confirmed, tenant: self._clock()}

    def stale(self, tenant: str) -> str | None:
        """Why `tenant` must be denied now (the response's `reason`); None while fresh."""
        at = self._confirmed.get(tenant)
        if at is None:  # never confirmed: nothing says its bundle is current
            return "stale bundle: never confirmed"
        age = self._clock() - at
        if age <= self.max_age:
            return None
        return f"stale bundle: not confirmed for {int(age)} s"

    def stale_tenants(self, tenants: Iterable[str]) -> set[str]:
        return {t for t in tenants if self.stale(t) is not None}

    def next_expiry(self) -> float | None:
        """Seconds until the next fresh tenant turns stale (None: no fresh tenant)."""
        now = self._clock()
        ahead = [at + self.max_age - now for at in self._confirmed.values()]
        ahead = [a for a in ahead if a >= 0]
        return min(ahead) if ahead else None
