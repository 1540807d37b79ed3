"""`pdp serve --workers N`: N server processes sharing one port.

cedarpy holds the GIL while it evaluates, so one process decides on one core; more
cores need more processes. Each worker is a complete `pdp serve` (own snapshot, own
reload); the kernel spreads connections over them (SO_REUSEPORT). This parent only
picks the port, starts the workers, forwards signals and stops them all if one dies.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("pdp.supervisor")


def free_port(host: str, port: int) -> int:
    """Check that host:port is free (not even shared by another SO_REUSEPORT server) and
    return it, or a free port chosen by the kernel when `port` is 0."""
    bare = host.strip("[]")
    family, kind, proto, _, addr = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as s:
        s.bind(addr)  # no SO_REUSEPORT: fails if any server holds the port
        return int(s.getsockname()[1])


def run_workers(argv: Sequence[str], host: str, port: int, workers: int) -> int:
    port = free_port(host, port)
    listen = f"{host}:{port}"
    command = [sys.executable, "-m", "pdp", *argv, "--workers", "1", "--listen", listen, "--worker"]
    procs = [subprocess.Popen(command) for _ in range(workers)]
    log.info("supervising %d workers on %s: pids %s", workers, listen, [p.pid for p in procs])

    def forward(signum: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in forwarded}
    try:
        stopping = False
        while any(p.poll() is None for p in procs):
            if not stopping and any(p.returncode not in (None, 0) for p in procs):
                # A worker died: stop the rest so the orchestrator restarts the whole unit.
                log.error("a worker exited unexpectedly; stopping the others")
                forward(signal.SIGTERM, None)
                stopping = True
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if all(p.returncode == 0 for p in procs) else 1
