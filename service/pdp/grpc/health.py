"""The standard health service, with its Watch streams closed off grpcio's poll thread.

grpc_health's `HealthServicer.Watch` sends its first response while it holds the
servicer's lock, and that send waits for grpcio's poll thread. The callback that ends a
Watch (a cancelled or expired stream) runs on that same poll thread and takes the same
lock: one Watch ending while another starts deadlocked the server for good (every call
then timed out, and SIGTERM hung in `enter_graceful_shutdown`, which needs the lock too).
Found by attacking the server with Watch streams opened and cancelled from 16 threads.

Here the ending callback is handed to one thread of our own, so the poll thread never
waits for the lock. Everything else is grpc_health's.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from grpc_health.v1.health import HealthServicer

log = logging.getLogger(__name__)


class HealthService(HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._closing: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._closer: threading.Thread | None = None
        self._closer_lock = threading.Lock()

    def _on_close_callback(self, send_response_callback: Any, service: str) -> Callable[[], None]:
        close: Callable[[], None] = super()._on_close_callback(send_response_callback, service)

        def deferred() -> None:  # on grpcio's poll thread: must not wait for the lock
            self._start_closer()
            self._closing.put(close)

        return deferred

    def _start_closer(self) -> None:
        # Started on the first Watch that ends: a server nobody watches has no such thread.
        with self._closer_lock:
            if self._closer is None:
                self._closer = threading.Thread(
                    target=self._close_watches, name="pdp-health-watch-close", daemon=True
                )
                self._closer.start()

    def _close_watches(self) -> None:
        while True:
            close = self._closing.get()
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - the thread serves every later Watch
                log.error("closing a health Watch failed: %s", type(exc).__name__)
