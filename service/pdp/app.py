"""Composition root: settings -> engine, reloader, server; run until SIGTERM/SIGINT.

Phases: load every bundle (exit on failure) -> start gRPC -> SERVING -> watch and
reload -> on signal: NOT_SERVING, stop accepting, finish in-flight calls within
the grace period.

Calls are answered on the gRPC server's own worker threads; this module's asyncio loop,
on the main thread, only handles signals, file watching and reloads (compiled in a
worker thread and swapped in with one reference assignment), never a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from pdp.admission import Admission
from pdp.config import Settings
from pdp.decision_cache import DecisionCache
from pdp.decision_log import DecisionLogger, decision_logger
from pdp.engine import Engine
from pdp.entity_store import store_from_settings
from pdp.errors import BundleError, BundleProblem, NotReady
from pdp.freshness import Freshness
from pdp.grpc.convert import Limits
from pdp.grpc.entity_servicer import EntityServicer
from pdp.grpc.server import PdpServer
from pdp.grpc.tls import server_credentials
from pdp.jwt_identity import token_verifier
from pdp.kill_switch import STATE_FILE, KillSwitch
from pdp.metrics import Metrics, NoMetrics, multiprocess_dir
from pdp.metrics_server import MetricsListener, process_registry
from pdp.rate_limit import RateLimits
from pdp.reloader import Reloader, TenantStatus
from pdp.tracing import Tracing

if TYPE_CHECKING:
    from pdp.admin.guard import Guard
    from pdp.admin.server import AdminServer

log = logging.getLogger("pdp")


WATCH_RETRY_SECONDS = 1.0  # after the watcher failed, or while no watched path exists
QUIET_CAP_FACTOR = (
    20  # a bundle that never stops changing is reloaded after this many quiet periods
)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After the grace period: how long shutdown waits for cancelled calls to return before it
# leaves the entity store open rather than close it under one. A store call is short (a
# write of entity_write_max_entities entities takes well under a second).
JOIN_CALLS_SECONDS = 10.0


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        reuse_port: bool = False,
        tracing: Callable[[], Tracing] = Tracing.off,
    ) -> None:
        self.settings = settings
        self.reuse_port = reuse_port  # a `--workers` sibling shares the port
        # Started by `run`, so only a process that serves has an exporter thread.
        self.start_tracing = tracing
        self.freshness = (
            None if settings.max_bundle_age is None else Freshness(settings.max_bundle_age)
        )
        # Opened (and on first start created) here: a bad store URL or an unwritable data
        # directory fails before any port opens.
        self.store = store_from_settings(settings)
        # Read before the first decision: a switch set before a restart still applies.
        self.kill_switch = KillSwitch(
            settings.data_dir / STATE_FILE, settings.kill_switch_file, self._kill_switch_changed
        )
        self.engine = Engine(
            cache=_decision_cache(settings),
            store=self.store,
            kill_switch=self.kill_switch,
            freshness=self.freshness,
        )
        self.sources = settings.bundle_sources()
        # A `--workers` worker records into the supervisor's shared-memory directory and
        # the supervisor serves the scrape; a single process serves its own.
        self.shared_metrics = reuse_port and multiprocess_dir() is not None
        self.metrics: Metrics = (
            NoMetrics()
            if settings.metrics_listen == "off"
            else Metrics(multiprocess=self.shared_metrics)
        )
        if self.engine.cache is not None:
            self.metrics.export_counters(
                "decision_cache",
                self.engine.cache,
                ("hits", "misses", "evictions"),
                {"entries": "entries", "bytes": "bytes"},
            )
        self.metrics.kill_switches(k.scope.label() for k in self.kill_switch.active())
        try:
            admission = Admission.of(
                settings.bundle_verification_keys,
                settings.allow_bundle_rollback,
                settings.data_dir,
                settings.require_tenant_bound_signatures,
            )
        except ValueError as exc:  # the version state file: never read as empty
            raise BundleError(str(settings.data_dir), [BundleProblem("", str(exc))]) from exc
        self.reloader = Reloader(
            self.engine,
            self.sources,
            self.metrics,
            settings.entity_slice_depth,
            admission=admission,
            freshness=self.freshness,
        )
        self.tokens = token_verifier(settings)  # None: requests carrying a token are refused
        if self.tokens is not None:
            # A JWKS that stops refreshing leaves tokens signed by a rotated-in key refused.
            self.metrics.export_counters(
                "jwks", self.tokens.keys, ("refreshes", "refresh_failures")
            )
        self._server: PdpServer | None = None
        self._health_lock = threading.Lock()  # reloads (loop) vs. admin calls (their threads)
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: Guard | None = None  # the admin API's, once serving
        self.decision_log: DecisionLogger | None = None
        self._stop = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # keeps signal-started reloads alive

    def load(self) -> None:
        """Load every bundle, and the JWKS if tokens are configured; raises BundleError
        (with every problem) or KeySetError if any fails."""
        self.reloader.load_all()
        if self.tokens is not None:
            self.tokens.keys.load()

    async def reload(self, tenants: set[str] | None = None) -> None:
        async with self._reloading:
            try:
                # Compiling runs in a worker thread: the event loop keeps answering.
                await asyncio.to_thread(self.reloader.reload, tenants)
            except Exception:  # the reloader reports bundle failures itself; this is a bug
                log.exception("reload failed; the served bundles are unchanged")
            self._update_health()

    def _update_health(self) -> None:
        # SERVING only while some tenant can be decided; once draining, the health
        # servicer stays NOT_SERVING whatever is set here.
        with self._health_lock:
            snapshot = self.engine.snapshot
            tenants = snapshot.bundles.keys() if snapshot else set()
            stale: set[str] = set()
            if self.freshness is not None:
                stale = self.freshness.stale_tenants(tenants)
                self.metrics.staleness(tenants, stale)
            if self._server is not None:
                ks = self.kill_switch
                self._server.set_serving(
                    tenants,
                    killed={t for t in tenants if ks.tenant_reason(t)},
                    all_killed=ks.tenant_reason("") is not None,
                    stale=stale,
                )

    def _kill_switch_changed(self) -> None:
        self.metrics.kill_switches(k.scope.label() for k in self.kill_switch.active())
        self._update_health()

    # ------------------------------------------------- what the admin API acts on --
    def reload_now(self, tenants: set[str] | None) -> None:
        """Reload on the event loop (one reload at a time, health updated) and wait."""
        loop = self._loop
        if loop is None or self._draining:
            # Shutting down: the loop may close before it would run the reload.
            raise NotReady("the server is shutting down; not reloading")
        asyncio.run_coroutine_threadsafe(self.reload(tenants), loop).result()
        if self.reuse_port:
            # A `--workers` worker: the supervisor forwards SIGHUP to every worker, so the
            # others reload too (all tenants; unchanged bundles are kept by digest).
            os.kill(os.getppid(), signal.SIGHUP)

    def tenants(self) -> Mapping[str, TenantStatus]:
        status = dict(self.reloader.status)
        for tenant in self.sources.scan().sources.keys() - status.keys():
            status[tenant] = TenantStatus(False, None, "not loaded yet", 0.0)
        return status

    def serving(self, tenant: str | None) -> bool:
        snapshot = self.engine.snapshot
        if self._draining or snapshot is None or not snapshot.bundles:
            return False
        if tenant is None:
            return self.kill_switch.tenant_reason("") is None
        if self.freshness is not None and self.freshness.stale(tenant) is not None:
            return False
        return tenant in snapshot.bundles and self.kill_switch.tenant_reason(tenant) is None

    def request_stop(self) -> None:
        if self._stop.is_set():
            log.info("already stopping")  # a second Ctrl-C, or a forwarded copy of the first
        self._stop.set()

    def request_reload(self) -> None:
        if self._stop.is_set():
            log.info("SIGHUP while stopping: ignored")
            return
        log.info("SIGHUP: reloading every bundle")
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, on_listening: Callable[[int], None] | None = None) -> None:
        with self._metrics_exported():  # first: a taken metrics port fails before gRPC opens
            await self._serve(on_listening)

    async def _serve(self, on_listening: Callable[[int], None] | None) -> None:
        s = self.settings
        tracing = self.start_tracing()
        self.decision_log = decision_logger(s, worker=self.reuse_port)
        if self.decision_log is not None:
            self.metrics.export_counters("decision_log", self.decision_log, ("written", "dropped"))
        server = PdpServer(
            self.engine,
            s.listen,
            max_batch_items=s.max_batch_items,
            max_message_bytes=s.max_message_bytes,
            limits=Limits.of(s),
            max_concurrent_streams=s.max_concurrent_streams,
            max_concurrent_rpcs=s.max_concurrent_rpcs,
            threads=s.threads,
            max_check_streams=s.check_streams,
            reuse_port=self.reuse_port,
            tracing=tracing,
            decision_log=self.decision_log,
            metrics=self.metrics,
            credentials=server_credentials(s),  # TlsConfigError names the setting
            rate_limits=RateLimits.of(s),
            tokens=self.tokens,
        )
        self._server = server
        self._loop = asyncio.get_running_loop()
        # Before any port serves: a refused admin setup exits.
        admin = self._admin(server, self._entity_service(tracing))
        self._update_health()  # before the first call: the health servicer starts SERVING
        server.start()
        # Before "listening on": from that line on, callers (and tests) may send SIGTERM,
        # and nothing slow may delay the signal handlers installed below.
        if admin is not None:
            admin.start()
            log.info("admin API on %s:%d", s.admin_listen.rsplit(":", 1)[0], admin.port)
        elif s.admin_on_decision_port:
            log.info("admin API on the decision port")
        host = s.listen.rsplit(":", 1)[0]
        snapshot = self.engine.snapshot
        tenants = sorted(snapshot.bundles) if snapshot else []
        log.info(
            "listening on %s:%d (%s), tenants: %s",
            host,
            server.port,
            "tls" if s.tls_cert_file else "plaintext",
            ", ".join(tenants),
        )
        if on_listening:
            on_listening(server.port)
        watcher = asyncio.create_task(self._watch()) if s.watch else None
        poller = asyncio.create_task(self._poll_kill_switch())
        confirmer = asyncio.create_task(self._confirm()) if self.freshness else None
        if self.tokens is not None:
            self.tokens.keys.start()  # refreshes the JWKS off the request path
        # Signals stay handled until the end: a second Ctrl-C or a SIGHUP while draining
        # must not kill the process with calls in flight.
        with _signals(self):
            await self._stop.wait()
            try:
                self._draining = True
                server.enter_shutdown()  # health NOT_SERVING from here on
                if admin is not None:
                    admin.stop(0)  # nothing to drain: a client retries an admin call
                for task in (poller, watcher, confirmer):
                    if task:
                        task.cancel()
                await asyncio.gather(
                    *(t for t in (poller, watcher, confirmer) if t),
                    *self._tasks,
                    return_exceptions=True,
                )
                if s.drain_seconds:
                    log.info(
                        "shutting down: NOT_SERVING, still answering for %.1fs", s.drain_seconds
                    )
                    await asyncio.sleep(s.drain_seconds)
            finally:
                log.info("shutting down: draining for up to %.1fs", s.shutdown_grace_seconds)
                await asyncio.to_thread(server.stop(s.shutdown_grace_seconds).wait)
                # Cancelled calls may still be running on their threads (grpcio cannot
                # stop Python code), some inside the store: it closes only once they have
                # returned. Closing it under a sqlite3 call could crash the process.
                calls_ended = await asyncio.to_thread(self._join_calls, server, admin)
                if self.tokens is not None:
                    await asyncio.to_thread(self.tokens.keys.stop)
                tracing.shutdown()  # export the queued spans, within a bound
                if self.decision_log is not None:
                    # Every answered call's records are written before the process exits.
                    await asyncio.to_thread(self.decision_log.close)
                if calls_ended:
                    self.store.close()
                else:  # the OS closes it at exit; SQLite's WAL keeps the file whole
                    log.warning(
                        "shutting down: calls still running after %.0fs; the entity store "
                        "is left open",
                        JOIN_CALLS_SECONDS,
                    )
                if self._guard is not None:
                    self._guard.audit.close()
        log.info("stopped")

    @staticmethod
    def _join_calls(server: PdpServer, admin: AdminServer | None) -> bool:
        """Wait, JOIN_CALLS_SECONDS in all, for both servers' running calls to return."""
        deadline = time.monotonic() + JOIN_CALLS_SECONDS
        ended = server.join(JOIN_CALLS_SECONDS)
        if admin is not None:
            ended = admin.join(max(0.0, deadline - time.monotonic())) and ended
        return ended

    def _entity_service(self, tracing: Tracing) -> EntityServicer | None:
        if not self.settings.entity_service:
            return None
        return EntityServicer(
            self.engine,
            self.store,
            max_write_entities=self.settings.entity_write_max_entities,
            tracing=tracing,
            metrics=self.metrics,
        )

    def _admin(self, server: PdpServer, entities: EntityServicer | None) -> AdminServer | None:
        """The admin API, and the EntityService beside it: on their own server (returned,
        not started yet), or on `server`. Both behind the same guard: the store's entities
        are facts decisions trust, so writing them is an admin act (issue 10), and a caller
        of the decision port cannot grant itself a role."""
        from pdp.admin.server import AdminServer, add_admin_service, guard_of, refuse_plaintext

        s = self.settings
        if s.admin_listen == "off" and not s.admin_on_decision_port:
            if entities is not None:
                log.warning("admin_listen is off: the EntityService is not served")
            return None
        guard = self._guard = guard_of(s)
        credentials = server_credentials(s)
        if not s.admin_on_decision_port:
            # The decision port's TLS settings: one certificate, one client CA, one reload.
            return AdminServer(
                s.admin_listen, self, guard, credentials, entities, s.max_message_bytes
            )
        # Instead of its own port: on the decision port, still behind the guard.
        refuse_plaintext("listen (admin_on_decision_port)", s.listen, credentials)
        add_admin_service(server.server, self, guard, entities)
        return None

    async def _poll_kill_switch(self) -> None:
        """Apply changes to the kill switch files (the flag, and with `--workers` the state
        written by worker 0) within `kill_switch_poll_ms`, whatever else is going on."""
        interval = self.settings.kill_switch_poll_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.kill_switch.refresh()
            except Exception:  # never stop watching: the flag is the way in when all else fails
                log.exception("kill switch: checking its files failed; checking again")

    @contextlib.contextmanager
    def _metrics_exported(self) -> Iterator[None]:
        if isinstance(self.metrics, NoMetrics):
            yield
        elif self.shared_metrics:
            stop = threading.Event()
            syncer = self.metrics.start_sync(stop)
            try:
                yield
            finally:
                stop.set()
                syncer.join(timeout=5)
        else:
            listener = MetricsListener(self.settings.metrics_listen, process_registry(self.metrics))
            try:
                yield
            finally:
                listener.close()

    async def _confirm(self) -> None:
        """`max_bundle_age`: re-read every source each `bundle_confirm_interval_seconds` (a
        reload: an unchanged bundle is confirmed by its digest and signature, a changed one
        by loading it), and mark tenants stale in health and metrics the moment their age
        passes, not at the next re-read."""
        assert self.freshness is not None
        interval = self.settings.bundle_confirm_interval_seconds
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while True:
            if loop.time() >= due:
                await self.reload()  # updates health
                due = loop.time() + interval
            else:
                self._update_health()
            expiry = self.freshness.next_expiry()
            wake = due if expiry is None else min(due, loop.time() + expiry)
            # Just past the expiry, so the tenant is stale when looked at.
            await asyncio.sleep(max(0.0, wake - loop.time()) + 0.01)

    async def _watch(self) -> None:
        """Watch until cancelled; whatever fails, log it and watch again."""
        while True:
            try:
                await self._watch_paths()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bundle watcher failed; watching again in %.0fs", WATCH_RETRY_SECONDS)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _watch_paths(self) -> None:
        """Watch the current paths; return when they change (a symlink swapped, a directory
        created, removed or replaced by a new one of the same name, which the old watch
        would not see into) so that the caller watches the new ones."""
        paths = self.sources.watch_paths()
        identity = _identity(paths)
        if not paths:
            log.warning(
                "no bundle path exists to watch; looking again in %.0fs", WATCH_RETRY_SECONDS
            )
            await asyncio.sleep(WATCH_RETRY_SECONDS)
            await self.reload()
            return
        quiet = self.settings.reload_debounce_ms
        armed = False
        async with contextlib.aclosing(
            watchfiles.awatch(
                *paths,
                # Yield only after `quiet` ms without a change (a writer's burst is one
                # reload), at the latest after QUIET_CAP_FACTOR times that.
                step=quiet,
                debounce=quiet * QUIET_CAP_FACTOR,
                recursive=True,
                rust_timeout=500,
                yield_on_timeout=True,  # the first (empty) yield tells us the watcher is armed
            )
        ) as batches:
            async for changes in batches:
                if not armed:
                    armed = True
                    log.info("watching %d path(s) for bundle changes", len(paths))
                    # Catch edits made before the watcher was armed; unchanged bundles are
                    # recognised by digest and not recompiled.
                    await self.reload()
                    continue
                if _identity(self.sources.watch_paths()) != identity:
                    log.info("watched paths changed; reloading every tenant")
                    await self.reload()
                    return
                if not changes:
                    continue
                changed = {Path(p) for _, p in changes}
                tenants = self.sources.tenants_for(changed)
                if tenants is not None and not tenants:
                    continue  # a file beside an archive, not part of any bundle
                log.info(
                    "bundle files changed; reloading %s", sorted(tenants) if tenants else "all"
                )
                await self.reload(tenants)
                if changed & set(paths):
                    # A watched directory itself was removed or replaced: its watch is gone
                    # (a new one may even reuse the inode number), so watch afresh.
                    return


def _decision_cache(s: Settings) -> DecisionCache | None:
    if not s.decision_cache:
        return None
    return DecisionCache(
        s.decision_cache_entries, s.decision_cache_bytes, s.decision_cache_ttl_seconds
    )


def _identity(paths: list[Path]) -> list[tuple[Path, int, int]]:
    """Each path with its inode: a directory recreated under the same name is a new one."""
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue  # gone: the set differs, so the watcher restarts
        out.append((p, st.st_dev, st.st_ino))
    return out


@contextlib.contextmanager
def _signals(app: App) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        for sig in STOP_SIGNALS:
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
            # The server has stopped and the process is about to exit: a late Ctrl-C or
            # SIGHUP must not turn a clean exit into a traceback or a kill.
            signal.signal(sig, signal.SIG_IGN)
