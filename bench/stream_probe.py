#!/usr/bin/env python3
"""Is the bidirectional streaming CheckStream cheaper per decision than unary Check? (issue 7 §1)

The real threaded server (`PdpServer`, the bench bundle, 5 threads, 4 streams allowed) in a
subprocess. A grpcio client sends the `check` shape N times as unary calls (16 in flight)
and N times over 4 streams, interleaved round by round. Reported per decision: the server
process's CPU time (the cost the server pays; the Python client is slower than the server,
so calls/s would measure the client) and the wall time. Server pinned to CPU 0, client to CPU 1.

    .venv/bin/python bench/stream_probe.py [--calls 3000 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import grpc  # noqa: E402
import scenario  # noqa: E402

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402

STREAM = "/pdp.v1.AuthorizationService/CheckStream"


def serve() -> None:
    from pdp.bundle import compile_bundle
    from pdp.bundle_files import read_bundle_files
    from pdp.config import default_bundle
    from pdp.engine import Engine, Snapshot
    from pdp.grpc.convert import DEFAULT_LIMITS
    from pdp.grpc.server import PdpServer

    bundle = compile_bundle(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    engine = Engine(Snapshot.of({"default": bundle}))
    server = PdpServer(
        engine,
        "127.0.0.1:0",
        max_batch_items=100,
        max_message_bytes=4 << 20,
        limits=DEFAULT_LIMITS,
        max_concurrent_streams=32,
        max_concurrent_rpcs=100,
        threads=5,
        max_check_streams=4,  # the 4 streams below; unary calls keep a thread
    )
    server.start()
    server.set_serving(["default"])
    print(server.port, flush=True)
    sys.stdin.read()  # until the parent closes it


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unary(channel: grpc.Channel, request: pb.CheckRequest, n: int) -> int:
    call = channel.unary_unary(
        "/pdp.v1.AuthorizationService/Check",
        request_serializer=pb.CheckRequest.SerializeToString,
        response_deserializer=pb.CheckResponse.FromString,
    )
    allowed = 0
    pending: list[Any] = []
    for _ in range(n):
        pending.append(call.future(request, timeout=60))
        if len(pending) == 16:
            allowed += sum(f.result().decision == pb.DECISION_ALLOW for f in pending)
            pending = []
    return allowed + sum(f.result().decision == pb.DECISION_ALLOW for f in pending)


def streamed(channel: grpc.Channel, request: pb.CheckRequest, n: int, streams: int = 4) -> int:
    call = channel.stream_stream(
        STREAM,
        request_serializer=pb.CheckRequest.SerializeToString,
        response_deserializer=pb.CheckStreamResponse.FromString,
    )

    def one(k: int) -> int:
        responses = call(iter([request] * k), timeout=120)
        return sum(r.result.decision == pb.DECISION_ALLOW for r in responses)

    with futures.ThreadPoolExecutor(streams) as pool:
        return sum(pool.map(one, [n // streams] * streams))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        serve()
        return 0
    srv = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline())
        os.sched_setaffinity(0, {1})
        request = scenario.SHAPES["check"].message
        n = a.calls - a.calls % 4
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary(channel, request, 200)  # warm-up both paths
            streamed(channel, request, 200)
            print("| round | mode | decisions | server CPU µs/decision | wall µs/decision |")
            print("|---|---|---|---|---|")
            for rnd in range(a.rounds):
                for mode, fn in (("unary Check", unary), ("CheckStream x4", streamed)):
                    c0, t0 = cpu_seconds(srv.pid), time.perf_counter()
                    allowed = fn(channel, request, n)
                    wall = time.perf_counter() - t0
                    cpu = cpu_seconds(srv.pid) - c0
                    assert allowed == n, (mode, allowed, n)  # every answer an ALLOW
                    per = f"{cpu / n * 1e6:.0f} | {wall / n * 1e6:.0f}"
                    print(f"| {rnd + 1} | {mode} | {n} | {per} |", flush=True)
    finally:
        if srv.stdin:
            srv.stdin.close()
        srv.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
