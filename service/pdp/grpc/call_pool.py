"""The threads grpcio's threaded server runs calls on: a lighter ThreadPoolExecutor.

grpcio's server asks its pool for two things only: `submit(fn, *args)` once per call, and
`add_done_callback` on what that returns (it counts the calls in flight, for
`maximum_concurrent_rpcs`). `concurrent.futures.ThreadPoolExecutor` builds a `Future` per
call (a Condition over an RLock), enters that Condition four times, and takes and gives
back a Python-level Semaphore: ~38,000 instructions a call, 11 % of grpcio's own no-op
call (bench/RESULTS.md, 2026-12-04). Here a call costs one queue put and two short locks.

Threads start on demand, up to `max_workers`, and are reused: a submit that finds a thread
waiting starts none (as ThreadPoolExecutor does). They end when the pool is shut down or
garbage-collected, so a server dropped by its owner leaves no thread behind.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[["Call"], object]


class Call:
    """One submitted call: what grpcio keeps of it is `add_done_callback`."""

    __slots__ = ("_fn", "_args", "_callbacks", "_done", "_lock")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...], lock: threading.Lock):
        self._fn: Callable[..., object] | None = fn
        self._args: tuple[Any, ...] | None = args
        self._callbacks: list[Callback] | None = None
        self._done = False
        self._lock = lock  # the pool's: a lock per call would cost one more allocation

    def add_done_callback(self, callback: Callback) -> None:
        """Call `callback(self)` once the call has run: on the thread that ran it, or here
        at once if it already has (as `Future.add_done_callback` does)."""
        with self._lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = [callback]
                else:
                    self._callbacks.append(callback)
                return
        callback(self)

    def done(self) -> bool:
        return self._done

    def _run(self) -> None:
        fn, args = self._fn, self._args
        assert fn is not None and args is not None, "a call runs once"
        # Dropped before the call runs, and the call's own references at its end: grpcio
        # closes an RPC's HTTP/2 stream only once its call objects (in `args`) are freed,
        # so a call kept alive here held its stream open (32 per connection, then refused).
        self._fn = self._args = None
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - a worker must outlive what it runs
            # The type only: grpcio's behaviours end their calls themselves, so this is a
            # defect, and a message could quote a request.
            log.error("a call on the server's thread pool raised %s", type(exc).__name__)
        finally:
            del fn, args
        with self._lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except BaseException as exc:  # noqa: BLE001
                log.error("a done callback raised %s", type(exc).__name__)


class _Workers:
    """What the pool and its threads share (the threads hold no reference to the pool, so
    dropping the pool ends them)."""

    def __init__(self, max_workers: int, prefix: str) -> None:
        self.queue: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.max = max_workers
        self.prefix = prefix
        self.threads: list[threading.Thread] = []
        self.idle = 0  # threads done with a call and not yet claimed by a submit
        self.closed = False

    def work(self) -> None:
        get, lock = self.queue.get, self.lock
        while True:
            call = get()
            if call is None:
                return
            call._run()
            call = None  # not held while this thread waits for the next one (see `_run`)
            with lock:
                self.idle += 1

    def stop(self) -> None:
        with self.lock:
            self.closed = True
            count = len(self.threads)
        for _ in range(count):
            self.queue.put(None)


class CallPool:
    """`submit` and `shutdown` as `ThreadPoolExecutor` has them, for grpcio's server."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "call-pool") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._workers = _Workers(max_workers, thread_name_prefix)
        self._lock = threading.Lock()  # the calls' done flags and callback lists
        weakref.finalize(self, self._workers.stop)

    def submit(self, fn: Callable[..., object], /, *args: Any) -> Call:
        call = Call(fn, args, self._lock)
        w = self._workers
        with w.lock:
            if w.closed:
                raise RuntimeError("cannot submit a call after shutdown")
            w.queue.put(call)
            if w.idle:
                w.idle -= 1  # a waiting thread takes it
                return call
            if len(w.threads) >= w.max:
                return call  # queued until a thread is free, as in ThreadPoolExecutor
            thread = threading.Thread(
                target=w.work, name=f"{w.prefix}_{len(w.threads)}", daemon=True
            )
            w.threads.append(thread)
        try:
            thread.start()
        except BaseException:
            with w.lock:
                w.threads.remove(thread)
            raise
        return call

    @property
    def thread_count(self) -> int:
        return len(self._workers.threads)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Refuse new calls; each thread ends after the calls queued before it. `wait`
        joins them, within `timeout` seconds in all if given. True when every thread
        (but the caller's own) has ended: no call is running any more."""
        w = self._workers
        w.stop()
        if not wait:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(w.threads):
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in w.threads if t is not threading.current_thread())
