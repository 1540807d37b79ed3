"""Composition root: settings -> engine, reloader, server; run until SIGTERM/SIGINT.

Phases: load every bundle (exit on failure) -> start gRPC -> SERVING -> watch and
reload -> on signal: NOT_SERVING, stop accepting, finish in-flight calls within
the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import watchfiles

from pdp.config import Settings
from pdp.engine import Engine
from pdp.grpc.convert import Limits
from pdp.grpc.server import PdpServer
from pdp.reloader import BundleSources, Reloader

log = logging.getLogger("pdp")


class App:
    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port  # a `--workers` sibling shares the port
        self.engine = Engine()
        self.sources = BundleSources(settings.bundles, settings.bundles_dir)
        self.reloader = Reloader(self.engine, self.sources)
        self._stop = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # keeps signal-started reloads alive

    def load(self) -> None:
        """Load every bundle; raises BundleError (with every problem) if any fails."""
        self.reloader.load_all()

    async def reload(self, tenants: set[str] | None = None) -> None:
        async with self._reloading:
            # Compiling runs in a worker thread: the event loop keeps answering.
            await asyncio.to_thread(self.reloader.reload, tenants)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        log.info("SIGHUP: reloading every bundle")
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, on_listening: Callable[[int], None] | None = None) -> None:
        s = self.settings
        server = PdpServer(
            self.engine,
            s.listen,
            max_batch_items=s.max_batch_items,
            max_message_bytes=s.max_message_bytes,
            limits=Limits.of(s),
            max_concurrent_streams=s.max_concurrent_streams,
            max_concurrent_rpcs=s.max_concurrent_rpcs,
            reuse_port=self.reuse_port,
        )
        await server.start()
        await server.set_serving(True)
        host = s.listen.rsplit(":", 1)[0]
        snapshot = self.engine.snapshot
        tenants = sorted(snapshot.bundles) if snapshot else []
        log.info("listening on %s:%d, tenants: %s", host, server.port, ", ".join(tenants))
        if on_listening:
            on_listening(server.port)
        watcher = asyncio.create_task(self._watch()) if s.watch else None
        with _signals(self):
            await self._stop.wait()
        await server.enter_shutdown()  # health NOT_SERVING from here on
        if watcher:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if s.drain_seconds:
            log.info("shutting down: NOT_SERVING, still answering for %.1fs", s.drain_seconds)
            await asyncio.sleep(s.drain_seconds)
        log.info("shutting down: draining for up to %.1fs", s.shutdown_grace_seconds)
        await server.stop(s.shutdown_grace_seconds)
        log.info("stopped")

    async def _watch(self) -> None:
        paths = self.sources.watch_paths()
        armed = False
        async for changes in watchfiles.awatch(
            *paths,
            debounce=self.settings.reload_debounce_ms,
            step=50,
            recursive=True,
            rust_timeout=500,
            yield_on_timeout=True,  # the first (empty) yield tells us the watcher is armed
        ):
            if not armed:
                armed = True
                log.info("watching %d path(s) for bundle changes", len(paths))
                # Catch edits made between start-up loading and arming the watcher;
                # unchanged bundles are recognised by digest and not recompiled.
                await self.reload()
            if not changes:
                continue
            changed = {Path(p) for _, p in changes}
            tenants = self.sources.tenants_for(changed)
            if tenants is not None and not tenants:
                continue  # a file beside an archive, not part of any bundle
            log.info("bundle files changed; reloading %s", sorted(tenants) if tenants else "all")
            await self.reload(tenants)


@contextlib.contextmanager
def _signals(app: App) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.request_stop)
            installed.append(sig)
        loop.add_signal_handler(signal.SIGHUP, app.request_reload)
        installed.append(signal.SIGHUP)
    except (NotImplementedError, RuntimeError):  # not the main thread, e.g. in-process tests
        pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
