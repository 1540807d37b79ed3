"""Memory under a flood of unfinished messages: RSS of `pdp serve` before, during, after.

    .venv/bin/python bench/stream_flood.py [--streams 350] [--connections 1] [--seconds 20]
        [--pythonpath DIR] [-- extra `pdp serve` flags]

Starts the real server on loopback with the test bundle, opens `--connections` HTTP/2
connections (`service/tests/h2client.py`, a minimal client on a socket: grpc's own client
cannot leave a message unfinished) and `--streams` Check streams spread over them. Each
stream announces a gRPC message of `--message-bytes` (default 4 MiB, the server's default
cap) and sends all of it but the last byte, as fast as the server's flow control lets it,
then waits. Prints the
server's VmRSS at start, its peak (VmHWM), after the flood holds, and after the connections
close, plus how the server answered the streams (refused streams, RESOURCE_EXHAUSTED...).
Bounded in time: `--seconds` for the flood, then everything is closed and the server stopped.
`--pythonpath` runs the server from another source tree (e.g. `git archive` of an older
commit) with this venv, to measure a before/after. Figures: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "service/tests/testdata/bundles/docs"
sys.path.insert(0, str(ROOT / "service"))
from tests.h2client import Connection  # noqa: E402 - the client the limit tests use


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m[1]) if m else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=350)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--message-bytes", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pythonpath", help="run the server from this source tree")
    ap.add_argument("serve_flags", nargs="*")
    args = ap.parse_args()

    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    server = subprocess.Popen(
        [sys.executable, "-m", "pdp", "serve", "--listen", "127.0.0.1:0", "--no-watch",
         "--bundle", f"docs={DOCS}", *args.serve_flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert server.stdout is not None
    port = 0
    for line in server.stdout:
        if m := re.search(r"listening on \S+:(\d+)", line):
            port = int(m[1])
            break
    if not port:
        print("server did not start", file=sys.stderr)
        return 2
    threading.Thread(target=server.stdout.read, daemon=True).start()  # keep the pipe drained
    time.sleep(0.5)
    start_rss = rss_kib(server.pid)
    per = [args.streams // args.connections + (i < args.streams % args.connections)
           for i in range(args.connections)]  # fmt: skip
    conns = [Connection(port, n, args.message_bytes) for n in per]
    sent, deadline = 0, time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        moved = sum(c.pump() for c in conns)
        sent += moved
        if not moved:
            if all(not any(c.left.values()) or c.goaway for c in conns):
                break  # everything sent that the server will take
            time.sleep(0.01)
    time.sleep(1.0)
    held_rss, peak = rss_kib(server.pid), rss_kib(server.pid, "VmHWM")
    outcomes: dict[str, int] = {}
    for c in conns:
        for sid in c.left:
            what = c.closed.get(sid, "open, waiting")
            outcomes[what] = outcomes.get(what, 0) + 1
        c.close()
    time.sleep(2.0)
    after_rss = rss_kib(server.pid)
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    mib = 1024
    print(
        f"{args.streams} streams over {args.connections} connection(s), "
        f"{args.message_bytes} B messages, flags {args.serve_flags or '(defaults)'}"
    )
    print(f"  client sent {sent / 2**20:.0f} MiB of message bytes")
    print(f"  RSS start {start_rss / mib:.0f} MiB, peak {peak / mib:.0f} MiB, "
          f"held {held_rss / mib:.0f} MiB, after close {after_rss / mib:.0f} MiB")  # fmt: skip
    print(f"  streams: {dict(sorted(outcomes.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
