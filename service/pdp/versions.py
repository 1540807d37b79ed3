"""Bundle versions: their order (no downgrade) and the highest seen per tenant, on disk.

Versions are compared semver-like: `[v]N(.N)*[-PRERELEASE][+BUILD]`. Numeric parts are
compared as numbers, a missing part counts as 0 (`1.2` = `1.2.0`), a pre-release is lower
than its release and pre-release identifiers compare as semver says (numeric ones as
numbers and below alphanumeric ones, a shorter list first); build metadata is ignored.
Versions of any other form have no order: two different ones cannot be told apart from a
downgrade, so a change between them is refused unless rollback is allowed (fail closed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SEMVER = re.compile(
    r"v?(?P<nums>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)
MAX_STATE_BYTES = 1024 * 1024  # versions of every tenant; a tenant's entry is ~100 bytes
STATE_FILE = "bundle_versions.json"

_Key = tuple[tuple[int, ...], int, tuple[tuple[int, int, str], ...]]


def _key(version: str, width: int) -> _Key | None:
    m = _SEMVER.fullmatch(version)
    if m is None:
        return None
    nums = tuple(int(n) for n in m["nums"].split("."))
    nums += (0,) * (width - len(nums))
    pre = m["pre"]
    if pre is None:
        return nums, 1, ()  # a release sorts after each of its pre-releases
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return nums, 0, ids


def compare(a: str, b: str) -> int | None:
    """-1, 0 or 1 as `a` is lower than, equal to or higher than `b`; None if they differ
    and either is not semver-like (no order)."""
    if a == b:
        return 0
    width = max(a.count("."), b.count(".")) + 1
    ka, kb = _key(a, width), _key(b, width)
    if ka is None or kb is None:
        return None
    return (ka > kb) - (ka < kb)


def downgrade(new: str, floor: str, what: str) -> str | None:
    """Why `new` may not follow `floor` (`what` it is, for the message) without rollback
    allowed; None if it may."""
    order = compare(new, floor)
    if order is None:
        return (
            f"version {new!r} cannot be ordered against {floor!r}, {what} (not semver-like), "
            "so it may be a downgrade: refused unless allow_bundle_rollback is set"
        )
    if order < 0:
        return (
            f"version {new} is lower than {floor}, {what}: a downgrade, refused unless "
            "allow_bundle_rollback is set"
        )
    return None


@dataclass(frozen=True, slots=True)
class Served:
    """The highest version a tenant served and the digest of the build served under it
    (None in a state file written before digests were recorded)."""

    version: str
    digest: str | None = None


def _entry(value: object) -> Served | None:
    """A state file entry: `"1.2.0"` (older files) or `{"version": ..., "digest": ...}`."""
    if isinstance(value, str):
        return Served(value)
    if isinstance(value, dict) and set(value) == {"version", "digest"}:
        version, digest = value["version"], value["digest"]
        if isinstance(version, str) and isinstance(digest, str):
            return Served(version, digest)
    return None


class VersionState:
    """The highest bundle version served per tenant and its build's digest, kept in
    `data_dir/bundle_versions.json` so that a restart with an old (validly signed) bundle,
    or another build of the same version, is refused too.

    An unreadable or malformed file is an error (`ValueError`), never an empty state: that
    would let a replay through."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._versions = self._read()

    def _read(self) -> dict[str, Served]:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ValueError(f"{self.path}: unreadable: {exc.strerror}") from None
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError(f"{self.path}: exceeds {MAX_STATE_BYTES} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{self.path}: not JSON ({exc})") from None
        entries = (
            {k: _entry(v) for k, v in data.items() if isinstance(k, str)}
            if isinstance(data, dict)
            else {}
        )
        if not isinstance(data, dict) or len(entries) != len(data) or None in entries.values():
            raise ValueError(
                f"{self.path}: not an object of tenant -> version string or "
                '{"version": ..., "digest": ...}'
            )
        return {k: v for k, v in entries.items() if v is not None}

    @property
    def versions(self) -> Mapping[str, Served]:
        return dict(self._versions)

    def highest(self, tenant: str) -> Served | None:
        return self._versions.get(tenant)

    def record(self, tenant: str, version: str, digest: str) -> None:
        """Remember `version` and its build's `digest` if the version is higher than the
        tenant's or equal to it (an equal one is only served when it is the same build or
        rollback is allowed), or the first; written atomically. A write failure is logged:
        the running process still refuses downgrades from memory, only a restart would
        forget."""
        with self._lock:
            old = self._versions.get(tenant)
            if old is not None and compare(version, old.version) not in (0, 1):
                return
            if old == Served(version, digest):
                return
            self._versions = {**self._versions, tenant: Served(version, digest)}
            on_disk = {
                k: {"version": v.version, "digest": v.digest} if v.digest else v.version
                for k, v in self._versions.items()
            }
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(on_disk, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, self.path)
            except OSError as exc:
                log.error("cannot record bundle version in %s: %s", self.path, exc)
