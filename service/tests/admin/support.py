"""Admin API test support: tokens and their allow-list, a config file, stubs, the port."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pdp._proto.v1 import admin_pb2 as apb
from pdp._proto.v1 import admin_pb2_grpc as apb_grpc
from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb

from ..support import REPO, ServerProcess

READ_TOKEN = "read-token-0123456789"
WRITE_TOKEN = "write-token-9876543210"
BAD_TOKEN = "not-a-configured-token"
DEFAULT_BUNDLE = REPO / "policies"


def token_hash(token: str) -> str:
    return "token-sha256:" + hashlib.sha256(token.encode()).hexdigest()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@dataclass
class AdminConfig:
    path: Path
    audit: Path
    data_dir: Path


def write_config(
    tmp: Path, identities: Iterable[tuple[str, str]] = (), extra: str = ""
) -> AdminConfig:
    """A TOML settings file: the admin allow-list (identity, role), an audit file, data_dir."""
    entries = ", ".join(f'{{identity = "{i}", role = "{r}"}}' for i, r in identities)
    audit, data = tmp / "audit.log", tmp / "data"
    path = tmp / "pdp.toml"
    path.write_text(
        f"admin_identities = [{entries}]\n"
        f'admin_audit_log = "{audit}"\n'
        f'data_dir = "{data}"\n' + extra
    )
    return AdminConfig(path, audit, data)


def token_config(tmp: Path, extra: str = "") -> AdminConfig:
    return write_config(
        tmp, [(token_hash(READ_TOKEN), "read"), (token_hash(WRITE_TOKEN), "write")], extra
    )


def admin_port(srv: ServerProcess, start: int = 0) -> int:
    line = srv.wait_for_log(r"admin API on \S+:\d+", start=start)
    m = re.search(r"admin API on \S+:(\d+)", line)
    assert m is not None
    return int(m[1])


def admin_stub(channel: grpc.Channel) -> apb_grpc.AdminServiceStub:
    return apb_grpc.AdminServiceStub(channel)


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def uid(type_: str, id_: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=type_, id=id_)


def scope(tenant: str = "", action: str = "") -> apb.KillSwitchScope:
    return apb.KillSwitchScope(tenant=tenant, action=uid("Action", action) if action else None)


def bob_edits(tenant: str = "", action: str = "edit") -> pb.CheckRequest:
    """Allowed by the default bundle (bob edits the document he is an editor of)."""
    return pb.CheckRequest(
        tenant=tenant,
        principal=uid("User", "bob"),
        action=uid("Action", action),
        resource=uid("Document", "doc-1"),
    )


def eventually(probe: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until `probe()` held (it is tried every 20 ms); fails after `timeout`."""
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


def serve_args(cfg: AdminConfig, *more: str) -> Sequence[str]:
    # --data-dir as a flag too: the suite's PDP_DATA_DIR (conftest) outranks the file's.
    return [
        "--config",
        str(cfg.path),
        "--data-dir",
        str(cfg.data_dir),
        "--bundle",
        f"default={DEFAULT_BUNDLE}",
        "--no-watch",
        *more,
    ]
