"""The audit log: one JSON line per admin call, allowed or not.

Fields: `time` (RFC 3339 UTC), `identity` (the allow-list entry, what was presented, or
"anonymous"), `peer` (gRPC's peer address), `method` (full gRPC method), `args` (the
request, strings cut to MAX_ARG_CHARS and the whole to MAX_ARGS_CHARS), `code` (the gRPC
status code name the call ended with) and `message` (its details, cut). Credentials never
appear: the bearer token travels in metadata, which is not logged.

The arguments and the message are masked as decision logs are (`pdp.masking`, its built-in
detectors): a written entity's attributes and ids are a caller's values, so a card number,
IBAN, JWT, bearer credential or secret-named attribute in a `WriteEntities` call (as
messages or as `upserts_json`) is never written here either. Masked before anything is cut:
a cut could split a value so that no detector knows it.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from pdp.grpc.wire import Undecodable
from pdp.masking import Masker, OverBudget, Stats

log = logging.getLogger("pdp.audit")

MAX_ARG_CHARS = 256
MAX_ARGS_CHARS = 2048
MAX_MESSAGE_CHARS = 512
# Work a line's masking may do, in output bytes: far above what is kept (MAX_ARGS_CHARS),
# so a request is cut only after it was masked whole; past it nothing of the args is kept.
MASK_BUDGET = 1 << 20
# Larger requests (serialized) are not summarised: converting and masking cost grows with
# the size, and a caller the guard refused may send the admin port's largest message.
MAX_SUMMARISED_BYTES = 64 * 1024
# No configured paths: those name decision-log fields (`context.*`, `entities.*`), not
# admin arguments. The detectors and secret-named keys apply everywhere.
_MASKER = Masker()


class AuditLog:
    """Appends to `path` (flushed per line), else logs to `pdp.audit` at INFO."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._file: TextIO | None = (
            None if path is None else path.open("a", encoding="utf-8", buffering=1)
        )

    def record(
        self,
        *,
        identity: str,
        peer: str,
        method: str,
        request: Message | Undecodable | None,
        code: str,
        message: str = "",
    ) -> None:
        """One line, whatever the request holds: what cannot be summarised is marked."""
        args, masked = summarise_masked(request)
        if masked:
            # The message can quote what the caller wrote, rendered in ways no detector
            # reads (escaped by repr, JSON or Cedar; a record's list or nested values): a
            # call whose arguments held a masked value keeps only its code.
            message = "<withheld: the request held masked values>"
        line = json.dumps(
            {
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "identity": identity,
                "peer": peer,
                "method": method,
                "args": args,
                "code": code,
                "message": _MASKER.message(message, Stats(), "message", MAX_MESSAGE_CHARS),
            },
            separators=(",", ":"),
        )
        if self._file is None:
            log.info("%s", line)
            return
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def summarise(request: Message | Undecodable | None) -> Any:
    return summarise_masked(request)[0]


def summarise_masked(request: Message | Undecodable | None) -> tuple[Any, bool]:
    """The request as the line's `args`, masked and cut, and whether anything was masked.
    Bounded: a request over MAX_SUMMARISED_BYTES is not converted at all (an unknown
    caller may send the admin port's largest message), and one nested too deep to walk is
    marked, never a lost line."""
    if request is None:
        return None, False
    if isinstance(request, Undecodable):
        return {"undecodable": _cut(request.reason, MAX_ARG_CHARS)}, False
    size = request.ByteSize()
    if size > MAX_SUMMARISED_BYTES:
        return {"truncated": f"<{size} bytes: over {MAX_SUMMARISED_BYTES}, not kept>"}, False
    stats = Stats()
    try:
        args = _cut_strings(
            _masked(MessageToDict(request, preserving_proto_field_name=True), stats)
        )
        text = json.dumps(args)
    except OverBudget:
        return {"truncated": f"<over {MASK_BUDGET} bytes once masked: not kept>"}, True
    except RecursionError:  # json's and the walks' own limits: what a caller nests
        return {"truncated": "<nested too deep to walk: not kept>"}, True
    if len(text) > MAX_ARGS_CHARS:
        args = {"truncated": _cut(text, MAX_ARGS_CHARS)}
    return args, stats.masked > 0


def _masked(args: dict[str, Any], stats: Stats) -> Any:
    """`args` masked; a `*_json` field (a JSON text a caller wrote) is masked as the tree it
    holds, so its secret-named keys are found too, and kept as masked JSON text."""
    out = dict(args)
    for name, value in args.items():
        if name.endswith("_json") and isinstance(value, str) and value:
            try:
                out[name] = _MASKER.tree_text("entities", value, stats, MASK_BUDGET)
            except ValueError:  # not JSON (the call was refused): masked as a text, as
                # far as a line keeps it
                out[name] = _MASKER.text(value, stats, name)
    return _MASKER.tree("entities", out, stats, MASK_BUDGET)


def _cut_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, MAX_ARG_CHARS)
    if isinstance(value, dict):
        return {_cut(str(k), MAX_ARG_CHARS): _cut_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v) for v in value]
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
