"""Tenants are the same whichever way they are configured; collisions stop the start-up."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle_files import build_archive, read_bundle_files
from pdp.tenants import BundleSources

from .support import DOCS_BUNDLE, REPO, pdp_command, running_server

REQ = pb.CheckRequest(
    principal=vpb.EntityUid(type="User", id="alice"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)


def serve_exits(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pdp_command(), "serve", "--no-watch", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def tenants_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tenants"
    root.mkdir()
    shutil.copytree(DOCS_BUNDLE, root / "acme")
    return root


@pytest.mark.parametrize("way", ["flag", "env", "toml"])
def test_a_bundles_dir_is_the_only_source_of_tenants_however_configured(
    way: str, tenants_dir: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "pdp.toml"
    cfg.write_text(f'bundles_dir = "{tenants_dir}"\n')
    args, env = {
        "flag": (["--bundles-dir", str(tenants_dir)], {}),
        "env": ([], {"PDP_BUNDLES_DIR": str(tenants_dir)}),
        "toml": (["--config", str(cfg)], {}),
    }[way]
    with running_server([*args, "--no-watch"], env=env) as srv, srv.channel() as ch:
        assert srv.wait_for_log("listening on").endswith("tenants: acme")
        stub = srv.stub(ch)
        acme = pb.CheckRequest()
        acme.CopyFrom(REQ)
        acme.tenant = "acme"
        assert stub.Check(acme).decision == pb.DECISION_ALLOW
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(REQ)  # empty tenant = `default`: not configured, so not the demo bundle
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_tenant_in_bundles_and_in_bundles_dir_is_a_start_up_error(tenants_dir: Path) -> None:
    shutil.copytree(DOCS_BUNDLE, tenants_dir / "default")
    r = serve_exits(["--bundle", f"default={REPO / 'policies'}", "--bundles-dir", str(tenants_dir)])
    assert r.returncode == 2, r.stderr
    assert "invalid setting bundles_dir: " in r.stderr
    assert f"'default' is configured twice: {REPO / 'policies'} and {tenants_dir / 'default'}" in (
        r.stderr
    )


def test_a_directory_and_an_archive_of_one_name_are_a_start_up_error(tenants_dir: Path) -> None:
    archive = tenants_dir / "acme.tar.gz"
    archive.write_bytes(build_archive(read_bundle_files(DOCS_BUNDLE)))
    r = serve_exits([], env={"PDP_BUNDLES_DIR": str(tenants_dir)})
    assert r.returncode == 2, r.stderr
    assert f"'acme' is configured twice: {tenants_dir / 'acme'} and {archive}" in r.stderr


def test_the_start_up_log_names_each_tenant_and_its_source(tenants_dir: Path) -> None:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--bundles-dir", str(tenants_dir), "--no-watch"]
    with running_server(args) as srv:
        srv.wait_for_log(
            rf"tenant acme: serving bundle docs .* from {tenants_dir / 'acme'} "
            rf"\(bundles_dir {tenants_dir}\)"
        )
        srv.wait_for_log(rf"tenant docs: serving bundle docs .* from {DOCS_BUNDLE} \(bundles\)")
        assert srv.wait_for_log("listening on").endswith("tenants: acme, docs")
    with running_server(["--no-watch"]) as srv:  # nothing configured: the built-in default
        srv.wait_for_log(r"tenant default: serving bundle default .*\(built-in default\)")


def test_a_bundles_dir_archive_loses_one_suffix_only(tenants_dir: Path) -> None:
    """`x.tgz.tar.gz` was served as tenant `x` (every suffix stripped): beside `x.tgz` the
    two files were one tenant's conflict, and alone it named a tenant it does not say. A
    directory's name is not an archive's: `w.tgz/` is tenant `w.tgz`."""
    archive = build_archive(read_bundle_files(DOCS_BUNDLE))
    for name in ("x.tgz.tar.gz", "x.tgz", "y.tar.gz.tgz", "z.tar.gz"):
        (tenants_dir / name).write_bytes(archive)
    shutil.copytree(DOCS_BUNDLE, tenants_dir / "w.tgz")  # a directory keeps its whole name
    found = BundleSources({}, tenants_dir).scan()
    assert not found.conflicts and not found.ignored
    assert {t: s.path.name for t, s in found.sources.items()} == {
        "acme": "acme",
        "x.tgz": "x.tgz.tar.gz",
        "x": "x.tgz",
        "y.tar.gz": "y.tar.gz.tgz",
        "z": "z.tar.gz",
        "w.tgz": "w.tgz",
    }
