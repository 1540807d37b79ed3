"""The server's call pool (`pdp.grpc.call_pool`): every submitted call runs once, every
done callback fires once whether added before or after the call ran, threads stay within
`max_workers` and are reused, and a pool dropped or shut down leaves no thread behind."""

from __future__ import annotations

import gc
import queue
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from grpc_reflection.v1alpha import reflection_pb2_grpc as rpb_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.grpc.call_pool import Call, CallPool

from ..support import DOCS_BUNDLE, running_server
from .test_limits import check


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


def _pool_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix + "_")]


def test_a_call_runs_with_its_arguments_and_its_callbacks_fire_once() -> None:
    pool = CallPool(2, "t-args")
    got: list[tuple[int, str]] = []
    fired: list[Call] = []
    release = threading.Event()

    def fn(a: int, b: str) -> None:
        release.wait(5)
        got.append((a, b))

    call = pool.submit(fn, 1, "x")
    call.add_done_callback(fired.append)  # before it ran
    assert not call.done() and not fired
    release.set()
    _wait(lambda: len(fired) == 1)
    assert got == [(1, "x")] and fired == [call] and call.done()
    call.add_done_callback(fired.append)  # after: at once, on this thread
    assert fired == [call, call]
    pool.shutdown()


def test_threads_stay_within_max_workers_and_queued_calls_run_when_one_frees() -> None:
    pool = CallPool(3, "t-cap")
    release = threading.Event()
    running = Counter[str]()
    lock = threading.Lock()

    def blocked() -> None:
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        release.wait(10)
        with lock:
            running["now"] -= 1
            running["done"] += 1

    for _ in range(10):
        pool.submit(blocked)
    _wait(lambda: running["now"] == 3)
    time.sleep(0.05)
    assert pool.thread_count == 3 and running["peak"] == 3 and running["done"] == 0
    release.set()
    _wait(lambda: running["done"] == 10)
    assert pool.thread_count == 3 and running["peak"] == 3
    pool.shutdown()


def test_a_waiting_thread_is_reused_rather_than_a_new_one_started() -> None:
    pool = CallPool(16, "t-reuse")
    for _ in range(200):
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(5)
        time.sleep(0.0005)  # let the thread count itself idle
    assert pool.thread_count <= 2, pool.thread_count  # sequential calls: one thread, two at a race
    pool.shutdown()


def test_a_call_that_raises_is_logged_by_type_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = CallPool(1, "t-raise")
    fired: list[Call] = []

    def bad() -> None:
        raise ValueError("4111 1111 1111 1111")  # a message that quotes a request

    call = pool.submit(bad)
    call.add_done_callback(fired.append)
    after = threading.Event()
    pool.submit(after.set)
    assert after.wait(5)
    _wait(lambda: fired == [call])
    assert "ValueError" in caplog.text and "4111" not in caplog.text
    assert pool.thread_count == 1
    pool.shutdown()


def test_shutdown_runs_what_was_queued_ends_the_threads_and_refuses_more() -> None:
    pool = CallPool(2, "t-shut")
    ran = Counter[int]()
    for i in range(20):
        pool.submit(lambda i=i: ran.update([i]))
    pool.shutdown(wait=True, timeout=10)
    assert sorted(ran) == list(range(20)) and set(ran.values()) == {1}
    assert not _pool_threads("t-shut")
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)


def test_a_dropped_pool_ends_its_threads() -> None:
    pool = CallPool(4, "t-drop")
    events = [threading.Event() for _ in range(4)]
    for e in events:
        pool.submit(e.wait, 5)
    for e in events:
        e.set()
    _wait(lambda: len(_pool_threads("t-drop")) >= 1)
    del pool
    gc.collect()
    _wait(lambda: not _pool_threads("t-drop"))


def test_a_call_that_ran_is_not_kept_alive_by_the_pool() -> None:
    """grpcio closes an RPC's HTTP/2 stream only when its call objects are freed: a pool
    thread that kept its last call (and its arguments) while it waited for the next held
    that stream open, and a connection with 32 such streams refused every new call."""

    class Argument:
        pass

    pool = CallPool(8, "t-free")
    refs = []
    fired: list[Call] = []
    gate = threading.Barrier(8)
    for _ in range(8):  # eight threads, each left idle after its call
        arg = Argument()
        refs.append(weakref.ref(arg))
        pool.submit(lambda a: gate.wait(5), arg).add_done_callback(fired.append)
        del arg
    _wait(lambda: len(fired) == 8)
    fired.clear()  # the test's own references to the calls
    gc.collect()
    _wait(lambda: all(r() is None for r in refs))
    assert pool.thread_count == 8
    pool.shutdown()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        CallPool(0)


def test_callbacks_added_while_calls_finish_all_fire_exactly_once() -> None:
    """grpcio adds its callback on the poll thread right after `submit`, while the call may
    be finishing on a worker: a race between the two may neither lose nor double one."""
    seen = Counter[str]()

    @settings(max_examples=30, deadline=None)
    @given(
        st.integers(1, 8),  # workers
        st.lists(st.sampled_from(["none", "yield", "sleep"]), min_size=50, max_size=300),
        st.sampled_from(["right after submit", "after a pause", "twice"]),
    )
    def prop(workers: int, kinds: list[str], when: str) -> None:
        pool = CallPool(workers, "t-race")
        fired = Counter[int]()
        lock = threading.Lock()
        expected = 0
        for i, kind in enumerate(kinds):

            def fn(kind: str = kind) -> None:
                if kind == "yield":
                    time.sleep(0)
                elif kind == "sleep":
                    time.sleep(0.0002)

            def cb(_: Call, i: int = i) -> None:
                with lock:
                    fired[i] += 1

            call = pool.submit(fn)
            if when == "after a pause" and i % 7 == 0:
                time.sleep(0.0003)
            was_done = call.done()
            call.add_done_callback(cb)
            expected += 1
            if when == "twice":
                call.add_done_callback(cb)
                expected += 1
            seen[f"added after done: {was_done}"] += 1
        _wait(lambda: sum(fired.values()) == expected)
        assert set(fired) == set(range(len(kinds)))
        assert set(fired.values()) == {2 if when == "twice" else 1}
        assert pool.thread_count <= workers
        pool.shutdown()

    prop()
    # Both sides of the race were reached: callbacks added before and after the call ran.
    assert seen["added after done: True"] >= 20 and seen["added after done: False"] >= 20, seen


def test_the_server_frees_each_call_on_its_pool_and_still_caps_calls_in_flight() -> None:
    """Served: grpcio counts calls in flight by the pool's done callbacks. A lost callback
    would refuse every call once `max_concurrent_rpcs` had been answered; the cap itself
    still refuses the call past it while that many (idle reflection streams) are open."""
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--max-concurrent-rpcs", "3"]
    with running_server(args) as srv, srv.channel() as ch, srv.channel() as idle_ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        for _ in range(30):  # ten times the cap, one after another
            assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW
        answers = [stub.Check.future(check(), timeout=10) for _ in range(3)]
        assert all(a.result().decision == pb.DECISION_ALLOW for a in answers)
        stop: queue.Queue[None] = queue.Queue()

        def idle() -> Iterator[rpb.ServerReflectionRequest]:
            yield rpb.ServerReflectionRequest(list_services="")
            stop.get()  # then nothing more: the stream stays open, holding its call

        reflect = rpb_grpc.ServerReflectionStub(idle_ch)
        held = []
        for _ in range(3):
            call = reflect.ServerReflectionInfo(idle())
            next(call)  # answered: the stream is a call in flight
            held.append(call)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                stub.Check(check(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            for c in held:
                c.cancel()
            for _ in held:
                stop.put(None)
        deadline = time.monotonic() + 10
        while True:  # the held calls end as they are cancelled; then calls are admitted
            try:
                assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "held calls were never freed"
                time.sleep(0.05)


def test_many_calls_at_once_on_one_connection_keep_being_answered() -> None:
    """Served, one connection (at most 32 streams open, `max_concurrent_streams`): rounds
    of 30 calls at once, so 30 pool threads go idle after each; every call of every round
    is answered, none refused for a stream that a finished call still holds."""
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]
    with running_server(args) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert stub.Check(check(), timeout=10).decision == pb.DECISION_ALLOW  # SETTINGS read
        for _ in range(4):
            answers = [stub.Check.future(check(), timeout=10) for _ in range(30)]
            assert [a.result().decision for a in answers] == [pb.DECISION_ALLOW] * 30


def test_shutdown_says_whether_every_call_has_returned_within_its_timeout() -> None:
    """Shutdown closes the entity store only once no call runs (pdp.app): `shutdown`
    tells it, within one timeout for all threads, not one per thread."""
    pool = CallPool(4, "t-join")
    release = threading.Event()
    started = [threading.Event() for _ in range(3)]
    for e in started:
        pool.submit(lambda e=e: (e.set(), release.wait(30)))
    assert all(e.wait(5) for e in started)
    t0 = time.monotonic()
    assert pool.shutdown(wait=True, timeout=1.0) is False  # three calls still running
    # One bound for the three threads: a timeout per thread would take 3 s (not a speed
    # figure: the semantics of `timeout`, with a wide margin).
    assert time.monotonic() - t0 < 2.5
    release.set()
    assert pool.shutdown(wait=True, timeout=10) is True
    assert not _pool_threads("t-join")
