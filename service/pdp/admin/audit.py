"""The audit log: one JSON line per admin call, allowed or not.

Fields: `time` (RFC 3339 UTC), `identity` (the allow-list entry, what was presented, or
"anonymous"), `peer` (gRPC's peer address), `method` (full gRPC method), `args` (the
request, strings cut to MAX_ARG_CHARS and the whole to MAX_ARGS_CHARS), `code` (the gRPC
status code name the call ended with) and `message` (its details, cut). Credentials never
appear: the bearer token travels in metadata, which is not logged.
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

log = logging.getLogger("pdp.audit")

MAX_ARG_CHARS = 256
MAX_ARGS_CHARS = 2048
MAX_MESSAGE_CHARS = 512


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
                "message": _cut(message, MAX_MESSAGE_CHARS),
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
    args = _cut_strings(MessageToDict(request, preserving_proto_field_name=True))
    if len(json.dumps(args)) > MAX_ARGS_CHARS:
        return {"truncated": _cut(json.dumps(args), MAX_ARGS_CHARS)}
    return args


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
