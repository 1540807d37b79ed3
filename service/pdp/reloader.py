"""Build snapshots off the request path and swap them in; keep the last good bundle.

A tenant whose new bundle fails for any reason (a refused bundle, a file vanishing
mid-read, an unreadable directory) keeps serving its previous one, and so does a
tenant whose source disappeared; each failure is logged with the tenant and path
and recorded in `status`, and reported to `pdp.metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pdp.admission import Admission
from pdp.bundle import Bundle, compile_bundle
from pdp.bundle_files import SIGNATURE_FILE, BundleFiles
from pdp.engine import Engine, Snapshot
from pdp.errors import BundleError, BundleProblem
from pdp.freshness import Freshness
from pdp.metrics import Metrics, NoMetrics
from pdp.model import BundleVersion
from pdp.read_depth import DEFAULT_SLICE_DEPTH
from pdp.tenants import BundleSources, TenantSource

log = logging.getLogger(__name__)

MAX_READS = 5  # reads of a changing bundle before giving up until its next change
# A refusal as logged and kept in `status`: every reload attempt logs it again, so a
# bundle of thousands of bad policies must not write megabytes each time it changes.
MAX_LOGGED = 16 * 1024


@dataclass(frozen=True)
class TenantStatus:
    ok: bool  # False while the last attempt failed (an older bundle may still be served)
    version: BundleVersion | None  # the version being served
    error: str | None
    at: float  # time.time() of the last attempt
    failures: int = 0  # failed attempts since start
    loaded_at: float = 0.0  # time.time() when the served version was first loaded


class Reloader:
    def __init__(
        self,
        engine: Engine,
        sources: BundleSources,
        metrics: Metrics | None = None,
        slice_depth: int = DEFAULT_SLICE_DEPTH,
        *,
        admission: Admission | None = None,
        freshness: Freshness | None = None,
    ) -> None:
        self._engine = engine
        self._slice_depth = slice_depth  # policies reading deeper are refused
        # Signatures and no downgrade (`pdp.admission`); none: any valid bundle is served.
        self._admission = admission or Admission(allow_rollback=True)
        self._freshness = freshness  # told of every successful (re)load
        self._metrics = metrics or NoMetrics()
        self._sources = sources
        self._lock = threading.Lock()  # one reload at a time; swaps never interleave
        self._status: dict[str, TenantStatus] = {}
        self._ignored: set[str] = set()  # bundles_dir entries already warned about
        self._unreadable: str | None = None  # why bundles_dir could not be listed, last time

    @property
    def status(self) -> Mapping[str, TenantStatus]:
        return dict(self._status)

    @property
    def serving(self) -> bool:
        """At least one tenant has a bundle to decide with."""
        snapshot = self._engine.snapshot
        return bool(snapshot and snapshot.bundles)

    def load_all(self) -> None:
        """Start-up: every bundle must load, else BundleError listing all problems of all."""
        errors = self.reload()
        if errors:
            problems = [
                BundleProblem(f"{e.source}/{p.file}", p.message, p.line, p.policy_id)
                for e in errors
                for p in e.problems
            ]
            raise BundleError(", ".join(e.source for e in errors), problems)

    def reload(self, tenants: set[str] | None = None) -> list[BundleError]:
        """Rebuild the given tenants (all when None), swap once, return the failures.

        Tenants are never dropped: one whose source vanished or cannot be told apart from
        another (a name conflict) keeps the bundle it serves."""
        with self._lock:
            found = self._sources.scan()
            current = self._engine.snapshot
            bundles: dict[str, Bundle] = dict(current.bundles) if current else {}
            failures: list[BundleError] = []
            if found.unreadable and found.unreadable != self._unreadable:  # said once
                log.error("bundles_dir: %s; its tenants keep their bundles", found.unreadable)
            self._unreadable = found.unreadable
            for name in sorted(set(found.ignored) - self._ignored):  # each said once
                log.warning("bundles_dir: ignoring %r: not a tenant name", name)
            self._ignored = set(found.ignored)
            for tenant, message in sorted(found.conflicts.items()):
                self._failed(tenant, message, bundles.get(tenant))
                failures.append(BundleError(f"tenant {tenant}", [BundleProblem("", message)]))
            for tenant in sorted(bundles.keys() - found.sources.keys() - found.conflicts.keys()):
                self._vanished(tenant, bundles[tenant])
            wanted = found.sources.keys() if tenants is None else tenants & found.sources.keys()
            shared = len(found.sources) > 1  # other tenants served: unbound signatures risk
            for tenant in sorted(wanted):
                source = found.sources[tenant]
                try:
                    bundles[tenant] = self._build(tenant, source, bundles.get(tenant), shared)
                except BundleError as exc:
                    failures.append(exc)
                    self._failed(tenant, exc.message, bundles.get(tenant))
                except Exception as exc:  # e.g. OSError from a file vanishing mid-read
                    problem = BundleProblem(str(source.path), f"cannot read: {exc!r}")
                    error = BundleError(str(source.path), [problem])
                    failures.append(error)
                    self._failed(tenant, error.message, bundles.get(tenant))
            if current is None or not _same(current.bundles, bundles):
                self._engine.swap(Snapshot.of(bundles))
            return failures

    def _read_stable(self, source: TenantSource) -> BundleFiles:
        """Read until two consecutive reads agree, so a bundle being written file by file
        is not loaded half old, half new (a writer slower than the reads still can be:
        publish atomically, see README)."""
        files = self._sources.read(source)
        for _ in range(MAX_READS - 1):
            again = self._sources.read(source)
            if _same_read(again, files):
                return again
            files = again
        message = f"still changing after {MAX_READS} reads; not loaded"
        raise BundleError(str(source.path), [BundleProblem(str(source.path), message)])

    def _build(
        self, tenant: str, source: TenantSource, previous: Bundle | None, shared: bool = False
    ) -> Bundle:
        """`shared`: other tenants are served too (an unbound signature is then a risk)."""
        files = self._read_stable(source)
        # Verified at every read, before anything parses the policies: an unchanged digest
        # under a changed signature must be refused too.
        verified = self._admission.verify(files, tenant)
        if previous is not None and previous.version.digest == files.digest:
            bundle = previous  # unchanged content: keep the parsed handles
        else:
            bundle = compile_bundle(files, self._slice_depth)
            self._admission.admit(
                tenant, str(source.path), bundle.version, previous.version if previous else None
            )
            log.info(
                "tenant %s: serving bundle %s version %s (%s) from %s (%s)",
                tenant,
                bundle.version.name,
                bundle.version.version,
                bundle.version.digest[:19],
                source.path,
                source.origin,
            )
            if verified is not None and not verified.tenants and shared:
                # Said per new bundle, not per re-read: the setting that closes it is named.
                log.warning(
                    "tenant %s: bundle %s is signed for any tenant: another tenant's signed "
                    "bundle would be accepted here too; sign with `pdp bundle sign --tenant "
                    "%s` and set require_tenant_bound_signatures",
                    tenant,
                    bundle.version.name,
                    tenant,
                )
        old = self._status.get(tenant)
        now = time.time()
        same = old is not None and old.version == bundle.version
        self._status[tenant] = TenantStatus(
            True,
            bundle.version,
            None,
            now,
            old.failures if old else 0,
            old.loaded_at if old is not None and same else now,
        )
        self._metrics.bundle_loaded(tenant, bundle)
        self._admission.served(tenant, bundle.version)
        if self._freshness is not None:
            self._freshness.confirm(tenant)
        return bundle

    def _vanished(self, tenant: str, kept: Bundle) -> None:
        old = self._status.get(tenant)
        message = "bundle source vanished"
        if old is None or old.error != message:  # said once, not at every reload
            self._failed(tenant, message, kept)

    def _failed(self, tenant: str, message: str, kept: Bundle | None) -> None:
        old = self._status.get(tenant)
        if len(message) > MAX_LOGGED:
            cut = message.rfind("\n", 0, MAX_LOGGED)
            cut = cut if cut > 0 else MAX_LOGGED
            more = len(message) - cut
            message = f"{message[:cut]}\n  ... {more} more characters; `pdp validate` lists all"
        keeping = f"keeping version {kept.version.version}" if kept else "no version to serve"
        log.error("tenant %s: bundle refused, %s: %s", tenant, keeping, message)
        self._metrics.reload_failed(tenant)
        self._status[tenant] = TenantStatus(
            False,
            kept.version if kept else None,
            message,
            time.time(),
            (old.failures if old else 0) + 1,
            old.loaded_at if old else 0.0,
        )


def _same_read(a: BundleFiles, b: BundleFiles) -> bool:
    # The digest leaves the signature out: a signature changing between reads is a change.
    return a.digest == b.digest and a.files.get(SIGNATURE_FILE) == b.files.get(SIGNATURE_FILE)


def _same(a: Mapping[str, Bundle], b: Mapping[str, Bundle]) -> bool:
    return a.keys() == b.keys() and all(a[t] is b[t] for t in a)
