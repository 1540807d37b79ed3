"""Token buckets (`pdp.rate_limit`): the budget holds for every sequence of requests, and the
tables stay bounded whatever keys callers send. Over gRPC: `grpc/test_rate_limits.py`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.rate_limit import Limiter

RATE, BURST = 2.0, 5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


steps = st.lists(
    st.tuples(
        st.sampled_from("abc"),  # few keys: buckets are reused, drained and refilled
        st.integers(1, BURST + 1),  # cost; BURST + 1 can never be admitted
        st.one_of(st.just(0.0), st.floats(0, 0.5), st.floats(2, 10)),  # idle time before
    ),
    max_size=60,
)


def test_admitted_cost_never_exceeds_burst_plus_refill_and_an_idle_key_is_served() -> None:
    seen = {"refused": 0, "admitted_after_refusal": 0, "admitted_after_idle": 0, "runs": 0}

    @settings(max_examples=300, deadline=None)
    @given(steps, st.integers(1, 3))
    def run(sequence: list[tuple[str, int, float]], max_keys: int) -> None:
        clock = Clock()
        limiter = Limiter("rate_limit_per_client", RATE, BURST, max_keys, clock)
        admitted: dict[str, list[tuple[float, int]]] = {}
        last: dict[str, float] = {}
        refused_before: set[str] = set()
        for key, cost, idle in sequence:
            clock.now += idle
            fully_idle = key not in last or clock.now - last[key] >= BURST / RATE
            ok = limiter.take(key, cost)
            last[key] = clock.now
            if cost > BURST:
                assert not ok  # can never fit, whatever the bucket holds
            elif fully_idle:
                # Refilled (or forgotten, which must admit the same): a request that fits
                # the burst is served.
                assert ok
                seen["admitted_after_idle"] += 1
            if ok:
                admitted.setdefault(key, []).append((clock.now, cost))
                if key in refused_before:
                    seen["admitted_after_refusal"] += 1
            else:
                seen["refused"] += 1
                refused_before.add(key)
            assert len(limiter) <= max_keys
        # In every window [a, b] a key was charged at most BURST + RATE * (b - a) (an
        # eviction past max_keys may only forget a bucket: it is counted here as if kept
        # only when max_keys covers every key).
        if max_keys >= 3:
            for events in admitted.values():
                for i, (a, _) in enumerate(events):
                    total = 0
                    for b, cost in events[i:]:
                        total += cost
                        assert total <= BURST + RATE * (b - a) + 1e-9
        seen["runs"] += 1

    run()
    # The generator reaches what matters: refusals, recovery after them, idle refills.
    assert seen["runs"] >= 300
    assert seen["refused"] >= 100, seen
    assert seen["admitted_after_refusal"] >= 50, seen
    assert seen["admitted_after_idle"] >= 100, seen


def test_the_table_is_bounded_whatever_keys_arrive() -> None:
    clock = Clock()
    limiter = Limiter("rate_limit_per_client", RATE, BURST, 100, clock)
    for i in range(20_000):  # e.g. one connection per source port, or forged identities
        assert limiter.take(f"ipv4:10.0.{i // 256}.{i % 256}", 1)
        clock.now += 0.0001
    assert len(limiter) == 100
