"""One gRPC figure for the policy index: Check p50 over loopback, default vs sharing bundle.

    .venv/bin/python bench/index_grpc.py [--rounds 5] [--calls 300]

One real `pdp serve` with four tenants: the default bundle and the 10,000-link sharing
bundle (`service/tests/sharing.py`), each as compiled and with `"index_policies": false`.
One client, one call in flight, unary `Check`; the tenants are measured in interleaved
rounds (each round times every tenant in turn) and each figure is the median of the
rounds' p50s. Requests cycle as in `index_figures.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_figures import DEFAULT_REQUESTS, ROOT, sharing_requests  # noqa: E402
from tests.sharing import sharing_bundle_files  # noqa: E402
from tests.support import running_server  # noqa: E402

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc  # noqa: E402
from pdp._proto.v1 import value_pb2 as vpb  # noqa: E402
from pdp.bundle_files import BundleFiles, read_bundle_files  # noqa: E402
from pdp.model import CheckInput  # noqa: E402


def write(files: BundleFiles, root: Path, name: str, indexed: bool) -> None:
    target = root / name
    target.mkdir()
    for path, content in files.files.items():
        if path == "manifest.json" and not indexed:
            content = json.dumps({**json.loads(content), "index_policies": False}).encode()
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_bytes(content)


def message(tenant: str, r: CheckInput) -> pb.CheckRequest:
    def uid(e: object) -> vpb.EntityUid:
        return vpb.EntityUid(type=e.type, id=e.id)  # type: ignore[attr-defined]

    return pb.CheckRequest(
        tenant=tenant,
        principal=uid(r.principal),
        action=uid(r.action),
        resource=uid(r.resource),
        context_json=json.dumps(r.context),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        default, sharing = read_bundle_files(ROOT / "policies"), sharing_bundle_files()
        tenants = {
            "default": (default, True, DEFAULT_REQUESTS),
            "default-whole": (default, False, DEFAULT_REQUESTS),
            "sharing": (sharing, True, sharing_requests(300, ("read", "comment", "edit"))),
            "sharing-whole": (sharing, False, sharing_requests(300, ("read", "comment", "edit"))),
        }
        for name, (files, indexed, _) in tenants.items():
            write(files, root, name, indexed)
        with running_server(["--bundles-dir", str(root), "--no-watch"], timeout=300) as srv:
            with srv.channel() as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                msgs = {t: [message(t, r) for r in reqs] for t, (_, _, reqs) in tenants.items()}
                for t, ms in msgs.items():  # warm
                    for m in ms[: 50 if t.endswith("whole") else 2_000]:
                        stub.Check(m, timeout=30)
                p50s: dict[str, list[float]] = {t: [] for t in msgs}
                for round_ in range(args.rounds):
                    for t, ms in msgs.items():
                        calls = 10 if t == "sharing-whole" else args.calls
                        times = []
                        for i in range(calls):
                            m = ms[(round_ * calls + i) % len(ms)]
                            start = time.perf_counter_ns()
                            stub.Check(m, timeout=30)
                            times.append(time.perf_counter_ns() - start)
                        p50s[t].append(statistics.median(times) / 1000)
    print(f"gRPC Check p50 (µs), median of {args.rounds} interleaved rounds, 1 in flight:")
    for t, values in p50s.items():
        print(f"  {t:14s} {statistics.median(values):9.1f}  ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
