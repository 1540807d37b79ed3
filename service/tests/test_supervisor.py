"""`pdp serve --workers N`: several processes on one port, signals reach all of them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from .support import DOCS_BUNDLE, ServerProcess, pdp_command, running_server

REQ = pb.CheckRequest(
    tenant="docs",
    principal=vpb.EntityUid(type="User", id="alice"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)


def answers(srv: ServerProcess, connections: int = 24) -> list[pb.CheckResponse]:
    """One Check on each of `connections` fresh connections (the kernel spreads those)."""
    out = []
    for _ in range(connections):
        with srv.channel() as ch:
            out.append(pb_grpc.AuthorizationServiceStub(ch).Check(REQ, timeout=10))
    return out


def worker_pids(srv: ServerProcess) -> list[int]:
    line = srv.wait_for_log(r"supervising 2 workers")
    return [int(p) for p in re.findall(r"\d+", line.split("pids", 1)[1])]


def test_two_workers_share_the_port_and_reload_and_stop_together(tmp_path: Path) -> None:
    bundle = tmp_path / "docs"
    shutil.copytree(DOCS_BUNDLE, bundle)
    with running_server(["--bundle", f"docs={bundle}", "--no-watch", "--workers", "2"]) as srv:
        pids = worker_pids(srv)
        first = srv.lines.index(srv.wait_for_log("listening on"))
        srv.wait_for_log("listening on", start=first + 1)  # the second worker is up too
        # Decision ids start with a per-process prefix: both workers answered.
        prefixes = {r.decision_id.split("-")[0] for r in answers(srv)}
        assert len(prefixes) == 2
        (bundle / "manifest.json").write_text(json.dumps({"name": "docs", "version": "2.0.0"}))
        srv.proc.send_signal(signal.SIGHUP)  # to the supervisor only
        srv.wait_for_log("SIGHUP")
        for _ in range(100):  # each worker reloads on its own; wait until both have
            versions = {r.policy_version.version for r in answers(srv, 8)}
            if versions == {"2.0.0"}:
                break
        assert {r.policy_version.version for r in answers(srv)} == {"2.0.0"}
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=30) == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_a_dead_worker_stops_the_unit() -> None:
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--workers", "2"]) as srv:
        pids = worker_pids(srv)
        answers(srv, 2)
        os.kill(pids[0], signal.SIGKILL)
        assert srv.proc.wait(timeout=30) == 1
        srv.wait_for_log("a worker exited unexpectedly")


def test_workers_refuse_a_taken_port() -> None:
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]) as first:
        r = subprocess.run(
            [
                *pdp_command(),
                "serve",
                "--bundle",
                f"docs={DOCS_BUNDLE}",
                "--workers",
                "2",
                "--listen",
                first.address,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1 and f"cannot serve on {first.address}" in r.stderr
        with first.channel() as ch:  # the first server is untouched
            assert pb_grpc.AuthorizationServiceStub(ch).Check(REQ).decision == pb.DECISION_ALLOW
