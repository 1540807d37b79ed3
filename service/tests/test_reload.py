"""Hot reload against the real server: under load, on SIGHUP, and with broken bundles."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle_files import build_archive, read_bundle_files

from .support import DOCS_BUNDLE, ServerProcess, running_server

REQ = pb.CheckRequest(
    tenant="live",
    principal=vpb.EntityUid(type="User", id="bob"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)
# Bob may read doc1 through `read-public` (and `overflow`); the odd versions add a forbid.
FORBID = '@id("lockdown")\nforbid(principal, action, resource);\n'


def write_version(bundle: Path, n: int) -> None:
    (bundle / "rules" / "lockdown.cedar").write_text(FORBID if n % 2 else "// open\n")
    manifest = {"name": "live", "version": f"1.0.{n}"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def wait_for_version(
    stub: pb_grpc.AuthorizationServiceStub, version: str, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stub.Check(REQ, timeout=5).policy_version.version == version:
            return
        time.sleep(0.01)
    raise AssertionError(f"version {version} never served")


@pytest.fixture
def live_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "live"
    shutil.copytree(DOCS_BUNDLE, bundle)
    write_version(bundle, 0)
    return bundle


@pytest.mark.slow
def test_twenty_reloads_under_load_fail_no_request(live_bundle: Path) -> None:
    args = ["--bundle", f"live={live_bundle}", "--reload-debounce-ms", "50"]
    with running_server(args) as srv, srv.channel() as ch:
        srv.wait_for_log("watching")
        stub = pb_grpc.AuthorizationServiceStub(ch)
        seen: Counter[tuple[str, int]] = Counter()
        failures: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            with srv.channel() as own:
                own_stub = pb_grpc.AuthorizationServiceStub(own)
                while not stop.is_set():
                    try:
                        r = own_stub.Check(REQ, timeout=10)
                        seen[(r.policy_version.version, r.decision)] += 1
                    except grpc.RpcError as exc:
                        failures.append(exc)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            for n in range(1, 22):
                write_version(live_bundle, n)
                wait_for_version(stub, f"1.0.{n}")
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
        assert not failures, failures[:3]
        versions = {v for v, _ in seen}
        assert versions <= {f"1.0.{n}" for n in range(22)}
        assert len(versions) >= 15, versions  # the load really ran across the reloads
        for (version, decision), _count in seen.items():
            # Decision and version come from one snapshot: odd versions hold the forbid.
            odd = int(version.rsplit(".", 1)[1]) % 2 == 1
            assert decision == (pb.DECISION_DENY if odd else pb.DECISION_ALLOW), version
        assert sum(seen.values()) > 200


def test_broken_bundle_never_replaces_the_served_one(live_bundle: Path) -> None:
    args = ["--bundle", f"live={live_bundle}", "--reload-debounce-ms", "50"]
    with running_server(args) as srv, srv.channel() as ch:
        srv.wait_for_log("watching")
        stub = pb_grpc.AuthorizationServiceStub(ch)
        mark = len(srv.lines)
        (live_bundle / "rules" / "broken.cedar").write_text(
            "permit(principal, action, resource) when { 1 + };\n"
        )
        (live_bundle / "manifest.json").write_text(json.dumps({"name": "live", "version": "9.9.9"}))
        line = srv.wait_for_log(r"tenant live: bundle refused, keeping version 1\.0\.0", start=mark)
        assert "rules/broken.cedar:1" in srv.log()[srv.log().index(line) :]
        r = stub.Check(REQ)
        assert r.policy_version.version == "1.0.0" and r.decision == pb.DECISION_ALLOW
        # Fixing the file is picked up.
        (live_bundle / "rules" / "broken.cedar").unlink()
        wait_for_version(stub, "9.9.9")


def test_sighup_reloads_when_watching_is_off(live_bundle: Path) -> None:
    with (
        running_server(["--bundle", f"live={live_bundle}", "--no-watch"]) as srv,
        srv.channel() as ch,
    ):
        stub = pb_grpc.AuthorizationServiceStub(ch)
        write_version(live_bundle, 1)
        time.sleep(0.3)
        assert stub.Check(REQ).policy_version.version == "1.0.0"  # not watching
        srv.proc.send_signal(signal.SIGHUP)
        wait_for_version(stub, "1.0.1")
        assert stub.Check(REQ).decision == pb.DECISION_DENY


def test_bundles_dir_tenants_appear_and_disappear(tmp_path: Path) -> None:
    root = tmp_path / "tenants"
    root.mkdir()
    shutil.copytree(DOCS_BUNDLE, root / "acme")
    with running_server(["--bundles-dir", str(root), "--reload-debounce-ms", "50"]) as srv:
        srv.wait_for_log("watching")
        with srv.channel() as ch:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            acme = pb.CheckRequest()
            acme.CopyFrom(REQ)
            acme.tenant = "acme"
            assert stub.Check(acme).decision == pb.DECISION_ALLOW
            globex = pb.CheckRequest()
            globex.CopyFrom(acme)
            globex.tenant = "globex"
            with pytest.raises(grpc.RpcError) as err:
                stub.Check(globex)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            shutil.copytree(DOCS_BUNDLE, root / "globex")
            _eventually(lambda: stub.Check(globex).decision == pb.DECISION_ALLOW, srv)
            shutil.rmtree(root / "acme")
            _eventually(lambda: _code(stub, acme) == grpc.StatusCode.NOT_FOUND, srv)


def _code(stub: pb_grpc.AuthorizationServiceStub, req: pb.CheckRequest) -> grpc.StatusCode | None:
    try:
        stub.Check(req)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return None


def _eventually(check: object, srv: ServerProcess, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"condition not reached; server log:\n{srv.log()}")


def test_an_archive_replaced_by_rename_is_reloaded(live_bundle: Path, tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    target = archives / "live.tar.gz"
    target.write_bytes(build_archive(read_bundle_files(live_bundle)))
    with (
        running_server(["--bundle", f"live={target}", "--reload-debounce-ms", "50"]) as srv,
        srv.channel() as ch,
    ):
        srv.wait_for_log("watching")
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert stub.Check(REQ).policy_version.version == "1.0.0"
        (archives / "notes.txt").write_text("unrelated")  # ignored: not a bundle
        write_version(live_bundle, 1)
        staging = archives / ".live.tar.gz.tmp"
        staging.write_bytes(build_archive(read_bundle_files(live_bundle)))
        staging.rename(target)  # how deploy tools publish a file atomically
        wait_for_version(stub, "1.0.1")
        assert stub.Check(REQ).decision == pb.DECISION_DENY
