"""Which bundles may be served: signed by a trusted key (when keys are set), and not a
downgrade of the version a tenant serves or, with signatures, has ever served.

The reloader asks `verify` before a bundle's policies are parsed and `admit` once its
version is known; a refusal is a `BundleError`, so a refused bundle is a failed load (at
start-up) or a failed reload (the last good bundle keeps serving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pdp import signing
from pdp.bundle import MANIFEST, read_manifest
from pdp.bundle_files import BundleFiles
from pdp.errors import BundleError, BundleProblem
from pdp.model import BundleVersion
from pdp.versions import STATE_FILE, Served, VersionState, compare, downgrade


@dataclass(frozen=True)
class Admission:
    keys: tuple[signing.PublicKey, ...] = ()  # none: bundles need no signature
    allow_rollback: bool = False
    # Highest versions served, kept across restarts; only with keys: without signatures
    # anyone who can write a bundle can also give it a higher version, so a record on
    # disk would stop no one.
    state: VersionState | None = None
    # Refuse signatures that name no tenant: without it such a signature is good for any
    # tenant, so one tenant's signed bundle placed in another's source would be served.
    require_tenant: bool = False

    @staticmethod
    def of(
        keys: Sequence[Path], allow_rollback: bool, data_dir: Path, require_tenant: bool = False
    ) -> Admission:
        """From the settings; ValueError naming the file for a bad key or state file."""
        loaded = tuple(signing.load_public_key(k) for k in keys)
        state = VersionState(data_dir / STATE_FILE) if loaded else None
        return Admission(loaded, allow_rollback, state, require_tenant)

    def verify(self, files: BundleFiles, tenant: str | None = None) -> signing.Verified | None:
        """The good signature of `files` (None when no keys are configured); BundleError if
        keys are configured and no configured key signed exactly these files, for `tenant`
        when given (see `signing.verify`)."""
        if not self.keys:
            return None
        manifest = read_manifest(files)
        return signing.verify(
            files, manifest.name, manifest.version, self.keys, tenant, self.require_tenant
        )

    def admit(
        self, tenant: str, source: str, new: BundleVersion, active: BundleVersion | None
    ) -> None:
        """BundleError if `new` would be a downgrade of what `tenant` serves or served."""
        if self.allow_rollback:
            return
        floors: list[tuple[Served, str]] = []
        if active is not None:
            floors.append((Served(active.version, active.digest), "the version being served"))
        recorded = self.state.highest(tenant) if self.state else None
        if recorded is not None and self.state is not None:
            floors.append((recorded, f"the highest served (recorded in {self.state.path})"))
        for floor, what in floors:
            reason = downgrade(new.version, floor.version, what)
            if reason is None and self.keys:
                reason = self._other_build(new, floor, what)
            if reason is not None:
                raise BundleError(source, [BundleProblem(MANIFEST, reason)])

    @staticmethod
    def _other_build(new: BundleVersion, floor: Served, what: str) -> str | None:
        """With signatures, an equal version (`1.1` = `1.1.0+rebuild`) must be the same
        build: another signed build of it may be a superseded one (signed before a policy
        fix) replayed. Without signatures a writer can bump the version anyway, so editing
        a bundle in place under its version stays allowed there."""
        if compare(new.version, floor.version) != 0:
            return None
        if floor.digest is None or floor.digest == new.digest:
            return None  # an old state file knows no digest: the version rule alone
        return (
            f"version {new.version} equals {floor.version}, {what}, but its content differs "
            f"({new.digest[:19]} vs {floor.digest[:19]}): another build of a served "
            "version, refused unless allow_bundle_rollback is set"
        )

    def served(self, tenant: str, version: BundleVersion) -> None:
        if self.state is not None:
            self.state.record(tenant, version.version, version.digest)
