"""The kill switch: deny every decision in a scope (the whole PDP, a tenant, or one action
of a tenant) before any policy or cached decision is looked at.

Two sources, merged:

- admin entries (`AdminService.SetKillSwitch`), persisted in a state file under `data_dir`
  (written atomically: temporary file, fsync, rename, fsync of the directory) so that they
  survive a restart; with `--workers`, the other workers read them from that file;
- the `kill_switch_file` flag, for when the admin side is down: while the file exists its
  content applies (one entry or a list, as JSON; an empty file kills the whole PDP).

Both files are re-read when their stat changes (`refresh`, polled by the app). A file that
cannot be read or parsed kills the whole PDP, naming the file and the problem: a switch
whose state is unknown fails closed, never open. Nothing here knows about gRPC.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdp.errors import InvalidRequest, NotReady
from pdp.model import DEFAULT_TENANT, TENANT_NAME, TYPE_NAME, EntityRef

log = logging.getLogger(__name__)

STATE_FILE = "kill_switch.json"  # under data_dir
MAX_REASON = 1000  # characters; a reason travels in every denied response and log record
MAX_ACTION_ID = 1000
MAX_ENTRIES = 1000  # per source: each is a metrics label and a dictionary entry
MAX_FILE_BYTES = 1024 * 1024
PREFIX = "kill switch: "

Key = tuple[str, str, str]  # (tenant, action type, action id); "" where the scope is wider
EVERYTHING: Key = ("", "", "")
Stamp = tuple[int, int, int, int] | None  # (dev, inode, size, mtime_ns); None: no file


@dataclass(frozen=True, slots=True)
class Scope:
    tenant: str = ""  # "" = every tenant
    action: EntityRef | None = None  # only with a tenant

    @property
    def key(self) -> Key:
        a = self.action
        return (self.tenant, a.type, a.id) if a else (self.tenant, "", "")

    def label(self) -> str:
        """For metrics and messages: `pdp`, `tenant=acme`, `tenant=acme,action=Action::"x"`."""
        if not self.tenant:
            return "pdp"
        return f"tenant={self.tenant}" + (f",action={self.action}" if self.action else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tenant:
            out["tenant"] = self.tenant
        if self.action:
            out["action"] = self.action.as_cedar()
        return out

    @staticmethod
    def of(field: str, tenant: str, action: EntityRef | None) -> Scope:
        """A validated scope; InvalidRequest names `field` (e.g. `scope.tenant`)."""
        if tenant and not TENANT_NAME.fullmatch(tenant):
            raise InvalidRequest(f"{field}.tenant", f"must match {TENANT_NAME.pattern}")
        if action is not None:
            if not tenant:
                raise InvalidRequest(f"{field}.tenant", "required with an action")
            if not TYPE_NAME.fullmatch(action.type):
                raise InvalidRequest(f"{field}.action.type", "not a Cedar entity type name")
            if not action.id or len(action.id) > MAX_ACTION_ID or not action.id.isprintable():
                raise InvalidRequest(
                    f"{field}.action.id", f"must be 1-{MAX_ACTION_ID} printable characters"
                )
        return Scope(tenant, action)


@dataclass(frozen=True, slots=True)
class Kill:
    scope: Scope
    reason: str
    source: str  # "admin" or "file"
    set_at: float = 0.0
    set_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope.to_json(),
            "reason": self.reason,
            "set_at": self.set_at,
            "set_by": self.set_by,
        }


def check_reason(field: str, reason: str) -> str:
    if not reason.strip():
        raise InvalidRequest(field, "required")
    if len(reason) > MAX_REASON or not reason.isprintable():
        # No newlines or control characters: a reason reaches text logs and responses.
        raise InvalidRequest(field, f"must be at most {MAX_REASON} printable characters")
    return reason


class KillSwitch:
    """The active kill switches. `reason` is on the decision path: one reference read when
    nothing is killed, three dictionary lookups otherwise."""

    def __init__(
        self,
        state_file: Path | None,
        flag_file: Path | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._state_file = state_file
        self._flag_file = flag_file
        self.on_change = on_change
        self._lock = threading.Lock()  # admin writes vs. each other and refreshes
        self._admin: dict[Key, Kill] = {}
        self._admin_problem: Kill | None = None  # the state file could not be read
        self._file: dict[Key, Kill] = {}
        self._stamps: tuple[Stamp, Stamp] = (None, None)
        self._index: Mapping[Key, str] = {}  # key -> "kill switch: <reason>", replaced whole
        with self._lock:
            self._reread(force=True)

    # ------------------------------------------------------------------ decision path --
    def reason(
        self, tenant: str, action: EntityRef, groups: Iterable[tuple[str, str]] = ()
    ) -> str | None:
        """Why a decision of `tenant` on `action` must be denied, or None. `groups`: the
        action groups `action` is in (the schema's): a switch on a group covers them."""
        index = self._index
        if not index:
            return None
        t = tenant or DEFAULT_TENANT
        found = (
            index.get(EVERYTHING)
            or index.get((t, "", ""))
            or index.get((t, action.type, action.id))
        )
        if found is None:
            for group_type, group_id in groups:
                found = index.get((t, group_type, group_id))
                if found is not None:
                    break
        return found

    @property
    def any_active(self) -> bool:
        return bool(self._index)

    def tenant_reason(self, tenant: str) -> str | None:
        """The switch covering the whole tenant (the PDP-wide one included), or None."""
        index = self._index
        return index.get(EVERYTHING) or index.get((tenant, "", "")) if index else None

    # ------------------------------------------------------------------------- admin --
    def active(self) -> list[Kill]:
        kills = [*self._admin.values(), *self._file.values()]
        if self._admin_problem is not None:
            kills.append(self._admin_problem)
        return sorted(kills, key=lambda k: (k.scope.key, k.source))

    def set(self, scope: Scope, reason: str, by: str) -> list[Kill]:
        with self._lock:
            admin = dict(self._admin)
            if scope.key not in admin and len(admin) >= MAX_ENTRIES:
                raise InvalidRequest("scope", f"{MAX_ENTRIES} kill switches are set, the limit")
            admin[scope.key] = Kill(scope, reason, "admin", time.time(), by)
            self._persist(admin)
        self._changed()
        return self.active()

    def clear(self, scope: Scope) -> list[Kill]:
        with self._lock:
            admin = {k: v for k, v in self._admin.items() if k != scope.key}
            self._persist(admin)
        self._changed()
        return self.active()

    def refresh(self) -> bool:
        """Re-read the files whose stat changed; True (and `on_change` called) if any did."""
        with self._lock:
            changed = self._reread(force=False)
        if changed:
            self._changed()
        return changed

    # ---------------------------------------------------------------------- internals --
    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _reread(self, *, force: bool) -> bool:
        stamps = (_stamp(self._state_file), _stamp(self._flag_file))
        if not force and stamps == self._stamps:
            return False
        if self._state_file is not None:
            self._admin, self._admin_problem = _read(self._state_file, "admin", "state file")
        if self._flag_file is not None:
            kills, problem = _read(self._flag_file, "file", "kill_switch_file", empty_kills=True)
            self._file = kills if problem is None else {EVERYTHING: problem}
        # Only once both files are read: were a read to raise, the next poll tries again.
        self._stamps = stamps
        self._reindex()
        if self._index:
            log.warning("kill switch active: %s", "; ".join(_describe(k) for k in self.active()))
        return True

    def _persist(self, admin: dict[Key, Kill]) -> None:
        path = self._state_file
        if path is None:
            raise InvalidRequest("scope", "the kill switch has no state file (data_dir)")
        state = {"version": 1, "kill_switches": [k.to_json() for k in admin.values()]}
        try:
            _write_atomically(path, json.dumps(state, indent=1, sort_keys=True) + "\n")
        except OSError as exc:  # nothing changed: the switch is only as good as its state
            raise NotReady(f"cannot persist the kill switch state to {path}: {exc}") from exc
        self._admin, self._admin_problem = admin, None
        self._stamps = (_stamp(path), self._stamps[1])
        self._reindex()
        log.warning("kill switch state now: %s", "; ".join(map(_describe, self.active())) or "none")

    def _reindex(self) -> None:
        index: dict[Key, str] = {}
        for k in self.active():
            index.setdefault(k.scope.key, PREFIX + k.reason)
        self._index = index  # one reference assignment: readers see the old or the new


def _describe(k: Kill) -> str:
    return f"{k.scope.label()} ({k.source}): {k.reason}"


def _stamp(path: Path | None) -> Stamp:
    if path is None:
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError:
        return (-1, -1, -1, -1)  # unreadable: reread (and fail closed) when it changes
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(
    path: Path, source: str, what: str, *, empty_kills: bool = False
) -> tuple[dict[Key, Kill], Kill | None]:
    """The entries of a file, or a PDP-wide Kill naming why the file cannot be used."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, _problem(path, source, what, f"cannot read: {exc.strerror}")
    if len(data) > MAX_FILE_BYTES:
        return {}, _problem(path, source, what, f"larger than {MAX_FILE_BYTES} bytes")
    if empty_kills and not data.strip():
        return {EVERYTHING: Kill(Scope(), f"{what} {path} exists", source)}, None
    try:
        doc = json.loads(data)
        items = doc["kill_switches"] if source == "admin" else doc
        kills = _entries(items if isinstance(items, list) else [items], source)
    except (ValueError, KeyError, TypeError) as exc:
        return {}, _problem(path, source, what, str(exc))
    except InvalidRequest as exc:
        return {}, _problem(path, source, what, exc.message)
    except Exception as exc:  # anything else (RecursionError of deep JSON): fail closed
        return {}, _problem(path, source, what, f"{type(exc).__name__}: {exc}")
    return kills, None


def _problem(path: Path, source: str, what: str, problem: str) -> Kill:
    log.error("kill switch: %s %s unusable (%s): denying every decision", what, path, problem)
    return Kill(Scope(), f"{what} {path} unusable: {problem}"[:MAX_REASON], source)


def _entries(items: Sequence[Any], source: str) -> dict[Key, Kill]:
    if len(items) > MAX_ENTRIES:
        raise ValueError(f"{len(items)} entries, over the limit of {MAX_ENTRIES}")
    kills: dict[Key, Kill] = {}
    for i, item in enumerate(items):
        at = f"[{i}]"
        if not isinstance(item, dict):
            raise TypeError(f"{at}: must be an object")
        scope = item.get("scope") or {}
        if not isinstance(scope, dict):
            raise TypeError(f"{at}.scope: must be an object")
        action = scope.get("action")
        if action is not None and not (
            isinstance(action, dict)
            and isinstance(action.get("type"), str)
            and isinstance(action.get("id"), str)
        ):
            raise TypeError(f'{at}.scope.action: must be {{"type": ..., "id": ...}}')
        tenant = scope.get("tenant", "")
        if not isinstance(tenant, str):
            raise TypeError(f"{at}.scope.tenant: must be a string")
        ref = EntityRef(action["type"], action["id"]) if action is not None else None
        s = Scope.of(f"{at}.scope", tenant, ref)
        reason = item.get("reason")
        if not isinstance(reason, str):
            raise TypeError(f"{at}.reason: required, a string")
        set_at, set_by = item.get("set_at", 0.0), item.get("set_by", "")
        if not isinstance(set_at, int | float) or not isinstance(set_by, str):
            raise TypeError(f"{at}: set_at must be a number, set_by a string")
        kills[s.key] = Kill(s, check_reason(f"{at}.reason", reason), source, set_at, set_by)
    return kills


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable
    finally:
        os.close(fd)
