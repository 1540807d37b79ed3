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
        line = json.dumps(
            {
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "identity": identity,
                "peer": peer,
                "method": method,
                "args": summarise(request),
                "code": code,
                "message": _MASKER.text(message, Stats(), "message", MAX_MESSAGE_CHARS),
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
    if request is None:
        return None
    if isinstance(request, Undecodable):
        return {"undecodable": _cut(request.reason, MAX_ARG_CHARS)}
    try:
        masked = _masked(MessageToDict(request, preserving_proto_field_name=True))
    except OverBudget:
        return {"truncated": f"<over {MASK_BUDGET} bytes once masked: not kept>"}
    args = _cut_strings(masked)
    if len(json.dumps(args)) > MAX_ARGS_CHARS:
        return {"truncated": _cut(json.dumps(args), MAX_ARGS_CHARS)}
    return args


def _masked(args: dict[str, Any]) -> Any:
    """`args` masked; a `*_json` field (a JSON text a caller wrote) is masked as the tree it
    holds, so its secret-named keys are found too, and kept as masked JSON text."""
    stats = Stats()
    out = dict(args)
    for name, value in args.items():
        if name.endswith("_json") and isinstance(value, str) and value:
            try:
                out[name] = _MASKER.tree_text("entities", value, stats, MASK_BUDGET)
            except ValueError:  # not JSON (the call was refused): masked as a text
                out[name] = _MASKER.text(value, stats, name, MASK_BUDGET)
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
