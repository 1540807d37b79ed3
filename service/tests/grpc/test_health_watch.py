"""Health Watch streams opened and ended from many threads at once never wedge the
server: grpc_health's servicer sent a Watch's first response under its lock while the
callback ending another Watch waited for that lock on grpcio's poll thread, and every
later call timed out (SIGTERM too). `pdp.grpc.health` ends Watch streams off that thread."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp._proto.v1 import authorization_pb2 as pb

from ..support import DOCS_BUNDLE, running_server
from .test_limits import check

FLOOD_SECONDS = 8.0


def flood(port: int, seconds: float, counts: Counter[str], lock: threading.Lock) -> None:
    stop = time.monotonic() + seconds

    def watcher(seed: int) -> None:
        rnd = random.Random(seed)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < stop:
                stream = stub.Watch(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=rnd.choice([0.005, 0.02, 0.1]),
                )
                try:
                    for _ in stream:
                        with lock:
                            counts["answered"] += 1
                        if rnd.random() < 0.5:
                            stream.cancel()
                            with lock:
                                counts["cancelled"] += 1
                            break
                except grpc.RpcError as exc:
                    with lock:
                        counts[exc.code().name] += 1

    threads = [threading.Thread(target=watcher, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)


def test_watch_streams_ending_from_many_threads_never_wedge_the_server() -> None:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--metrics-listen=off"]
    counts = Counter[str]()
    lock = threading.Lock()
    with running_server(args) as srv:
        flood(srv.port, FLOOD_SECONDS, counts, lock)
        with srv.channel() as ch:
            health = health_pb2_grpc.HealthStub(ch)
            ok = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert ok.status == health_pb2.HealthCheckResponse.SERVING
            assert srv.stub(ch).Check(check(), timeout=5).decision == pb.DECISION_ALLOW
        srv.proc.terminate()
        assert srv.proc.wait(timeout=20) == 0  # SIGTERM still ends it
    # Both ways a Watch ends were exercised, many times over.
    assert counts["cancelled"] >= 100 and counts["DEADLINE_EXCEEDED"] >= 100, counts
