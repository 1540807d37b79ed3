"""`pdp serve --workers N`: N server processes sharing one port.

cedarpy holds the GIL while it evaluates, so one process decides on one core; more
cores need more processes. Each worker is a complete `pdp serve` (own snapshot, own
reload); the kernel spreads connections over them (SO_REUSEPORT). This parent only
reserves the port, starts the workers, forwards signals and stops them all if one dies.
With metrics on it also serves the one scrape for all workers: they record into a
shared-memory directory it creates for the run and removes afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from pdp.metrics import MULTIPROC_ENV
from pdp.metrics_server import MetricsListener, workers_registry

log = logging.getLogger("pdp.supervisor")


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (a free port chosen by the kernel when `port` is 0) that
    only `--workers` siblings can share: it binds without SO_REUSEPORT, so it fails if any
    server holds the port, then turns SO_REUSEPORT on so the workers (which set it) can bind
    beside it. It never listens, so it receives no connections; holding it until the
    workers exit keeps anyone else from taking the port while they start."""
    bare = host.strip("[]")
    family, kind, proto, _, addr = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)[0]
    s = socket.socket(family, kind, proto)
    try:
        s.bind(addr)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        s.close()
        raise
    return s


def run_workers(
    argv: Sequence[str], host: str, port: int, workers: int, metrics_listen: str = "off"
) -> int:
    with reserve_port(host, port) as reserved, _metrics_dir(metrics_listen) as directory:
        listen = f"{host}:{reserved.getsockname()[1]}"
        return _supervise(argv, listen, workers, metrics_listen, directory)


@contextlib.contextmanager
def _metrics_dir(metrics_listen: str) -> Iterator[str | None]:
    if metrics_listen == "off":
        yield None
        return
    directory = tempfile.mkdtemp(prefix="pdp-metrics-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _supervise(
    argv: Sequence[str], listen: str, workers: int, metrics_listen: str, directory: str | None
) -> int:
    command = [sys.executable, "-m", "pdp", *argv, "--workers", "1", "--listen", listen, "--worker"]
    env = dict(os.environ)
    env.pop(MULTIPROC_ENV, None)
    if directory is not None:
        env[MULTIPROC_ENV] = directory  # read by prometheus-client as a worker imports it
    # Worker 0 alone serves the admin API (its port cannot be shared); the others apply
    # its kill switch through the state file and reload on the SIGHUP it sends here.
    procs = [
        subprocess.Popen(command if i == 0 else [*command, "--admin-listen", "off"], env=env)
        for i in range(workers)
    ]
    log.info("supervising %d workers on %s: pids %s", workers, listen, [p.pid for p in procs])
    if directory is not None:
        log.info("worker metrics in %s", directory)
    with contextlib.ExitStack() as stack:
        if directory is not None:
            try:
                listener = MetricsListener(
                    metrics_listen, workers_registry(directory, [p.pid for p in procs])
                )
            except OSError as exc:
                log.error("%s; stopping the workers", exc)
                for p in procs:
                    p.send_signal(signal.SIGTERM)
                    p.wait()
                return 1
            stack.callback(listener.close)
        return _watch(procs, directory)


def _watch(procs: list[subprocess.Popen[bytes]], directory: str | None) -> int:
    def forward(signum: int, _frame: FrameType | None) -> None:
        # Ctrl-C reaches the workers too (one process group); a second copy is harmless:
        # a worker handles signals until it exits.
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for sig in forwarded:
        signal.signal(sig, forward)
    try:
        stopping = False
        while any(p.poll() is None for p in procs):
            if not stopping and any(p.returncode not in (None, 0) for p in procs):
                # A worker died: stop the rest so the orchestrator restarts the whole unit.
                log.error("a worker exited unexpectedly; stopping the others")
                forward(signal.SIGTERM, None)
                stopping = True
            for p in procs:  # a dead worker's live gauges no longer count
                if p.returncode is not None and directory is not None:
                    mark_process_dead(p.pid, directory)  # type: ignore[no-untyped-call]
            time.sleep(0.1)
    finally:
        for sig in forwarded:
            # The workers are gone and so is this process in a moment: a late Ctrl-C must
            # not turn a clean exit into a traceback.
            signal.signal(sig, signal.SIG_IGN)
    return 0 if all(p.returncode == 0 for p in procs) else 1
