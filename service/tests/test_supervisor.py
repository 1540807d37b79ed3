"""`pdp serve --workers N`: several processes on one port, signals reach all of them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

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


def _stop_all(srv: ServerProcess, how: str) -> None:
    pgid = os.getpgid(srv.proc.pid)
    if how == "ctrl-c":
        os.killpg(pgid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(pgid, signal.SIGINT)  # an impatient second Ctrl-C, while draining
        os.killpg(pgid, signal.SIGHUP)  # and a reload request, while draining
    else:
        srv.proc.send_signal(signal.SIGTERM)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_drain_and_exit_0(workers: int, how: str) -> None:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--drain-seconds", "1.5"]
    with running_server([*args, "--workers", str(workers)], own_process_group=True) as srv:
        first = srv.lines.index(srv.wait_for_log("listening on"))
        if workers == 2:
            srv.wait_for_log("listening on", start=first + 1)
        answers(srv, 2)
        _stop_all(srv, how)
        srv.wait_for_log("still answering")
        assert answers(srv, 2)[0].decision == pb.DECISION_ALLOW  # draining, still answering
        assert srv.proc.wait(timeout=30) == 0, srv.log()
        time.sleep(0.2)  # let the log pump catch up
        log = srv.log()
        assert log.count("INFO pdp: stopped") == workers, log
        assert "Traceback" not in log and "never awaited" not in log, log


def test_the_port_is_held_while_workers_start() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            *pdp_command(),
            "serve",
            "--bundle",
            f"docs={DOCS_BUNDLE}",
            "--no-watch",
            "--workers",
            "2",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "supervising" in line:
                break
        # From here until the workers listen, nobody else may take the port.
        taken = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with socket.socket() as intruder:
                try:
                    intruder.bind(("127.0.0.1", port))
                    taken += 1
                except OSError:
                    pass
            time.sleep(0.01)
        assert taken == 0, f"another process bound the port {taken} times while workers started"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
