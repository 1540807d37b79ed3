"""Build snapshots off the request path and swap them in; keep the last good bundle.

A tenant whose new bundle fails keeps serving its previous one; the failure is
logged and recorded in `status` (exported as metrics by the telemetry layer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pdp.bundle import Bundle, compile_bundle
from pdp.bundle_files import ARCHIVE_SUFFIXES, read_bundle_files
from pdp.engine import Engine, Snapshot
from pdp.errors import BundleError, BundleProblem
from pdp.model import BundleVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantStatus:
    ok: bool  # False while the last attempt failed (an older bundle may still be served)
    version: BundleVersion | None  # the version being served
    error: str | None
    at: float  # time.time() of the last attempt
    failures: int = 0  # failed attempts since start


class BundleSources:
    """Which tenants exist and where their bundles are: explicit ones and a scanned directory."""

    def __init__(self, bundles: Mapping[str, Path], bundles_dir: Path | None = None) -> None:
        self._bundles = dict(bundles)
        self._dir = bundles_dir

    def resolve(self) -> dict[str, Path]:
        found = dict(self._bundles)
        if self._dir is not None:
            for p in sorted(self._dir.iterdir()):
                name = p.name
                for suffix in ARCHIVE_SUFFIXES:
                    name = name.removesuffix(suffix)
                if not p.name.startswith(".") and (p.is_dir() or name != p.name):
                    found.setdefault(name, p)
        return found

    def watch_paths(self) -> list[Path]:
        # An archive is usually replaced by a rename, which a watch on the file itself
        # would miss: watch the directory it is in.
        paths = {p.resolve() if p.is_dir() else p.resolve().parent for p in self._bundles.values()}
        if self._dir is not None:
            paths.add(self._dir.resolve())
        return sorted(paths)

    def tenants_for(self, changed: Iterable[Path]) -> set[str] | None:
        """Tenants whose bundle holds a changed path; None means rescan all tenants."""
        tenants: set[str] = set()
        resolved = {t: p.resolve() for t, p in self.resolve().items()}
        scanned = self._dir.resolve() if self._dir is not None else None
        for path in changed:
            owners = [t for t, root in resolved.items() if path == root or root in path.parents]
            if owners:
                tenants.update(owners)
            elif scanned is not None and scanned in path.parents:
                return None  # a bundle appeared in or vanished from bundles_dir
        return tenants


class Reloader:
    def __init__(self, engine: Engine, sources: BundleSources) -> None:
        self._engine = engine
        self._sources = sources
        self._lock = threading.Lock()  # one reload at a time; swaps never interleave
        self._status: dict[str, TenantStatus] = {}

    @property
    def status(self) -> Mapping[str, TenantStatus]:
        return dict(self._status)

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
        """Rebuild the given tenants (all when None), swap once, return the failures."""
        with self._lock:
            paths = self._sources.resolve()
            current = self._engine.snapshot
            bundles: dict[str, Bundle] = {
                t: b for t, b in (current.bundles.items() if current else ()) if t in paths
            }
            failures: list[BundleError] = []
            for tenant in sorted(paths if tenants is None else tenants & paths.keys()):
                try:
                    bundles[tenant] = self._build(tenant, paths[tenant], bundles.get(tenant))
                except BundleError as exc:
                    failures.append(exc)
                    self._failed(tenant, exc, bundles.get(tenant))
            self._engine.swap(Snapshot.of(bundles))
            return failures

    def _build(self, tenant: str, path: Path, previous: Bundle | None) -> Bundle:
        files = read_bundle_files(path)
        if previous is not None and previous.version.digest == files.digest:
            bundle = previous  # unchanged content: keep the parsed handles
        else:
            bundle = compile_bundle(files)
            log.info(
                "tenant %s: serving bundle %s version %s (%s)",
                tenant,
                bundle.version.name,
                bundle.version.version,
                bundle.version.digest[:19],
            )
        old = self._status.get(tenant)
        self._status[tenant] = TenantStatus(
            True, bundle.version, None, time.time(), old.failures if old else 0
        )
        return bundle

    def _failed(self, tenant: str, exc: BundleError, kept: Bundle | None) -> None:
        old = self._status.get(tenant)
        keeping = f"keeping version {kept.version.version}" if kept else "no version to serve"
        log.error("tenant %s: bundle refused, %s: %s", tenant, keeping, exc.message)
        self._status[tenant] = TenantStatus(
            False,
            kept.version if kept else None,
            exc.message,
            time.time(),
            (old.failures if old else 0) + 1,
        )
