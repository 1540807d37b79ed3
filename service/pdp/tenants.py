"""Which tenants exist and where their bundles are: explicit ones and a scanned directory.

Tenants come from `bundles` (name -> path) and `bundles_dir` (every subdirectory or
`.tar.gz` in it); the built-in default is used only when neither is configured. Two
sources claiming one tenant name is a conflict, reported with both paths: at start-up
it is a settings error, later the tenant keeps what it serves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pdp.bundle_files import ARCHIVE_SUFFIXES, BundleFiles, read_bundle_files
from pdp.model import TENANT_NAME


@dataclass(frozen=True)
class TenantSource:
    path: Path
    origin: str  # for the log: "bundles", "bundles_dir DIR" or "built-in default"
    within: Path | None = None  # links out of this directory are refused (the bundles dir)


@dataclass(frozen=True)
class Tenants:
    sources: dict[str, TenantSource] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)  # tenant -> both paths
    unreadable: str | None = None  # why bundles_dir could not be listed
    ignored: tuple[str, ...] = ()  # bundles_dir entries whose name is no tenant name


class BundleSources:
    def __init__(
        self,
        bundles: Mapping[str, Path],
        bundles_dir: Path | None = None,
        *,
        builtin: Mapping[str, Path] | None = None,
        follow_symlinks: bool = False,
    ) -> None:
        """`builtin` tenants are served only when `bundles` and `bundles_dir` name none."""
        configured = bool(bundles) or bundles_dir is not None
        origin = "bundles" if configured else "built-in default"
        chosen = bundles if configured else builtin or {}
        self._bundles = {t: TenantSource(p, origin) for t, p in chosen.items()}
        self._dir = bundles_dir
        self.follow_symlinks = follow_symlinks

    def scan(self) -> Tenants:
        sources = dict(self._bundles)
        conflicts: dict[str, str] = {}
        ignored: list[str] = []
        if self._dir is None:
            return Tenants(sources)
        try:
            entries = sorted(self._dir.iterdir())
        except OSError as exc:
            return Tenants(sources, unreadable=f"cannot list {self._dir}: {exc.strerror}")
        for p in entries:
            # A directory is its name's tenant; an archive loses one suffix, as the file
            # was named: `x.tgz.tar.gz` is tenant `x.tgz`, never `x` (stripping every
            # suffix made two files one tenant), and a directory `x.tgz/` is `x.tgz`.
            is_dir = p.is_dir()
            name = p.name
            if not is_dir:
                name = next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.endswith(s)), name)
            if p.name.startswith(".") or not (name != p.name or is_dir):
                continue
            if not TENANT_NAME.fullmatch(name):
                # A name with a newline or a control character would forge log lines
                # and health service names: never a tenant (config refuses it too).
                ignored.append(p.name)
                continue
            if name in conflicts:
                conflicts[name] += f" and {p}"
            elif name in sources:
                conflicts[name] = f"tenant {name!r} is configured twice: {sources.pop(name).path}"
                conflicts[name] += f" and {p}"
            else:
                sources[name] = TenantSource(p, f"bundles_dir {self._dir}", within=self._dir)
        return Tenants(sources, conflicts, ignored=tuple(ignored))

    def read(self, source: TenantSource) -> BundleFiles:
        return read_bundle_files(
            source.path, follow_symlinks=self.follow_symlinks, within=source.within
        )

    def watch_paths(self) -> list[Path]:
        """Existing directories to watch (recursively) for every tenant's changes."""
        paths: set[str] = set()
        for source in self.scan().sources.values():
            p = source.path
            if p.is_dir():
                paths.add(os.path.realpath(p))
            if p.is_symlink() or not p.is_dir():
                # An archive, or a directory published by swapping a symlink, is replaced
                # by a rename, which a watch on the file itself would miss.
                paths.add(os.path.realpath(p.parent))
        if self._dir is not None:
            paths.add(os.path.realpath(self._dir))
        found = [Path(p) for p in paths if os.path.isdir(p)]
        # A recursive watch covers its subdirectories: watching those too would only
        # restart the watcher whenever a tenant appears in bundles_dir.
        return sorted(p for p in found if not any(q in p.parents for q in found))

    def tenants_for(self, changed: Iterable[Path]) -> set[str] | None:
        """Tenants whose bundle holds a changed path; None means rescan all tenants."""
        tenants: set[str] = set()
        roots = {t: _roots(s.path) for t, s in self.scan().sources.items()}
        scanned = Path(os.path.realpath(self._dir)) if self._dir is not None else None
        for path in changed:
            owners = [
                t for t, rs in roots.items() if any(path == r or r in path.parents for r in rs)
            ]
            if owners:
                tenants.update(owners)
            elif scanned is not None and scanned in path.parents:
                return None  # a bundle appeared in or vanished from bundles_dir
        return tenants


def _roots(path: Path) -> set[Path]:
    """Where events for a bundle appear: under its target, or at its (symlink) name."""
    return {Path(os.path.realpath(path)), Path(os.path.realpath(path.parent)) / path.name}
