"""Attacks on the decision log writer's drain (one flush per drain)."""

from __future__ import annotations

import threading
import time

from pdp.decision_log import DecisionLogger
from pdp.model import CheckInput, EntityRef

from .test_decision_log import result


class SlowSink:
    """A sink a little slower than the decisions (a busy disk): each line takes 1 ms."""

    def __init__(self) -> None:
        self.lines = 0
        self.flushed = 0  # lines handed to the OS (what survives a crash of the process)

    def write(self, line: str) -> None:
        time.sleep(0.001)
        self.lines += 1

    def flush(self) -> None:
        self.flushed = self.lines

    def close(self) -> None:
        self.flush()


def test_a_writer_behind_a_steady_load_still_flushes_and_counts() -> None:
    # `_drain` loops `while self._queue` and flushes (and adds to `written`/`dropped`)
    # only once the queue is empty. Under a load the sink cannot keep up with (the case a
    # bounded queue that drops is for), the queue is never empty: nothing is flushed,
    # `written` and `dropped` stay 0 for as long as the load lasts (the metrics say all
    # is well while records are being dropped), and `done` grows by a tuple per call.
    sink = SlowSink()
    logger = DecisionLogger(sink, queue_size=50)
    req = CheckInput(EntityRef("User", "u"), EntityRef("Action", "a"), EntityRef("Thing", "t"))
    stop = threading.Event()
    calls = [0]

    def load() -> None:
        while not stop.is_set():
            logger.check("t", req, result(calls[0]), time.perf_counter(), None)
            calls[0] += 1
            time.sleep(0.0002)  # ~5x what the sink writes: the queue stays full

    producer = threading.Thread(target=load)
    producer.start()
    try:
        time.sleep(2.0)
        seen = (sink.lines, sink.flushed, logger.written, logger.dropped)
    finally:
        stop.set()
        producer.join()
        logger.close()
    lines, flushed, written, dropped = seen
    assert lines > 100, f"the sink wrote only {lines} lines: the load did not reach it"
    assert flushed > 0 and written > 0 and dropped > 0, (
        f"after 2 s of {calls[0]} calls: {lines} lines written to the sink, {flushed} "
        f"flushed; counters written={written} dropped={dropped}"
    )
