#!/usr/bin/env python3
"""Issue 8's operations cost with the host's drift taken out: two `pdp serve` up side by
side on the same CPU, one with every operations hook off, one with all three on, loaded
in turn.

    .venv/bin/python bench/ops_interleaved.py [--shapes check batch] [--rounds 10]
        [--duration 4] [--in-flight 16]

On this project's shared hosts one configuration's throughput moves by ±15-20 % between
runs a minute apart (bench/RESULTS.md, 2026-12-03 and 2026-12-04), more than the 10 % goal
it is meant to resolve. Here each round runs h2load against one server for `--duration`
seconds, then against the other (the order swapped every round), so each round's ratio
compares two runs seconds apart; the median of the rounds' ratios is the figure. The idle
server waits on the same CPU.

  off    --metrics-listen=off --decision-log=off, no OTEL_* variables
  on     metrics on a free port, every decision logged to a file in --workdir, tracing
         sampled at 1 % (parentbased_traceidratio 0.01) exported over OTLP/gRPC to
         bench/otlp_sink.py (started here, on the load generator's CPU)

Both serve the bench bundle with the decision cache off (every call evaluated). Every run
is checked as bench/load.py checks its own (every call answered 2xx, grpc-status 0, every
response of the verified length); the server logs are scanned for errors at the end.
Needs h2load and nghttp (nghttp2-client) and taskset.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402
import scenario  # noqa: E402
from race_interleaved import answered, one_run  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(cpu: str, port: int, work: Path) -> subprocess.Popen[bytes]:
    sink = Path(__file__).resolve().parent / "otlp_sink.py"
    with (work / "otlp-sink.log").open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", cpu, sys.executable, str(sink), str(port)], stdout=out, stderr=out
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    load.die(f"otlp_sink did not listen on {port}; see {work / 'otlp-sink.log'}")
    raise AssertionError  # unreachable: die exits


def together(
    cmds: dict[str, list[str]],
    pids: dict[str, int],
    seconds: int,
    work: Path,
    lengths: dict[str, tuple[int, int]],
) -> dict[str, float]:
    """Both servers loaded at once: calls per server CPU-second of each, every answer
    checked. The two share the CPU at the scheduler's grain (milliseconds), so a host
    that slows down slows both alike; CPU time, not wall time, is what each call cost."""
    procs, outs = {}, {}
    t0 = {side: load.process_ticks(pids[side]) for side in cmds}
    for side, cmd in cmds.items():
        latlog = work / f"latency-{side}.tsv"
        latlog.unlink(missing_ok=True)
        full = [*cmd[:-1], "-D", str(seconds), f"--log-file={latlog}", cmd[-1]]
        outs[side] = work / f"run-{side}.txt"
        procs[side] = subprocess.Popen(full, stdout=outs[side].open("w"), stderr=subprocess.STDOUT)
    for proc in procs.values():
        if proc.wait(timeout=seconds + 60) != 0:
            load.die(f"h2load failed: {[o.read_text() for o in outs.values()]}")
    got = {}
    for side in cmds:
        cpu = (load.process_ticks(pids[side]) - t0[side]) / load.HZ
        r = load.parse_run(outs[side].read_text(), work / f"latency-{side}.tsv")
        if not answered(r, *lengths[side]):
            load.die(f"a run failed its checks: {outs[side].read_text()}")
        got[side] = r["done"] / cpu
    return got


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["check", "batch"])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--in-flight", type=int, default=16, help="4 connections x N/4 streams")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    p.add_argument(
        "--hooks",
        default="metrics,log,trace",
        help="the hooks the 'on' server has (comma-separated; default all three): "
        "one at a time shows what each costs; none: both servers off (an A/A run)",
    )
    p.add_argument(
        "--base-hooks",
        default="none",
        help="the hooks the 'off' server has (default none): with --source, an A/B of "
        "two revisions with the same hooks",
    )
    p.add_argument(
        "--source",
        type=Path,
        help="a checkout (or `git archive` of one) whose service/ the 'on' server runs",
    )
    p.add_argument("--base-source", type=Path, help="the same for the 'off' server")
    p.add_argument(
        "--together",
        action="store_true",
        help="load both servers at once and compare calls per server CPU-second",
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cedar-pdp-ops"))
    a = p.parse_args(argv)
    # "none": both servers alike, an A/A run that shows what the method reads as no cost.
    hooks, base_hooks = (
        set() if h == "none" else set(h.split(",")) for h in (a.hooks, a.base_hooks)
    )
    if not hooks | base_hooks <= {"metrics", "log", "trace"}:
        p.error("--hooks, --base-hooks: each of metrics, log, trace, or none")
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {int(c) for c in a.loadgen_cpu.split(",")})

    from pdp.bundle_files import build_archive, read_bundle_files
    from pdp.config import default_bundle

    bundle = work / "bench-bundle.tar.gz"
    files = scenario.bench_bundle_files(read_bundle_files(default_bundle()))
    bundle.write_bytes(build_archive(files))
    bodies = work / "bodies"
    for _ in scenario.iter_write(bodies):
        pass

    sink_port = free_port()
    sink = start_sink(a.loadgen_cpu, sink_port, work)
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    traced = {
        **base,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }
    args = SimpleNamespace(
        port=0, workers=1, decision_cache=False, bundle=bundle,
        serve_arg=["--admin-listen=off"], server_cpu=a.server_cpu, loadgen_cpu=a.loadgen_cpu,
    )  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_file = work / f"on-{stamp}.jsonl"

    def start(side: str, hooks: set[str], source: Path | None) -> load.Server:
        env = traced if "trace" in hooks else base
        if source is not None:  # another revision's package first on the path
            env = {**env, "PYTHONPATH": str(source.resolve() / "service")}
        return load.start_server(
            args,  # type: ignore[arg-type]
            work,
            f"{stamp}-{side}",
            extra=[
                *([] if "metrics" in hooks else ["--metrics-listen=off"]),
                *(
                    ["--decision-log=file", f"--decision-log-file={work / f'{side}-{stamp}.jsonl'}"]
                    if "log" in hooks
                    else ["--decision-log=off"]
                ),
            ],
            env=env,
        )

    servers = {"off": start("off", base_hooks, a.base_source), "on": start("on", hooks, a.source)}
    try:
        lengths = {side: load.verify(s, bodies, a.shapes) for side, s in servers.items()}
        flight = ["-c", "4", "-m", str(max(1, a.in_flight // 4))]
        pin = ["taskset", "-c", a.loadgen_cpu]
        h2 = ["h2load", "-t", "1", "-H", "content-type: application/grpc", "-H", "te: trailers"]
        for shape in a.shapes:
            body, path = str(bodies / f"{shape}.bin"), load.SHAPES[shape].path
            cmds = {
                side: [*pin, *h2, *flight, "-d", body, s.url(path)] for side, s in servers.items()
            }

            for side in servers:  # warm-up, unchecked as bench/load.py's are
                one_run(cmds[side], 3, work, *lengths[side][shape], check=False)
            unit = "calls per CPU-s" if a.together else "calls/s"
            how = "both loaded at once" if a.together else "loaded in turn"
            print(f"\nshape {shape}, {a.in_flight} in flight, {a.duration} s a run, {how}")
            print(f"| round | first | off {unit} | on ({a.hooks}) {unit} | on/off |")
            print("|---|---|---|---|---|")
            ratios, offs, ons = [], [], []
            cpu: dict[str, list[float]] = {"off": [], "on": []}
            for i in range(a.rounds):
                order = ["off", "on"] if i % 2 == 0 else ["on", "off"]
                if a.together:
                    got = together(
                        {side: cmds[side] for side in order},
                        {side: servers[side].pid for side in order},
                        a.duration,
                        work,
                        {side: lengths[side][shape] for side in order},
                    )
                else:
                    got = {}
                    for side in order:
                        pid, t0 = servers[side].pid, time.monotonic()
                        c0 = load.process_ticks(pid)
                        got[side] = one_run(cmds[side], a.duration, work, *lengths[side][shape])
                        busy = (load.process_ticks(pid) - c0) / load.HZ
                        # The server's share of its core while loaded alone: near 100 %
                        # makes its calls/s its calls per CPU-second (what --together reads).
                        cpu[side].append(100 * busy / (time.monotonic() - t0))
                offs.append(got["off"])
                ons.append(got["on"])
                ratios.append(got["on"] / got["off"])
                cells = [str(i + 1), order[0], f"{got['off']:,.1f}", f"{got['on']:,.1f}"]
                print("| " + " | ".join([*cells, f"{ratios[-1]:.3f}"]) + " |", flush=True)
            if cpu["off"]:
                print(
                    "server CPU while loaded, median of runs: "
                    + ", ".join(f"{side} {statistics.median(v):.0f} %" for side, v in cpu.items())
                )
            med = statistics.median(ratios)
            print(
                f"{shape}: median on/off {med:.3f} (cost {100 * (1 - med):.1f} %; "
                f"min {min(ratios):.3f}, max {max(ratios):.3f}); medians off "
                f"{statistics.median(offs):,.1f}, on {statistics.median(ons):,.1f} {unit}",
                flush=True,
            )
        for side, s in servers.items():  # every body still answered as verified
            assert load.verify(s, bodies, a.shapes) == lengths[side]
    finally:
        for s in servers.values():
            s.stop()
        sink.terminate()
        sink.wait(timeout=20)
    for side, s in servers.items():
        if load._BAD_LOG.search(s.log_text()):
            load.die(f"errors in the {side} server's log {s.log_path}")
    records = sum(1 for _ in log_file.open()) if log_file.exists() else 0
    print(f"\non: {a.hooks}; {records:,} decision records written")
    print((work / "otlp-sink.log").read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
