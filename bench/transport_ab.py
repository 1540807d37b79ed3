#!/usr/bin/env python3
"""Server models A/B with the real servicer: `pdp serve` of one git revision (e.g. the
grpc.aio server before the threaded one) against another at several `--threads`,
interleaved round by round (the order rotates each round), with load.py's pinning (server
CPU 0, h2load CPU 1), its response verification and its per-run validity checks.

    .venv/bin/python bench/transport_ab.py --base 4dcc307 --head HEAD --threads 4 8 16

Each revision's `service/` is exported with `git archive` and run with PYTHONPATH pointing
at it (same virtualenv, same bundle), so the working tree may change during the run.
Prints one row per variant, shape and in-flight level: the median calls/s over the
rounds (min-max), p50 and p99.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import load  # noqa: E402
import scenario  # noqa: E402


def export(rev: str, work: Path) -> Path:
    """`service/` of `rev`, extracted under `work`; returns the directory to import from."""
    out = work / f"base-{rev}"
    if not (out / "service" / "pdp").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(load.REPO), "archive", "--format=tar", rev, "service"],
            check=True,
            capture_output=True,
        ).stdout
        tar = out / "service.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(out, filter="data")
    return out / "service"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", required=True, help="git revision served as variant 'base'")
    p.add_argument("--head", default="HEAD", help="git revision served with --threads N")
    p.add_argument("--threads", nargs="+", type=int, default=[4, 8, 16])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shapes", nargs="+", default=["check", "batch"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    p.add_argument("--duration", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cedar-pdp-ab"))
    a = p.parse_args(argv)
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    bodies = work / "bodies"
    for _ in scenario.iter_write(bodies):
        pass
    from pdp.bundle_files import build_archive, read_bundle_files
    from pdp.config import default_bundle

    bundle = work / "bench-bundle.tar.gz"
    bundle.write_bytes(
        build_archive(scenario.bench_bundle_files(read_bundle_files(default_bundle())))
    )
    args = argparse.Namespace(
        server_cpu="0",
        loadgen_cpu="1",
        warmup=a.warmup,
        duration=a.duration,
        quiet_max=0,  # the machine is shared: measure anyway, foreign CPU is recorded
        quiet_timeout=0,
        port=0,
        workers=1,
        bundle=bundle,
        decision_cache=False,
        serve_arg=None,
    )
    os.sched_setaffinity(0, {1})
    base_env = {**os.environ, "PYTHONPATH": str(export(a.base, work))}
    head_env = {**os.environ, "PYTHONPATH": str(export(a.head, work))}
    variants: list[tuple[str, list[str], dict[str, str]]] = [
        (f"base {a.base}", [], base_env),
        *((f"threads {n}", ["--threads", str(n)], head_env) for n in a.threads),
    ]
    rows: list[dict[str, Any]] = []
    for rnd in range(a.rounds):
        order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
        for name, extra, env in order:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            server = load.start_server(args, work, stamp, extra=extra, env=env)
            try:
                resp_len = load.verify(server, bodies, a.shapes)
                for shape in a.shapes:
                    for conc in a.concurrency:
                        c = 1 if conc == 1 else min(4, conc)
                        flags = ["-c", str(c), "-m", str(conc // c)]
                        r = load.measure(
                            args, server, shape, f"c{conc}", rnd, flags, resp_len, work, stamp,
                            bodies,
                        )  # fmt: skip
                        r["variant"] = name
                        rows.append(r)
                        load.log(f"{name:12s} {load.brief(r)}")
            finally:
                server.stop()
    print("| variant | shape | in flight | valid | calls/s median (min–max) | p50 ms | p99 ms "
          "| other load CPU 0 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, _, _ in variants:
        for shape in a.shapes:
            for conc in a.concurrency:
                rs = [
                    r
                    for r in rows
                    if r["variant"] == name and r["shape"] == shape and r["mode"] == f"c{conc}"
                ]
                ok = [r for r in rs if r["valid"]]
                if not ok:
                    print(f"| {name} | {shape} | {conc} | 0/{len(rs)} | | | | |")
                    continue
                rps = [r["rps"] for r in ok]

                def med(k: str, ok: list[dict[str, Any]] = ok) -> float:
                    return statistics.median(r[k] for r in ok)

                print(
                    f"| {name} | {shape} | {conc} | {len(ok)}/{len(rs)} "
                    f"| **{statistics.median(rps):,.0f}** ({min(rps):,.0f}–{max(rps):,.0f}) "
                    f"| {med('p50_us') / 1e3:.2f} | {med('p99_us') / 1e3:.2f} "
                    f"| {med('foreign_cpu0_pct'):.0f} % |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
