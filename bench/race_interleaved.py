#!/usr/bin/env python3
"""The race with the host's drift taken out: Cerbos and cedar-pdp up side by side, both
pinned to the same CPU, loaded in turn.

    .venv/bin/python bench/race_interleaved.py [--shape a] [--rounds 6] [--duration 6]
        [--in-flight 16] [--decision-cache] [--serve-arg=--no-sched-batch ...]

`bench/compare_cerbos.sh` measures all of one server, then all of the other: on a host
whose speed moves by 30-50 % within minutes (bench/RESULTS.md, 2026-12-04) its ratios
carry that drift. Here each round runs h2load against one server for `--duration`
seconds, then against the other (the order swapped every round), so each round's ratio
compares two runs seconds apart; the median of the rounds' ratios is the figure. The
idle server waits on the same CPU (it uses well under 1 % of it).

Every run is checked as `bench/load.py` checks its own: every call answered 2xx with
grpc-status 0 and every response of the verified length (Cerbos's verified by the
anchor's own `verify.py` against its expected decisions, cedar-pdp's by `load.py`'s
`verify`). Needs what `compare_cerbos.sh` needs (h2load, the anchor's venv for
`verify.py`, created by a first `compare_cerbos.sh` or `bench.sh` run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cerbos_requests  # noqa: E402
import load  # noqa: E402

CERBOS_DIR = Path(os.environ.get("CERBOS_DIR", "/work/shared/bench/cerbos"))
CERBOS_VENV = Path(os.environ.get("PEERS_VENV", "/tmp/peers-venv"))
CERBOS_GRPC = "127.0.0.1:3593"
CERBOS_PATH = "/cerbos.svc.v1.CerbosService/CheckResources"


def start_cerbos(cpu: str, work: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    binary = (
        subprocess.run(
            [str(CERBOS_DIR / "get-cerbos.sh")], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    bodies = work / "cerbos-bodies"
    subprocess.run(
        [str(CERBOS_VENV / "bin/python"), str(CERBOS_DIR / "scenario.py"), "write", str(bodies)],
        check=True,
        capture_output=True,
    )
    env = {
        **os.environ,
        "CERBOS_NO_TELEMETRY": "1",
        "CERBOS_POLICY_DIR": str(CERBOS_DIR / "policies"),
    }
    cmd = ["taskset", "-c", cpu, binary, "server", f"--config={CERBOS_DIR / 'config.yaml'}"]
    with (work / "cerbos.log").open("wb") as out:
        proc = subprocess.Popen([*cmd, "--log-level=error"], stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 30
    while True:
        hc = [binary, "hc", "--kind=grpc", f"--host-port={CERBOS_GRPC}", "--no-tls"]
        if subprocess.run(hc, capture_output=True).returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            load.die("Cerbos did not start; see " + str(work / "cerbos.log"))
        time.sleep(0.2)
    verified = subprocess.run(
        [str(CERBOS_VENV / "bin/python"), "verify.py", str(bodies), CERBOS_GRPC],
        cwd=CERBOS_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lengths = {shape: int(n) for shape, n in (line.split() for line in verified.splitlines())}
    return proc, lengths


def one_run(
    cmd: list[str], seconds: int, work: Path, full: int, fresh: int, *, check: bool = True
) -> float:
    """calls/s of one h2load run of `seconds`, after checking every answer (`check`)."""
    latlog = work / "latency.tsv"
    latlog.unlink(missing_ok=True)
    out = work / "run.txt"
    load.run_h2load(cmd, ["-D", str(seconds), f"--log-file={latlog}"], seconds, out)
    r = load.parse_run(out.read_text(), latlog)
    if check and not answered(r, full, fresh):
        load.die(f"a run failed its checks: {out.read_text()}")
    return float(r["rps"])


def answered(r: dict[str, Any], full: int, fresh: int) -> bool:
    """Whether a parsed run (`load.parse_run`) answered every call whole: 2xx, no h2load
    failure, every response of a verified length (`full`, or `fresh` for an uncached one)."""
    return (
        r["failed"] == r["errored"] == r["timeout"] == 0
        and r["s2xx"] == r["done"]
        and load.fresh_answers(r["data_bytes"], r["done"], full, fresh) is not None
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=("a", "b"), default="a")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=int, default=6)
    p.add_argument("--in-flight", type=int, default=16, help="4 connections x N/4 streams")
    p.add_argument("--decision-cache", action="store_true")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    p.add_argument("--serve-arg", action="append", metavar="ARG")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cedar-pdp-race"))
    a = p.parse_args(argv)
    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    load.SHAPES = cerbos_requests.shapes()
    for _ in cerbos_requests.iter_write(work / "pdp-bodies"):
        pass
    args = SimpleNamespace(
        port=0, workers=1, decision_cache=a.decision_cache, bundle=cerbos_requests.BUNDLE,
        serve_arg=[*(a.serve_arg or []), "--admin-listen=off"], server_cpu=a.server_cpu,
        loadgen_cpu=a.loadgen_cpu,
    )  # fmt: skip
    cerbos, cerbos_len = start_cerbos(a.server_cpu, work)
    server = load.start_server(args, work, time.strftime("%Y%m%d-%H%M%S"))  # type: ignore[arg-type]
    try:
        pdp_len = load.verify(server, work / "pdp-bodies", [a.shape])[a.shape]
        flight = ["-c", "4", "-m", str(max(1, a.in_flight // 4))]
        pin = ["taskset", "-c", a.loadgen_cpu]
        h2 = ["h2load", "-t", "1", "-H", "content-type: application/grpc", "-H", "te: trailers"]
        cmds = {
            "cerbos": (
                [*pin, *h2, *flight, "-d", str(work / "cerbos-bodies" / f"{a.shape}.bin"),
                 f"http://{CERBOS_GRPC}{CERBOS_PATH}"],
                cerbos_len[a.shape], cerbos_len[a.shape],
            ),
            "pdp": (
                [*pin, *h2, *flight, "-d", str(work / "pdp-bodies" / f"{a.shape}.bin"),
                 server.url(load.SHAPES[a.shape].path)],
                *pdp_len,
            ),
        }  # fmt: skip
        for cmd, full, fresh in cmds.values():  # warm-up, discarded
            # Unchecked, as bench/load.py's warm-ups are: the first run against a new
            # server once counted 10 batch answers done without their bytes (h2load's
            # accounting; the cause was not traced). Measured runs are checked.
            one_run(cmd, 3, work, full, fresh, check=False)
        print(
            f"shape {a.shape}, {a.in_flight} in flight, cache {'on' if a.decision_cache else 'off'}"
        )
        print("| round | first | Cerbos calls/s | cedar-pdp calls/s | ratio |")
        print("|---|---|---|---|---|")
        ratios = []
        for i in range(a.rounds):
            order = ["cerbos", "pdp"] if i % 2 == 0 else ["pdp", "cerbos"]
            got = {
                side: one_run(*cmds[side][:1], a.duration, work, *cmds[side][1:]) for side in order
            }
            ratios.append(got["pdp"] / got["cerbos"])
            cells = [str(i + 1), order[0], f"{got['cerbos']:,.0f}", f"{got['pdp']:,.0f}"]
            print("| " + " | ".join([*cells, f"{ratios[-1]:.2f}"]) + " |", flush=True)
        low, high = min(ratios), max(ratios)
        print(f"median ratio {statistics.median(ratios):.2f} (min {low:.2f}, max {high:.2f})")
    finally:
        server.stop()
        cerbos.terminate()
        cerbos.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
