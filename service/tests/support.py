"""Test support: run the real `pdp serve` as a subprocess and talk to it over loopback."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

TESTDATA = Path(__file__).parent / "testdata"
DOCS_BUNDLE = TESTDATA / "bundles" / "docs"
REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def tls_channel(
        self, ca: bytes, cert: bytes | None = None, key: bytes | None = None
    ) -> grpc.Channel:
        """A TLS channel trusting `ca` (PEM), presenting `cert`/`key` if given (mTLS)."""
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(ca, key, cert))

    def stub(self, channel: grpc.Channel) -> pb_grpc.AuthorizationServiceStub:
        return pb_grpc.AuthorizationServiceStub(channel)

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if rx.search(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.log()}")


def pdp_command() -> list[str]:
    exe = shutil.which("pdp", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "pdp"]


@contextmanager
def running_server(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    *,
    own_process_group: bool = False,
    wrap: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """Start `pdp serve --listen 127.0.0.1:0 ARGS`, yield once it listens, SIGTERM after.

    `own_process_group` lets a test signal the whole group (as Ctrl-C does) with `os.killpg`
    without signalling pytest. `wrap`: a command that execs the server (as `chrt -i 0`), so the
    process is still the server's own."""
    proc = subprocess.Popen(
        [*wrap, *pdp_command(), "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=own_process_group,
    )
    lines: list[str] = []
    port: list[int] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = _LISTENING.search(line)
            if m and not port:
                port.append(int(m[2]))
                ready.set()
        ready.set()

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()

    def reap() -> None:
        proc.wait()
        pumper.join(timeout=5)
        if proc.stdout:
            proc.stdout.close()

    if not ready.wait(timeout) or not port:
        proc.kill()
        reap()
        raise AssertionError("server did not start:\n" + "\n".join(lines))
    server = ServerProcess(proc, port[0], lines)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        reap()
