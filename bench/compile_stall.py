"""Compile time of a large bundle, and how long a reload of it stalls requests.

    .venv/bin/python bench/compile_stall.py                       # 20,000 policies, 20 files
    .venv/bin/python bench/compile_stall.py --policies 2000 --reloads 1   # smoke run

The bundle is built at run time under --workdir: the default bundle (policies/) plus
--policies generated policies (one permit or forbid per user/document pair, all strictly
valid against the default schema) spread over --files files.

1. compile: `compile_bundle(read_bundle_files(dir))` in this process, --runs times; the
   minimum and median wall time and the minimum CPU time are printed, with the load, and
   the longest gap of a thread that sleeps 1 ms at a time meanwhile (the GIL probe).
2. stall: `pdp serve --bundle default=DIR --no-watch` on loopback; one client thread issues
   Check calls back to back (User::"bob" edit Document::"doc-1", which must stay ALLOW)
   and records each call's latency. Each of --reloads rounds appends a comment to one
   generated file (so the digest changes and the bundle is really recompiled), sends
   SIGHUP and waits for the "serving bundle" log line. Printed: the longest call while a
   reload was compiling, and the longest call outside reloads (the baseline).

Results: bench/RESULTS.md, section "Compiling a 20,000-policy bundle".
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "service" / "tests"))  # last: its grpc/ folder must not shadow grpc

from support import running_server  # noqa: E402

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp._proto.v1 import value_pb2 as vpb  # noqa: E402
from pdp.bundle import compile_bundle  # noqa: E402
from pdp.bundle_files import read_bundle_files  # noqa: E402


def write_bundle(root: Path, policies: int, files: int) -> Path:
    bundle = root / "big"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(REPO / "policies", bundle)
    gen = bundle / "generated"
    gen.mkdir()
    per_file = -(-policies // files)
    for f in range(files):
        lines = []
        for i in range(f * per_file, min(policies, (f + 1) * per_file)):
            effect = "forbid" if i % 10 == 0 else "permit"
            lines.append(
                f'// generated rule {i}\n@id("gen-{i}")\n@owner("bench")\n'
                f'{effect} (principal == User::"gen-user-{i}", action == Action::"read",'
                f' resource == Document::"gen-doc-{i}")\n'
                f'when {{ resource.org == principal.org && principal.region == "eu" }};\n'
            )
        (gen / f"gen-{f:03d}.cedar").write_text("".join(lines), encoding="utf-8")
    return bundle


def measure_compile(bundle: Path, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each compile (CPU time is what other jobs on a shared
    machine disturb least; the GIL is released in some of it, which CPU time still counts)."""
    walls, cpus = [], []
    gaps = [0.0]
    stop = threading.Event()

    def probe() -> None:
        # A thread that only sleeps 1 ms at a time: its longest gap is (about) the longest
        # time compilation kept the GIL from other threads, as a request would feel it.
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps[0] = max(gaps[0], now - last)
            last = now

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        compiled = compile_bundle(read_bundle_files(bundle))
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    stop.set()
    prober.join()
    print(f"compiled {len(compiled.policies)} policies (templates and links included)")
    print(f"in-process GIL probe: longest gap {gaps[0] * 1000:.0f} ms")
    return walls, cpus


def measure_stall(bundle: Path, reloads: int) -> tuple[float, float, int]:
    request = pb.CheckRequest(
        principal=vpb.EntityUid(type="User", id="bob"),
        action=vpb.EntityUid(type="Action", id="edit"),
        resource=vpb.EntityUid(type="Document", id="doc-1"),
    )
    samples: list[tuple[float, float]] = []  # (start, seconds)
    windows: list[tuple[float, float]] = []
    stop = threading.Event()
    with running_server(["--bundle", f"default={bundle}", "--no-watch"], timeout=300) as server:
        channel = server.channel()
        stub = server.stub(channel)

        def client() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                response = stub.Check(request, timeout=60)
                samples.append((started, time.perf_counter() - started))
                if response.decision != pb.DECISION_ALLOW:
                    raise AssertionError(f"expected ALLOW, got {response}")

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        time.sleep(2.0)
        target = bundle / "generated" / "gen-000.cedar"
        for n in range(reloads):
            with target.open("a", encoding="utf-8") as fh:
                fh.write(f"// reload {n}\n")
            mark = len(server.lines)
            began = time.perf_counter()
            server.proc.send_signal(signal.SIGHUP)
            server.wait_for_log(r"serving bundle", timeout=300, start=mark)
            windows.append((began, time.perf_counter()))
            time.sleep(2.0)
        stop.set()
        thread.join(timeout=60)
        channel.close()

    def during(t: float, d: float) -> bool:
        return any(t < end and t + d > start for start, end in windows)

    inside = [d for t, d in samples if during(t, d)]
    outside = [d for t, d in samples if not during(t, d)]
    return max(inside, default=0.0), max(outside, default=0.0), len(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cedar-pdp-compile-stall"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = write_bundle(args.workdir, args.policies, args.files)
    walls, cpus = measure_compile(bundle, args.runs)
    print(
        f"compile: wall min {min(walls):.2f} s, median {statistics.median(walls):.2f} s;"
        f" CPU min {min(cpus):.2f} s over {args.runs} runs"
        f" ({args.policies} generated policies in {args.files} files;"
        f" load {os.getloadavg()[0]:.1f})"
    )
    if args.reloads:
        worst, baseline, calls = measure_stall(bundle, args.reloads)
        print(
            f"stall: longest Check during a reload {worst * 1000:.0f} ms,"
            f" longest outside reloads {baseline * 1000:.0f} ms"
            f" ({calls} calls, {args.reloads} reloads; load {os.getloadavg()[0]:.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
