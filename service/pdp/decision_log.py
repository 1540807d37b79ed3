"""Decision logs: one JSON record per decision, masked, written off the request path.

The request path only samples and enqueues (`DecisionLogger.check` / `.batch`, a few
microseconds, never blocking); a background thread builds each record (masking every
caller-controlled value with `pdp.masking`), bounds its size and writes it to the sink. A
full queue drops the record and counts it (`dropped`) rather than slow a decision down;
`close()` at shutdown writes everything still queued. The record format is documented in
the README and fixed by `docs/decision-log.schema.json`.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pdp.masking import ELLIPSIS, MAX_VALUE_CHARS, Masker, OverBudget, Stats
from pdp.model import (
    DEFAULT_TENANT,
    BundleVersion,
    CheckInput,
    CheckResult,
    Decision,
    EntityRef,
)

if TYPE_CHECKING:
    from pdp.config import Settings

log = logging.getLogger(__name__)

RECORD_VERSION = 1
MAX_MESSAGE = 1024  # an error message (Cedar's text may quote request values)
PIPE_BUF = 4096  # writes up to this size to a pipe are atomic: `--workers` never interleave
CLOSE_TIMEOUT_SECONDS = 30.0
# The writer wakes this often, or when a quarter of the queue is full: waking per record
# would cost a thread switch (and a GIL hand-off) per decision.
DRAIN_INTERVAL_SECONDS = 0.1
# Masked uids and policy versions as JSON, kept across calls (the same principals, actions
# and bundles recur); cleared when full, so at most this many (each a few hundred bytes).
PARTS_CACHE_ENTRIES = 1024

# The encoders json.dumps uses, without building an encoder per call: a string as
# `json.dumps(s)` writes it, a tree as `json.dumps(t, separators=(",", ":"))` does.
_json_str = json.encoder.encode_basestring_ascii
_json_compact = json.JSONEncoder(separators=(",", ":")).encode
# A string every character of which is written as itself (printable ASCII, no quote or
# backslash): its JSON size is its length.
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")

Metadata = Iterable[tuple[str, str | bytes]]

# W3C Trace Context, version 00 exactly; a later version may append `-...` fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)


def trace_id(metadata: Metadata | None) -> str | None:
    """The trace id of the caller's `traceparent`, parsed strictly per W3C Trace Context:
    None if absent, repeated, or malformed (upper-case hex, version ff, all-zero ids, data
    after a version-00 header, ...), as a receiver that restarts the trace would."""
    return parse_traceparent(traceparents(metadata))


def traceparents(metadata: Metadata | None) -> list[str | bytes]:
    """The `traceparent` values of a call's metadata (what the request path keeps)."""
    return [v for k, v in metadata or () if k == "traceparent"]


def parse_traceparent(values: Sequence[str | bytes]) -> str | None:
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    m = _TRACEPARENT.fullmatch(values[0])
    if m is None:
        return None
    version, trace, parent, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace == "0" * 32 or parent == "0" * 16:
        return None
    return trace


class RecordTooLarge(Exception):
    """A record that no shrinking brings within max_record_bytes (dropped and counted)."""


class Sink(Protocol):
    def write(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class StdoutSink:
    """JSON lines on stdout (the server's own log goes to stderr). Lines are gathered into
    writes of at most PIPE_BUF bytes, so processes sharing one pipe never mix records."""

    def __init__(self, fd: int | None = None) -> None:
        self._fd = sys.stdout.fileno() if fd is None else fd
        self._buffer: list[bytes] = []
        self._size = 0

    def write(self, line: str) -> None:
        data = line.encode() + b"\n"
        if self._size + len(data) > PIPE_BUF:
            self.flush()
        self._buffer.append(data)
        self._size += len(data)

    def flush(self) -> None:
        data = b"".join(self._buffer)
        self._buffer, self._size = [], 0
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        self.flush()


class FileSink:
    """A rotating file, as the standard library's RotatingFileHandler rotates: a line that
    would take the file past `max_bytes` first renames PATH to PATH.1 (PATH.1 to PATH.2, ...,
    keeping `backups` of them). Unlike the handler it neither flushes nor asks the file its
    position per line: the writer flushes once per drained batch."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self._path, self._max, self._backups = path, max_bytes, backups
        self._file = open(path, "ab")  # noqa: SIM115 - held open until close()
        self._size = self._file.tell()

    def write(self, line: str) -> None:
        data = line.encode() + b"\n"
        if self._size and self._size + len(data) > self._max:
            self._rotate()
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{i}")
            if older.exists():
                os.replace(older, self._path.with_name(f"{self._path.name}.{i + 1}"))
        os.replace(self._path, self._path.with_name(f"{self._path.name}.1"))
        self._file = open(self._path, "ab")  # noqa: SIM115
        self._size = 0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass(slots=True)  # not frozen: a frozen __init__ costs microseconds per call
class _Call:
    """One answered call, as captured on the request path (nothing built yet)."""

    time: float
    tenant: str
    inputs: Sequence[CheckInput]
    results: Sequence[CheckResult]
    indices: Sequence[int] | None  # kept batch items; None for a Check
    latency_us: int
    traceparents: list[str | bytes]  # parsed by the writer


class DecisionLogger:
    """Counters `written` and `dropped` (ints, for metrics) count records; `queued` is how
    many wait to be written."""

    def __init__(
        self,
        sink: Sink,
        *,
        masker: Masker | None = None,
        queue_size: int = 10_000,
        max_record_bytes: int = 4096,
        allow_sample_rate: float = 1.0,
        deny_sample_rate: float = 1.0,
        include_context: bool = True,
    ) -> None:
        self._sink = sink
        self._masker = masker or Masker()
        self._max_records = queue_size
        # Request data held by queued calls, bounded like the records they become.
        self._max_bytes = queue_size * max_record_bytes
        self._max_record_bytes = max_record_bytes
        self._allow_rate = allow_sample_rate
        self._deny_rate = deny_sample_rate
        self._include_context = include_context
        self._keep_all = allow_sample_rate >= 1.0 and deny_sample_rate >= 1.0  # no sampling
        self._parts = _Parts()  # the writer thread's own
        self._queue: collections.deque[tuple[_Call, int, int]] = collections.deque()
        self._lock = threading.Lock()
        self._queued_records = 0
        self._queued_bytes = 0
        self.written = 0
        self.dropped = 0
        self._wake = threading.Event()
        self._wake_at = max(1, queue_size // 4)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued_records

    # -- the request path ------------------------------------------------------------

    def check(
        self,
        tenant: str,
        request: CheckInput,
        result: CheckResult,
        started: float,
        metadata: Metadata | None,
    ) -> None:
        """Log one Check's decision; `started` is the call's `time.perf_counter()`."""
        if self._keep_all or self._keep(result):
            # `_enqueue` for one request, inline: this runs once per Check.
            call = _Call(
                time.time(), tenant or DEFAULT_TENANT, (request,), (result,), None,
                int((time.perf_counter() - started) * 1e6), traceparents(metadata),
            )  # fmt: skip
            self._put(call, 1, _request_bytes(request))

    def batch(
        self,
        tenant: str,
        requests: Sequence[CheckInput],
        results: Sequence[CheckResult],
        started: float,
        metadata: Metadata | None,
    ) -> None:
        """Log every decision of a CheckBatch (each sampled on its own)."""
        kept = (
            list(range(len(results)))
            if self._keep_all
            else [i for i, r in enumerate(results) if self._keep(r)]
        )
        if kept:
            self._enqueue(tenant, requests, results, kept, started, metadata)

    def _keep(self, result: CheckResult) -> bool:
        allow = result.decision is Decision.ALLOW and not result.errors
        rate = self._allow_rate if allow else self._deny_rate
        return rate >= 1.0 or random.random() < rate

    def _enqueue(
        self,
        tenant: str,
        requests: Sequence[CheckInput],
        results: Sequence[CheckResult],
        kept: Sequence[int] | None,
        started: float,
        metadata: Metadata | None,
    ) -> None:
        latency = int((time.perf_counter() - started) * 1e6)
        records = len(results) if kept is None else len(kept)
        size = sum(_request_bytes(r) for r in requests)
        call = _Call(
            time.time(), tenant or DEFAULT_TENANT, requests, results, kept, latency,
            traceparents(metadata),
        )  # fmt: skip
        self._put(call, records, size)

    def _put(self, call: _Call, records: int, size: int) -> None:
        with self._lock:
            if (
                self._stopping
                or self._queued_records + records > self._max_records
                or (self._queued_records and self._queued_bytes + size > self._max_bytes)
            ):
                self.dropped += records
                return
            self._queued_records += records
            self._queued_bytes += size
            self._queue.append((call, records, size))
        if self._queued_records >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    # -- the writer thread ---------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Write every queued record, then close the sink. Later calls are dropped."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("decision log: %d record(s) still queued at exit", self._queued_records)
        self._sink.close()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            self._drain()
            if self._stopping and not self._queue:
                return
            if not self._queue:  # else drain the rest at once: a drain takes a bounded part
                self._wake.wait(DRAIN_INTERVAL_SECONDS)

    def _drain(self) -> None:
        """Write what was queued when the drain began, then flush once: a flush per call
        was a write(2) per Check. Records count as written only once flushed (a failed
        flush drops them all). Bounded to the calls queued at the start, so a load the
        sink cannot keep up with still gets flushes and counts, and `done` stays small."""
        done: list[tuple[int, int]] = []  # (written, records) of each call since the flush
        for _ in range(len(self._queue)):
            call, records, size = self._queue.popleft()
            written = 0
            try:
                for line in self._lines(call):
                    self._sink.write(line)
                    written += 1
            except Exception as exc:  # noqa: BLE001 - a failing sink must not stop the writer
                self._failed(exc)
            done.append((written, records))
            with self._lock:
                self._queued_records -= records
                self._queued_bytes -= size
        if not done:
            return
        try:
            self._sink.flush()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            done = [(0, records) for _, records in done]
        written = sum(w for w, _ in done)
        with self._lock:
            self.written += written
            self.dropped += sum(r for _, r in done) - written

    @staticmethod
    def _failed(exc: Exception) -> None:
        # Only the exception's type: its message or traceback could quote the very request
        # values the records mask.
        log.error("decision log: writing failed (%s); records dropped", type(exc).__name__)

    def _lines(self, call: _Call) -> Iterable[str]:
        memo = _Memo()  # batch items share contexts and entities
        trace = parse_traceparent(call.traceparents)
        trace_json = "null" if trace is None else _json_str(trace)
        # Everything but the decision's own fields is the call's: serialised once.
        common = (
            f'"time":"{self._parts.stamp(call.time)}"',
            f'"tenant":{_json_str(call.tenant)}',
            f'"latency_us":{call.latency_us},"trace_id":{trace_json}',
        )
        indices = range(len(call.results)) if call.indices is None else call.indices
        for i in indices:
            try:
                yield self._record(call, i, memo, common)
            except RecordTooLarge:  # counted as dropped: never written above the bound
                log.error("decision log: a record exceeds decision_log_max_record_bytes")

    def _record(self, call: _Call, i: int, memo: _Memo, common: tuple[str, str, str]) -> str:
        req, res = call.inputs[i], call.results[i]
        stats = Stats()
        m, parts = self._masker, self._parts
        errors = (
            [
                {
                    "policy_id": e.policy_id,
                    "message": m.message(e.message, stats, "errors", MAX_MESSAGE),
                }
                for e in res.errors
            ]
            if res.errors
            else None
        )
        # The reason is the operator's (a kill switch's, a stale bundle's), masked all the
        # same: an incident note can quote the very card number it is about.
        reason = (
            _json_str(m.message(res.reason, stats, "reason", MAX_MESSAGE)) if res.reason else '""'
        )

        batch = "null" if call.indices is None else f'{{"index":{i},"size":{len(call.results)}}}'
        context = entities = "null"  # each tree serialised once per call, spliced in below
        if self._include_context:
            context = self._tree(memo, "context", req.context, stats)
            ents = req.entities
            if ents is not None:
                entities = self._tree(memo, "entities", ents.json, stats)
        time_, tenant, timing = common
        line = (
            f'{{"v":{RECORD_VERSION},{time_},"decision_id":{_json_str(res.decision_id)},'
            f'{tenant},"principal":{parts.entity(m, req.principal, stats, "principal")},'
            f'"action":{parts.entity(m, req.action, stats, "action")},'
            f'"resource":{parts.entity(m, req.resource, stats, "resource")},'
            f'"decision":"{"allow" if res.decision is Decision.ALLOW else "deny"}",'
            f'"determining_policies":{parts.policies(res.determining_policies)},'
            f'"errors":{_json_compact(errors) if errors else "[]"},'
            f'"policy_version":{parts.version(res.version)},'
            f'"cache_hit":{"true" if res.cache_hit else "false"},'
            f'"reason":{reason},'
            f'{timing},"batch":{batch},'
            f'"context":{context},"entities":{entities},"masked":{stats.masked},'
            f'"truncated":{_json_strs(sorted(stats.truncated)) if stats.truncated else "[]"}}}'
        )
        if len(line) <= self._max_record_bytes:  # ASCII: characters are bytes
            return line
        return self._bounded(json.loads(line))

    def _tree(self, memo: _Memo, root: str, value: Any, stats: Stats) -> str:
        """The masked tree as JSON text ("null" if it exceeds the record on its own)."""
        key = id(value)
        if key not in memo.trees:
            own = Stats()
            try:
                budget = self._max_record_bytes
                if isinstance(value, str):
                    out = self._masker.tree_text(root, value, own, budget)
                else:
                    tree = self._masker.tree(root, value, own, budget)
                    out = _json_compact(tree)
            except (OverBudget, ValueError):  # ValueError: not JSON (the engine refused it)
                out = "null"
                own.truncated.add(root)
            memo.trees[key] = (out, own)
        out, own = memo.trees[key]
        stats.truncated |= own.truncated
        stats.masked += own.masked
        return out

    def _bounded(self, record: dict[str, Any]) -> str:
        """The record as one JSON line of at most max_record_bytes: what does not fit is
        dropped (request entities, then context, then errors and policies from the end),
        and named in `truncated`."""
        line = json.dumps(record, separators=(",", ":"))
        for name in ("entities", "context", "errors", "determining_policies"):
            while len(line) > self._max_record_bytes and record[name]:
                if isinstance(record[name], list) and name in ("errors", "determining_policies"):
                    record[name] = record[name][: len(record[name]) // 2]
                else:
                    record[name] = None
                if name not in record["truncated"]:
                    record["truncated"] = sorted([*record["truncated"], name])
                line = json.dumps(record, separators=(",", ":"))
        # Last resort: the ids themselves, halved until the record fits (a 1 KiB bound leaves
        # less than six 256-byte uids need).
        limit = MAX_VALUE_CHARS
        while len(line) > self._max_record_bytes and limit > 8:
            limit //= 2
            for name in ("principal", "resource", "action"):
                uid, own = record[name], Stats()
                record[name] = {k: _fit(v, own, name, limit) for k, v in uid.items()}
                if own.truncated and name not in record["truncated"]:
                    record["truncated"] = sorted([*record["truncated"], name])
            line = json.dumps(record, separators=(",", ":"))
        if len(line) > self._max_record_bytes:  # never written above the bound
            raise RecordTooLarge(len(line))
        return line


class _Memo:
    """The masked trees the records of one call share, as JSON text (by object)."""

    def __init__(self) -> None:
        self.trees: dict[int, tuple[str, Stats]] = {}


class _Parts:
    """Parts of records that recur across calls, as JSON text, built once: masked uids
    (by field, type and id) and policy versions. Bounded (PARTS_CACHE_ENTRIES each) and
    used by the writer thread alone; it holds only what records may hold (masked text)."""

    def __init__(self) -> None:
        self._uids: dict[tuple[str, str, str], tuple[str, Stats]] = {}
        self._versions: dict[BundleVersion, str] = {}
        # Determining policies: ids of the bundle's policies (no caller writes them), so
        # the lists recur, and each is a JSON list once.
        self._policies: dict[tuple[str, ...], str] = {}
        # The time of the second last written: records of one second differ only in
        # their microseconds, and formatting a datetime costs ~3 us a record.
        self._second = -1
        self._second_text = ""
        self._last_version: BundleVersion | None = None
        self._last_version_text = ""

    def stamp(self, t: float) -> str:
        """`t` (seconds since the epoch) as ISO 8601 UTC with microseconds and "Z", as
        `datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")` writes it
        (rounded half to even to the microsecond, as datetime rounds)."""
        # datetime's own steps (_PyTime_ObjectToTimeval): the fraction rounded on its own.
        fraction, whole = math.modf(t)
        micro, second = round(fraction * 1e6), int(whole)
        if micro < 0:
            micro, second = micro + 1_000_000, second - 1
        if micro >= 1_000_000:
            micro, second = micro - 1_000_000, second + 1
        if second != self._second:
            when = datetime.fromtimestamp(second, UTC)
            self._second, self._second_text = second, when.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{micro:06d}Z"

    def policies(self, ids: Sequence[str]) -> str:
        key = tuple(ids)
        known = self._policies.get(key)
        if known is None:
            known = _json_strs(key)
            if len(self._policies) >= PARTS_CACHE_ENTRIES:
                self._policies.clear()
            self._policies[key] = known
        return known

    def entity(self, m: Masker, ref: EntityRef, stats: Stats, where: str) -> str:
        key = (where, ref.type, ref.id)
        known = self._uids.get(key)
        if known is None:
            own = Stats()
            type_ = _fit(m.text(ref.type, own, where), own, where)
            id_ = _fit(m.text(ref.id, own, where), own, where)
            known = (f'{{"type":{_json_str(type_)},"id":{_json_str(id_)}}}', own)
            if len(self._uids) >= PARTS_CACHE_ENTRIES:
                self._uids.clear()
            self._uids[key] = known
        out, own = known
        if own.masked or own.truncated:
            stats.masked += own.masked
            stats.truncated |= own.truncated
        return out

    def version(self, v: BundleVersion) -> str:
        if v is self._last_version:  # the results of one bundle share its version object
            return self._last_version_text
        known = self._versions.get(v)
        if known is None:
            fields = {"bundle": v.name, "version": v.version, "digest": v.digest}
            known = _json_compact(fields)
            if len(self._versions) >= PARTS_CACHE_ENTRIES:
                self._versions.clear()
            self._versions[v] = known
        self._last_version, self._last_version_text = v, known
        return known


def _json_strs(items: Iterable[str]) -> str:
    """A list of strings as `json.dumps(list(items))` writes it."""
    return f"[{', '.join(map(_json_str, items))}]"


def _escaped_bytes(ch: str) -> int:
    """Bytes of `ch` in a JSON string as json.dumps writes it (ASCII only)."""
    if ch in '"\\' or ch in "\b\f\n\r\t":
        return 2
    code = ord(ch)
    return 1 if 0x20 <= code < 0x7F else 12 if code > 0xFFFF else 6


def _fit(text: str, stats: Stats, where: str, limit: int = MAX_VALUE_CHARS) -> str:
    """`text` cut to at most `limit` bytes as written in JSON: cutting by characters lets an
    astral character (a 12-byte escape) make a 256-character id 3 KB."""
    # Most ids fit as they are, which their length alone (no character is written in more
    # than 12 bytes) or one regex pass (every character one byte) shows.
    if len(text) * 12 <= limit or (len(text) <= limit and _PLAIN.fullmatch(text)):
        return text
    return _cut(text, stats, where, limit)


def _cut(text: str, stats: Stats, where: str, limit: int) -> str:
    """`_fit` character by character."""
    size = 0
    for i, ch in enumerate(text):
        size += _escaped_bytes(ch)
        if size > limit:
            stats.truncated.add(where)
            return text[:i] + ELLIPSIS if text[:i] else ELLIPSIS
    return text


def _request_bytes(req: CheckInput) -> int:
    ctx = req.context
    size = len(ctx) if isinstance(ctx, str) else 64
    return size + (len(req.entities.json) if req.entities is not None else 0)


def decision_logger(settings: Settings, *, worker: bool = False) -> DecisionLogger | None:
    """The logger the settings ask for, or None when decision logs are off. A `--workers`
    process writes its own file, `PATH.<pid>`: rotating one file from many processes would
    lose records."""
    s = settings
    if s.decision_log == "off":
        return None
    sink: Sink
    if s.decision_log == "file":
        assert s.decision_log_file is not None  # required by Settings
        path = s.decision_log_file
        if worker:
            path = path.with_name(f"{path.name}.{os.getpid()}")
        sink = FileSink(path, s.decision_log_max_file_bytes, s.decision_log_backup_count)
    else:
        sink = StdoutSink()
    return DecisionLogger(
        sink,
        masker=Masker(s.decision_log_mask_paths, s.decision_log_drop_paths),
        queue_size=s.decision_log_queue_size,
        max_record_bytes=s.decision_log_max_record_bytes,
        allow_sample_rate=s.decision_log_allow_sample_rate,
        deny_sample_rate=s.decision_log_deny_sample_rate,
        include_context=s.decision_log_context,
    )
