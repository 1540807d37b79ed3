#!/usr/bin/env python3
"""Load benchmark of the real `pdp serve` over gRPC on 127.0.0.1, driven by h2load.

Mirrors the Cerbos anchor's method (/work/shared/bench/cerbos/README.md, bench.sh):
unary gRPC over h2c, pre-serialised framed bodies posted by h2load with
`content-type: application/grpc` and `te: trailers`; server pinned to CPU 0, h2load
(and this harness) to CPU 1; in flight 1 = `-c 1 -m 1`, 16 = `-c 4 -m 4` (4 HTTP/2
connections x 4 streams, like gRPC clients multiplexing); a discarded warm-up run
before every measured run; p50/p90/p99 exact from h2load's --log-file.

    .venv/bin/python bench/load.py                          # 1 run x 4 shapes x {1,16}
    .venv/bin/python bench/load.py --runs 3 --rps-probe     # as recorded in RESULTS.md
    .venv/bin/python bench/load.py --shapes check batch --concurrency 1 16 64
    .venv/bin/python bench/load.py --summary /tmp/cedar-pdp-load/results-*.jsonl

Before any load, every shape's exact body is sent once through grpcio (status OK) and
once through nghttp (:status 200, trailer grpc-status 0), and the decoded decisions are
compared with scenario.py's expectations. h2load only counts HTTP statuses, so each
measured run is valid only if: no failed/errored/timed-out requests, all 2xx, the DATA
bytes received equal done x the verified response length (a call that ends in a non-OK
grpc-status carries no message, so this proves every response was a full OK answer), the
latency log has one row per done request, and the server log shows no errors. After the
matrix the bodies are verified again.

Only 127.0.0.1 is used. Each h2load run is bounded by --duration (and a hard timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import scenario  # noqa: E402

HOST = "127.0.0.1"
# The shapes served: scenario.py's, or with --scenario cerbos the Cerbos anchor's a and b
# (cerbos_requests.py), set once in main() before any load.
SHAPES: dict[str, scenario.Shape] = scenario.SHAPES
HZ = os.sysconf("SC_CLK_TCK")
DEFAULT_RPS = {"check": 200, "check-ent": 200, "batch": 50, "batch-ent": 50}


def log(msg: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"ERROR: {msg}")
    raise SystemExit(1)


# ---------------------------------------------------------------------------- server --
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            log(f"stopping pdp serve (pid {self.pid})")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pin(cpu: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu else cmd


def start_server(
    args: argparse.Namespace,
    work: Path,
    stamp: str,
    *,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """`pdp serve` with the bench's flags and `extra` ones; `env` replaces the environment
    (transport_ab.py runs exported revisions through PYTHONPATH)."""
    pdp = Path(sys.executable).parent / "pdp"
    cmd = [str(pdp)] if pdp.exists() and env is None else [sys.executable, "-m", "pdp"]
    cmd += ["serve", "--listen", f"{HOST}:{args.port}", "--no-watch"]
    # Metrics stay on (as deployed), on a free port: two runs must not fight over 9464.
    cmd += ["--metrics-listen", f"{HOST}:0"]
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    # Every call of a run repeats one body: with the decision cache on, all but the first
    # would be hits. Off unless asked for, so the figures are of evaluation.
    cmd += ["--decision-cache" if args.decision_cache else "--no-decision-cache"]
    if args.bundle:
        cmd += ["--bundle", str(args.bundle)]
    # Last, so they win over the defaults above (e.g. --metrics-listen off).
    cmd += [*(args.serve_arg or []), *(extra or [])]
    log_path = work / f"pdp-{stamp}.log"
    log(f"starting {' '.join(pin(args.server_cpu, cmd))}")
    with log_path.open("wb") as out:
        # taskset execs into pdp, so the Popen pid is the server's own pid.
        proc = subprocess.Popen(
            pin(args.server_cpu, cmd), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    server = Server(proc, 0, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.findall(r"listening on 127\.0\.0\.1:(\d+)", server.log_text())
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", server.log_text())
        if m and len(found) >= args.workers:  # every worker is up
            server.port = int(m.group(1))
            break
        if proc.poll() is not None:
            die(f"pdp serve exited ({proc.returncode}); log:\n{server.log_text()}")
        time.sleep(0.05)
    else:
        server.stop()
        die(f"pdp serve did not start listening within 30 s; log:\n{server.log_text()}")
    allowed = re.search(r"Cpus_allowed_list:\s*(\S+)", Path(f"/proc/{proc.pid}/status").read_text())
    log(f"pdp serve up: pid {proc.pid}, port {server.port}, CPUs {allowed and allowed.group(1)}")
    return server


# ---------------------------------------------------------------------- verification --
def verify(server: Server, bodies: Path, shapes: list[str]) -> dict[str, tuple[int, int]]:
    """Each body through grpcio and nghttp; returns the framed response lengths per shape:
    (every answer after the first, the first); equal unless the decision cache is on."""
    import grpc

    resp_len: dict[str, int] = {}
    miss_len: dict[str, int] = {}
    with grpc.insecure_channel(f"{HOST}:{server.port}") as channel:
        for name in shapes:
            s = SHAPES[name]
            framed = (bodies / f"{name}.bin").read_bytes()
            msg = scenario.grpc_unframe(framed)
            # Raw bytes in and out: exactly the message h2load posts.
            call = channel.unary_unary(s.path)
            # With the decision cache on, the first answer fills the cache and every later
            # one is a hit, 2 bytes longer per decision (`cache_hit: true`). A run may still
            # see a miss answered afresh (an entry past its TTL): that length is kept too.
            first, c = call.with_call(msg, timeout=10)
            if c.code() != grpc.StatusCode.OK:
                die(f"{name}: gRPC status {c.code()} {c.details()}")
            _check(s, first, "grpc")
            miss_len[name] = len(first) + 5
            lengths = set()
            for _ in range(2):
                out, c = call.with_call(msg, timeout=10)
                if c.code() != grpc.StatusCode.OK:
                    die(f"{name}: gRPC status {c.code()} {c.details()}")
                _check(s, out, "grpc")
                lengths.add(len(out) + 5)

            cmd = ["nghttp", "-d", str(bodies / f"{name}.bin")]
            cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
            cmd += [server.url(s.path)]
            body = subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout
            verbose = subprocess.run(
                [cmd[0], "-v", *cmd[1:]], check=True, capture_output=True, timeout=30
            ).stdout.decode("latin-1")
            if not re.search(r"recv \(stream_id=\d+\) :status: 200", verbose):
                die(f"{name}: nghttp did not see :status 200\n{verbose}")
            m = re.search(r"recv \(stream_id=\d+\) grpc-status: (\d+)", verbose)
            if not m or m.group(1) != "0":
                die(f"{name}: grpc-status trailer is {m and m.group(1)}\n{verbose}")
            _check(s, scenario.grpc_unframe(body), "h2")
            lengths.add(len(body))
            if len(lengths) != 1:
                die(f"{name}: response length varies between calls: {sorted(lengths)}")
            resp_len[name] = lengths.pop()
            log(
                f"  verified {name}: {s.method}, grpc OK + trailer grpc-status 0, "
                f"{s.decisions} decision(s) ({s.expected.count('ALLOW')} ALLOW) as expected, "
                f"request {len(framed)} B, response {resp_len[name]} B framed"
            )
    return {name: (resp_len[name], miss_len[name]) for name in resp_len}


def _check(s: scenario.Shape, message: bytes, how: str) -> None:
    got = s.decode_decisions(message)
    if got != s.expected:
        die(f"{s.name} via {how}: decisions differ\n  got  {got}\n  want {s.expected}")


# ------------------------------------------------------------------------- CPU ticks --
def ticks(server_cpu: str | None, loadgen_cpu: str | None, pid: int) -> tuple[int, int, int]:
    """(busy ticks of the server CPU, busy ticks of the load CPU, server utime+stime)."""
    a = b = 0
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if not f[0].startswith("cpu") or f[0] == "cpu":
            continue
        u, n, s, _idle, _io, irq, sirq, st = (int(x) for x in f[1:9])
        busy = u + n + s + irq + sirq + st
        if f[0] == f"cpu{server_cpu or 0}":
            a = busy
        elif f[0] == f"cpu{loadgen_cpu or 1}":
            b = busy
    return a, b, process_ticks(pid)


def process_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid`, in clock ticks (HZ a second)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(args: argparse.Namespace, pid: int) -> None:
    """Wait (max --quiet-timeout s) until other processes use < --quiet-max % of a CPU."""
    if not args.quiet_max:
        return
    deadline = time.monotonic() + args.quiet_timeout
    while time.monotonic() < deadline:
        a0, b0, s0 = ticks(args.server_cpu, args.loadgen_cpu, pid)
        time.sleep(1)
        a1, b1, s1 = ticks(args.server_cpu, args.loadgen_cpu, pid)
        if (a1 + b1 - a0 - b0 - (s1 - s0)) * 100 < args.quiet_max * HZ:
            return
    log(f"machine did not get quiet within {args.quiet_timeout} s; measuring anyway")


# ---------------------------------------------------------------------------- h2load --
def h2load_cmd(args: argparse.Namespace, server: Server, name: str, bodies: Path) -> list[str]:
    s = SHAPES[name]
    cmd = ["h2load", "-t", "1", "-d", str(bodies / f"{name}.bin")]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    return pin(args.loadgen_cpu, cmd + [server.url(s.path)])


def run_h2load(cmd: list[str], extra: list[str], seconds: float, out: Path | None) -> float:
    """Run h2load (bounded by a hard timeout); returns its CPU seconds (user+sys)."""
    full = cmd[:-1] + extra + cmd[-1:]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(full, capture_output=True, text=True, timeout=seconds + 60)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out is not None:
        out.write_text(f"$ {' '.join(full)}\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        die(f"h2load failed ({res.returncode}): {' '.join(full)}\n{res.stdout}{res.stderr}")
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def pct(vals: list[int], q: float) -> float:
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def _us(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", s)
    assert m, s
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def parse_run(text: str, latlog: Path) -> dict[str, Any]:
    r: dict[str, Any] = {}
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    assert m, text
    r["elapsed_s"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    r["rps"] = float(m.group(3))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    assert m, text
    for i, k in enumerate(
        ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    ):
        r[k] = int(m.group(i + 1))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    assert m, text
    r["s2xx"], r["s_other"] = int(m.group(1)), sum(int(m.group(i)) for i in (2, 3, 4))
    m = re.search(r"\((\d+)\) data", text)
    assert m, text
    r["data_bytes"] = int(m.group(1))
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    assert m, text
    r["h2load_mean_us"] = _us(m.group(3))
    lat = sorted(
        int(cols[2])
        for cols in (line.split("\t") for line in latlog.read_text().splitlines() if line.strip())
        if cols[1] == "200"
    )
    r["n_logged"] = len(lat)
    r["mean_us"] = statistics.fmean(lat) if lat else float("nan")
    for q in (0.5, 0.9, 0.99, 0.999):
        r[f"p{q * 100:g}_us"] = pct(lat, q)
    return r


_BAD_LOG = re.compile(r"\b(ERROR|CRITICAL|Traceback|unexpected error)\b")


def fresh_answers(data_bytes: int, done: int, full: int, fresh: int) -> int | None:
    """How many of `done` responses were `fresh` long (a cache miss) and the rest `full`
    (a hit), if their bytes add up to that; None when they cannot (a short or odd answer).
    With the cache off the two lengths are one: every response must be exactly it."""
    short = done * full - data_bytes
    if full == fresh:
        return 0 if short == 0 else None
    n, rest = divmod(short, full - fresh)
    return n if rest == 0 and 0 <= n <= done else None


def measure(
    args: argparse.Namespace,
    server: Server,
    name: str,
    mode: str,
    run: int,
    flags: list[str],
    resp_len: dict[str, tuple[int, int]],
    work: Path,
    stamp: str,
    bodies: Path,
) -> dict[str, Any]:
    s = SHAPES[name]
    cmd = h2load_cmd(args, server, name, bodies)
    run_h2load(cmd, ["-D", str(args.warmup), *flags], args.warmup, None)  # discarded warm-up
    wait_quiet(args, server.pid)
    out = work / f"h2load-{stamp}-{name}-{mode}-{run}.txt"
    latlog = work / "latency.tsv"
    latlog.unlink(missing_ok=True)
    log_before = len(server.log_text())
    c0 = ticks(args.server_cpu, args.loadgen_cpu, server.pid)
    t0 = time.monotonic()
    cpu_s = run_h2load(
        cmd, ["-D", str(args.duration), f"--log-file={latlog}", *flags], args.duration, out
    )
    wall = time.monotonic() - t0
    c1 = ticks(args.server_cpu, args.loadgen_cpu, server.pid)
    r: dict[str, Any] = {"shape": name, "method": s.method, "decisions": s.decisions}
    full, fresh = resp_len[name]
    r.update(mode=mode, run=run, load=" ".join(flags), resp_len=full)
    r.update(parse_run(out.read_text(), latlog))
    srv = c1[2] - c0[2]
    r["wall_s"] = wall
    r["server_cpu_pct"] = 100 * srv / HZ / wall
    # Busy time on the server's CPU not accounted to the server (other processes,
    # softirq work for loopback networking): well above a few % means a disturbed run.
    r["foreign_cpu0_pct"] = 100 * max(0, c1[0] - c0[0] - srv) / HZ / wall
    r["cpu1_busy_pct"] = 100 * (c1[1] - c0[1]) / HZ / wall
    r["loadgen_cpu_pct"] = 100 * cpu_s / r["elapsed_s"]
    # Busy time on the load generator's CPU that h2load did not use (other processes; on a
    # 2-vCPU VM a busy sibling can slow the server even when its own CPU is free).
    r["foreign_cpu1_pct"] = max(0.0, r["cpu1_busy_pct"] - r["loadgen_cpu_pct"])
    new_log = server.log_text()[log_before:]
    r["fresh_answers"] = fresh_answers(r["data_bytes"], r["done"], full, fresh)
    checks = {
        "server alive": server.proc.poll() is None,
        "no h2load failures": r["failed"] == r["errored"] == r["timeout"] == 0,
        "all responses 2xx": r["s2xx"] == r["done"] and r["s_other"] == 0,
        "every response carried a full message": r["fresh_answers"] is not None,
        "latency log complete": r["n_logged"] == r["done"],
        "no errors in server log": not _BAD_LOG.search(new_log),
    }
    r["failed_checks"] = [k for k, ok in checks.items() if not ok]
    r["valid"] = not r["failed_checks"]
    r["decisions_per_s"] = r["rps"] * s.decisions
    return r


def brief(r: dict[str, Any]) -> str:
    return (
        f"  {r['shape']:9s} {r['mode']:8s} run {r['run']}: {r['rps']:8.1f} calls/s "
        f"{r['decisions_per_s']:9.0f} decisions/s  mean {r['mean_us'] / 1e3:6.2f} "
        f"p50 {r['p50_us'] / 1e3:6.2f} p99 {r['p99_us'] / 1e3:6.2f} ms  "
        f"server CPU {r['server_cpu_pct']:3.0f}%  foreign {r['foreign_cpu0_pct']:2.0f}%  "
        f"h2load CPU {r['loadgen_cpu_pct']:3.0f}%"
        + (f"  {r['fresh_answers']} answered afresh" if r.get("fresh_answers") else "")
        + ("" if r["valid"] else "  INVALID: " + "; ".join(r["failed_checks"]))
    )


# --------------------------------------------------------------------------- summary --
def summary(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if "shape" in r:
            groups.setdefault((r["shape"], r["mode"]), []).append(r)
    shape_order = {n: i for i, n in enumerate(SHAPES)}

    def order(key: tuple[str, str]) -> tuple[int, int, str]:
        shape, mode = key
        conc = int(mode[1:]) if mode.startswith("c") else 10**6
        return shape_order.get(shape, 99), conc, mode

    for r in rows:  # rows written before foreign_cpu1_pct existed
        if "cpu1_busy_pct" in r and "foreign_cpu1_pct" not in r:
            r["foreign_cpu1_pct"] = max(0.0, r["cpu1_busy_pct"] - r["loadgen_cpu_pct"])

    def med(rs: list[dict[str, Any]], k: str) -> float:
        return statistics.median(r[k] for r in rs)

    lines = [
        "| shape | RPC | in flight | h2load flags | valid runs | calls/s (min–max) "
        "| decisions/s | mean ms | p50 ms | p90 ms | p99 ms | server CPU | other load "
        "CPU 0 / CPU 1 | h2load CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=order):
        rs = groups[key]
        ok = [r for r in rs if r["valid"]]
        shape, mode = key
        inflight = mode[1:] if mode.startswith("c") else f"fixed {mode[4:]}/s"
        first = rs[0]
        if not ok:
            lines.append(
                f"| {shape} | {first['method']} | {inflight} | `{first['load']}` "
                f"| 0/{len(rs)} | | | | | | | | | |"
            )
            continue
        rps = med(ok, "rps")
        lo, hi = min(r["rps"] for r in ok), max(r["rps"] for r in ok)
        lines.append(
            f"| {shape} | {first['method']} | {inflight} | `{first['load']}` "
            f"| {len(ok)}/{len(rs)} | **{rps:,.0f}** ({lo:,.0f}–{hi:,.0f}) "
            f"| {rps * first['decisions']:,.0f} "
            f"| {med(ok, 'mean_us') / 1e3:.2f} | {med(ok, 'p50_us') / 1e3:.2f} "
            f"| {med(ok, 'p90_us') / 1e3:.2f} | {med(ok, 'p99_us') / 1e3:.2f} "
            f"| {med(ok, 'server_cpu_pct'):.0f} % | {med(ok, 'foreign_cpu0_pct'):.0f} % / "
            f"{med(ok, 'foreign_cpu1_pct'):.0f} % "
            f"| {med(ok, 'loadgen_cpu_pct'):.0f} % |"
        )
    bad = [r for r in rows if "shape" in r and not r["valid"]]
    if bad:
        lines.append(f"\nINVALID runs: {len(bad)}")
        lines += [
            f"  {r['shape']} {r['mode']} run {r['run']}: {', '.join(r['failed_checks'])}"
            for r in bad
        ]
    disturbed = [r for r in rows if "shape" in r and r["valid"] and r["foreign_cpu0_pct"] > 10]
    if disturbed:
        lines.append(
            f"\nNote: {len(disturbed)} run(s) had > 10 % foreign load on the server CPU: "
            + ", ".join(
                f"{r['shape']}/{r['mode']}/run{r['run']} ({r['foreign_cpu0_pct']:.0f} %)"
                for r in disturbed
            )
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    h2 = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cedarpy": metadata.version("cedarpy"),
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
        "h2load": h2,
        "commit": commit,
    }


# ------------------------------------------------------------------------------ main --
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    p.add_argument("--warmup", type=int, default=3, help="discarded seconds before each run (3)")
    p.add_argument("--runs", type=int, default=1, help="repetitions of the matrix (1)")
    p.add_argument(
        "--scenario",
        choices=("pdp", "cerbos"),
        default="pdp",
        help="pdp: scenario.py's shapes; cerbos: the Cerbos anchor's a and b (cerbos_requests.py)",
    )
    p.add_argument("--shapes", nargs="+", help="default: every shape of the scenario")
    p.add_argument(
        "--concurrency",
        nargs="*",
        type=int,
        default=[1, 16],
        help="in flight (1 16); none = probes only",
    )
    p.add_argument("--conns", type=int, default=4, help="HTTP/2 connections when in flight > 1")
    p.add_argument(
        "--rps-probe",
        nargs="?",
        const="default",
        help="fixed-rate latency probe, e.g. 'check=200,batch=50' (bare flag: "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_RPS.items())
        + ")",
    )
    p.add_argument("--server-cpu", default="0", help="taskset CPU for the server ('' = none)")
    p.add_argument("--loadgen-cpu", default="1", help="taskset CPU for h2load and this harness")
    p.add_argument(
        "--quiet-max", type=float, default=10, help="wait for < N %% foreign load (0=off)"
    )
    p.add_argument("--quiet-timeout", type=float, default=120)
    p.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (0 = any free)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="pdp serve --workers N (server CPU then counts the supervisor only; use with "
        "--server-cpu '' --loadgen-cpu '')",
    )
    p.add_argument(
        "--serve-arg",
        action="append",
        metavar="ARG",
        help="one more `pdp serve` argument (repeat), e.g. --serve-arg=--metrics-listen=off",
    )
    p.add_argument(
        "--decision-cache",
        action="store_true",
        help="serve with the decision cache on (default off: every repeated body would hit)",
    )
    p.add_argument("--bundle", type=Path, help="bundle path (default: the repository's policies/)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cedar-pdp-load"))
    p.add_argument("--summary", type=Path, help="only print the table of a results .jsonl")
    args = p.parse_args(argv)
    args.server_cpu = args.server_cpu or None
    args.loadgen_cpu = args.loadgen_cpu or None
    global SHAPES
    write = scenario.iter_write
    if args.scenario == "cerbos":
        import cerbos_requests

        SHAPES, write = cerbos_requests.shapes(), cerbos_requests.iter_write
        args.bundle = args.bundle or cerbos_requests.BUNDLE
    elif args.bundle is None:
        # The `-ent` shapes need a bundle that accepts their request entities: the default
        # bundle's files with scenario.BENCH_TRUST, written where the bodies go.
        from pdp.bundle_files import build_archive, read_bundle_files
        from pdp.config import default_bundle

        args.workdir.mkdir(parents=True, exist_ok=True)
        args.bundle = args.workdir / "bench-bundle.tar.gz"
        files = scenario.bench_bundle_files(read_bundle_files(default_bundle()))
        args.bundle.write_bytes(build_archive(files))
    args.shapes = args.shapes or list(SHAPES)
    unknown = [n for n in args.shapes if n not in SHAPES]
    if unknown:
        p.error(f"--shapes: {', '.join(unknown)} not in {args.scenario}: {', '.join(SHAPES)}")

    if args.summary:
        rows = [json.loads(line) for line in args.summary.read_text().splitlines() if line]
        print(summary(rows))
        return 0

    missing = [t for t in ("h2load", "nghttp") if shutil.which(t) is None]
    if args.server_cpu or args.loadgen_cpu:
        missing += ["taskset"] if shutil.which("taskset") is None else []
    if missing:
        print(
            f"load.py: missing {', '.join(missing)}. On Debian/Ubuntu install them with:\n"
            "  apt-get update && apt-get install -y nghttp2-client util-linux\n"
            "(h2load and nghttp come from nghttp2-client; taskset from util-linux, "
            "or pass --server-cpu '' --loadgen-cpu '' to run unpinned)",
            file=sys.stderr,
        )
        return 2
    if args.loadgen_cpu:
        os.sched_setaffinity(0, {int(c) for c in args.loadgen_cpu.split(",")})

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bodies = work / "bodies"
    for line in write(bodies):
        log(line)
    results = work / f"results-{stamp}.jsonl"
    info = machine()
    results.write_text(json.dumps({"machine": info, "argv": sys.argv[1:]}) + "\n")

    probes: dict[str, int] = {}
    if args.rps_probe:
        spec = args.rps_probe
        if spec == "default":
            probes = {k: v for k, v in DEFAULT_RPS.items() if k in args.shapes}
        else:
            probes = {k: int(v) for k, v in (kv.split("=") for kv in spec.split(","))}

    server = start_server(args, work, stamp)
    rows: list[dict[str, Any]] = []
    try:
        resp_len = verify(server, bodies, args.shapes)
        log("global warm-up (3 s per shape, -c 4 -m 4)")
        for name in args.shapes:
            run_h2load(
                h2load_cmd(args, server, name, bodies), ["-D", "3", "-c", "4", "-m", "4"], 3, None
            )
        for run in range(1, args.runs + 1):
            for name in args.shapes:
                modes: list[tuple[str, list[str]]] = []
                for conc in args.concurrency:
                    c = 1 if conc == 1 else min(args.conns, conc)
                    modes.append((f"c{conc}", ["-c", str(c), "-m", str(conc // c)]))
                if name in probes:
                    rate = probes[name]
                    modes.append((f"rate{rate}", ["-c", "1", "-m", "1", f"--rps={rate}"]))
                for mode, flags in modes:
                    r = measure(args, server, name, mode, run, flags, resp_len, work, stamp, bodies)
                    rows.append(r)
                    with results.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                    log(brief(r))
        log("re-verifying every body after the load")
        verify(server, bodies, args.shapes)
    finally:
        server.stop()
    tail = server.log_text()
    if _BAD_LOG.search(tail):
        log(f"WARNING: errors in the server log {server.log_path}")

    print()
    print(
        f"cedar-pdp {info['commit']}, {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']}, cedarpy {info['cedarpy']}, grpcio {info['grpcio']}, "
        f"protobuf {info['protobuf']}, {info['h2load']};"
    )
    print(
        f"server pinned to CPU {args.server_cpu or 'none'}, h2load to CPU "
        f"{args.loadgen_cpu or 'none'}, {args.duration} s per run, {args.runs} run(s), "
        "medians of valid runs:"
    )
    print()
    print(summary(rows))
    print(f"\nraw results: {results}")
    return 0 if all(r["valid"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
