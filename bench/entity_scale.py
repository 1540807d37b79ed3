"""Check latency against 1,000 to 1,000,000 stored entities: the slice, not the store.

For each size, a generated organisation (users in groups in orgs, documents in folders;
~40% users, 50% documents) is written as a Cedar JSON file and loaded with the store's
bulk import (`pdp entities import`, timed: entities/s), into a SQLite store of its own.
Then, for every size at once, random Checks (a random user on a random document, one of
two actions; the decision cache off or bypassed, so every check is evaluated):

* in process: `Engine.check` on the bundle and that store;
* over gRPC: a `pdp serve` per size (`--no-decision-cache`), one client call at a time.

Rounds are interleaved (a block of checks on each size in turn, repeated), so a busy
machine slows every size alike; the figures are p50/p99 per size and the ratio of each
size's p50 to the smallest's (the goal: p50 at 1M within 1.5x of p50 at 1k). Also the
store's size on disk and each server's RSS after the run.

    .venv/bin/python bench/entity_scale.py                      # 1k, 100k, 1M (~15-30 min)
    .venv/bin/python bench/entity_scale.py --sizes 1000 10000 --rounds 5 --block 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc  # noqa: E402
from pdp._proto.v1 import value_pb2 as vpb  # noqa: E402
from pdp.bundle import load_bundle  # noqa: E402
from pdp.engine import Engine, Snapshot  # noqa: E402
from pdp.entity_store import open_store  # noqa: E402
from pdp.model import CheckInput, EntityRef  # noqa: E402

TENANT = "bench"
PDP = [str(Path(sys.executable).parent / "pdp")]

SCHEMA = """
entity Org { frozen: Bool };
entity Group in [Group, Org];
entity User in [Group] { org: Org, suspended: Bool };
entity Folder in [Folder];
entity Document in [Folder] { owner: User, org: Org };
action read, edit appliesTo { principal: User, resource: Document };
"""
POLICIES = """
@id("same-org-read")
permit(principal, action == Action::"read", resource) when { principal.org == resource.org };
@id("owner-edit")
permit(principal, action == Action::"edit", resource) when { resource.owner == principal };
@id("editors-in-shared")
permit(principal in Group::"editors", action, resource in Folder::"shared");
@id("suspended")
forbid(principal, action, resource) when { principal.suspended };
@id("frozen-org")
forbid(principal, action == Action::"edit", resource) when { resource.org.frozen };
"""


def _ref(t: str, i: str) -> dict[str, Any]:
    return {"type": t, "id": i}


def _ent(t: str, i: str, attrs: dict[str, Any], parents: list[dict[str, Any]]) -> str:
    return json.dumps({"uid": _ref(t, i), "attrs": attrs, "parents": parents})


@dataclass
class World:
    """One generated organisation: how many of each, for drawing requests."""

    size: int
    users: int = 0
    documents: int = 0


def generate(size: int, path: Path, seed: int = 7) -> World:
    """`size` entities as a Cedar JSON list, one entity a line (written as it goes)."""
    rng = random.Random(seed)
    # The same shape at every size (so the slices compare): 10 orgs, groups nested at most
    # once (in one of 10 top groups), folders two levels under `shared`.
    orgs = 10
    groups = max(20, size // 50)
    folders = max(20, size // 20)
    users = max(1, size * 2 // 5)
    documents = max(1, size - orgs - groups - folders - users)
    world = World(size, users, documents)

    def org() -> dict[str, Any]:
        return {"__entity": _ref("Org", f"o{rng.randrange(orgs)}")}

    def group_name(g: int) -> str:
        return "editors" if g == 0 else f"g{g}"

    def folder_name(f: int) -> str:
        return "shared" if f == 0 else f"f{f}"

    with path.open("w") as out:
        first = True

        def emit(line: str) -> None:
            nonlocal first
            out.write(("[\n" if first else ",\n") + line)
            first = False

        for i in range(orgs):
            emit(_ent("Org", f"o{i}", {"frozen": i == 9}, []))
        for i in range(groups):
            parents = [_ref("Org", f"o{rng.randrange(orgs)}")]
            if i >= 10 and rng.random() < 0.3:
                parents.append(_ref("Group", group_name(rng.randrange(10))))
            emit(_ent("Group", group_name(i), {}, parents))
        for i in range(folders):
            if i == 0:
                parents = []
            elif i <= 10:
                parents = [_ref("Folder", "shared")]
            else:
                parents = [_ref("Folder", folder_name(rng.randint(1, 10)))]
            emit(_ent("Folder", folder_name(i), {}, parents))
        for i in range(users):
            chosen = rng.sample(range(1, groups), rng.randint(1, 3))
            chosen += [0] if rng.random() < 0.1 else []  # a tenth are editors, at any size
            member = [_ref("Group", group_name(g)) for g in chosen]
            emit(_ent("User", f"u{i}", {"org": org(), "suspended": i % 50 == 49}, member))
        for i in range(documents):
            owner = {"__entity": _ref("User", f"u{rng.randrange(users)}")}
            parents = [_ref("Folder", folder_name(rng.randrange(folders)))]
            emit(_ent("Document", f"d{i}", {"owner": owner, "org": org()}, parents))
        out.write("\n]\n")
    return world


def write_bundle(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "manifest.json").write_text(json.dumps({"name": "scale", "version": "1"}))
    (where / "schema.cedarschema").write_text(SCHEMA)
    (where / "policies.cedar").write_text(POLICIES)
    return where


def requests(world: World, count: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [
        (
            f"u{rng.randrange(world.users)}",
            rng.choice(("read", "edit")),
            f"d{rng.randrange(world.documents)}",
        )
        for _ in range(count)
    ]


def disk_bytes(where: Path) -> int:
    return sum(p.stat().st_size for p in where.rglob("*") if p.is_file())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Size:
    world: World
    bundle: Path
    data: Path
    engine: Engine | None = None
    stub: pb_grpc.AuthorizationServiceStub | None = None
    pid: int = 0
    import_seconds: float = 0.0
    in_process: list[float] = field(default_factory=list)
    over_grpc: list[float] = field(default_factory=list)
    allowed: int = 0


@contextmanager
def serving(size: Size) -> Iterator[None]:
    env = {**os.environ, "PDP_DATA_DIR": str(size.data), "PDP_METRICS_LISTEN": "off"}
    proc = subprocess.Popen(
        [
            *PDP,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-watch",
            "--no-decision-cache",
            "--admin-listen",  # one server per size: they cannot share the admin port
            "off",
            "--bundle",
            f"{TENANT}={size.bundle}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    port = 0
    for line in proc.stdout:
        m = re.search(r"listening on \S+:(\d+)", line)
        if m:
            port = int(m[1])
            break
    if not port:
        proc.kill()
        raise SystemExit(f"server for {size.world.size} did not start")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    size.stub, size.pid = pb_grpc.AuthorizationServiceStub(channel), proc.pid
    try:
        yield
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=30)


def time_in_process(size: Size, batch: list[tuple[str, str, str]]) -> None:
    assert size.engine is not None
    for p, a, r in batch:
        check = CheckInput(EntityRef("User", p), EntityRef("Action", a), EntityRef("Document", r))
        start = time.perf_counter()
        result = size.engine.check(TENANT, check)
        size.in_process.append(time.perf_counter() - start)
        size.allowed += result.decision.value == "allow"


def time_grpc(size: Size, batch: list[tuple[str, str, str]]) -> None:
    assert size.stub is not None
    for p, a, r in batch:
        request = pb.CheckRequest(
            tenant=TENANT,
            principal=vpb.EntityUid(type="User", id=p),
            action=vpb.EntityUid(type="Action", id=a),
            resource=vpb.EntityUid(type="Document", id=r),
        )
        start = time.perf_counter()
        size.stub.Check(request, timeout=30)
        size.over_grpc.append(time.perf_counter() - start)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--block", type=int, default=200, help="checks per size per round")
    ap.add_argument(
        "--work", type=Path, default=None, help="keep stores here, and reuse them (default: temp)"
    )
    ap.add_argument("--import-only", action="store_true", help="build the stores, then stop")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pdp-entity-scale-"))
    bundle = write_bundle(work / "bundle")
    sizes: list[Size] = []
    for n in args.sizes:
        where = work / str(n)
        where.mkdir(parents=True, exist_ok=True)
        source = where / "entities.json"
        done = where / "imported.json"  # with --work: a store imported by an earlier run
        if done.exists():
            kept = json.loads(done.read_text())
            world = World(n, kept["users"], kept["documents"])
            size = Size(world, bundle, where / "data", import_seconds=kept["seconds"])
        else:
            world = generate(n, source)
            size = Size(world, bundle, where / "data")
            env = {**os.environ, "PDP_DATA_DIR": str(size.data)}
            start = time.perf_counter()
            subprocess.run(
                [*PDP, "entities", "import", str(source), "--tenant", TENANT]
                + ["--bundle", str(bundle)],
                check=True,
                env=env,
                capture_output=True,
            )
            size.import_seconds = time.perf_counter() - start
            done.write_text(
                json.dumps(
                    {
                        "users": world.users,
                        "documents": world.documents,
                        "seconds": size.import_seconds,
                    }
                )
            )
        print(
            f"{n:>9,} entities imported in {size.import_seconds:.1f} s "
            f"({n / size.import_seconds:,.0f}/s), store {disk_bytes(size.data) / 1e6:.1f} MB",
            flush=True,
        )
        if args.import_only:
            continue
        store = open_store(None, size.data)
        size.engine = Engine(Snapshot.of({TENANT: load_bundle(bundle)}), store=store)
        sizes.append(size)
    if args.import_only:
        return
    with ExitStack() as stack:
        for size in sizes:
            stack.enter_context(serving(size))
        for size in sizes:  # warm-up: first connections, first pages of each store
            time_in_process(size, requests(size.world, 50, 1))
            time_grpc(size, requests(size.world, 50, 2))
            size.in_process.clear()
            size.over_grpc.clear()
            size.allowed = 0
        for round_ in range(args.rounds):
            for size in sizes:
                time_in_process(size, requests(size.world, args.block, 100 + round_))
                time_grpc(size, requests(size.world, args.block, 200 + round_))
        rss = {size.world.size: rss_kib(size.pid) for size in sizes}
    base_in = statistics.median(sizes[0].in_process)
    base_grpc = statistics.median(sizes[0].over_grpc)
    print(
        "\nentities   in-process p50 / p99 ms (x p50 of smallest)   gRPC p50 / p99 ms (x)   "
        "allow %  server RSS MB  import/s  store MB"
    )
    rows = []
    for size in sizes:
        n = size.world.size
        row = {
            "entities": n,
            "in_process_p50_ms": pct(size.in_process, 0.5),
            "in_process_p99_ms": pct(size.in_process, 0.99),
            "grpc_p50_ms": pct(size.over_grpc, 0.5),
            "grpc_p99_ms": pct(size.over_grpc, 0.99),
            "in_process_ratio": statistics.median(size.in_process) / base_in,
            "grpc_ratio": statistics.median(size.over_grpc) / base_grpc,
            "allow_share": size.allowed / len(size.in_process),
            "server_rss_mb": rss[n] / 1024,
            "import_per_s": n / size.import_seconds,
            "store_mb": disk_bytes(size.data) / 1e6,
        }
        rows.append(row)
        print(
            f"{n:>9,}   {row['in_process_p50_ms']:6.3f} / {row['in_process_p99_ms']:6.3f} "
            f"({row['in_process_ratio']:.2f}x)              "
            f"{row['grpc_p50_ms']:6.3f} / {row['grpc_p99_ms']:6.3f} ({row['grpc_ratio']:.2f}x)   "
            f"{100 * row['allow_share']:5.1f}   {row['server_rss_mb']:8.1f}   "
            f"{row['import_per_s']:8,.0f}   {row['store_mb']:7.1f}"
        )
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    print(
        f"\n{len(sizes[0].in_process)} checks per size and path, {args.rounds} interleaved "
        f"rounds; results in {work / 'results.json'}"
    )


if __name__ == "__main__":
    main()
