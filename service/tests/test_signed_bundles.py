"""Signed bundles against the real server: every tampered part refused at start-up and at
reload (the last good bundle keeps serving), key rotation, and no downgrade, also across a
restart (the highest version is kept in `data_dir`)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdp import signing
from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle_files import build_archive, read_bundle_files

from .metrics_support import metrics_port, scrape, value
from .support import REPO, ServerProcess, pdp_command, running_server

POLICIES = REPO / "policies"
# Bob edits doc-1 as its editor (README): ALLOW under the default bundle.
REQ = pb.CheckRequest(
    principal=vpb.EntityUid(type="User", id="bob"),
    action=vpb.EntityUid(type="Action", id="edit"),
    resource=vpb.EntityUid(type="Document", id="doc-1"),
)


def pdp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pdp_command(), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@dataclass(frozen=True)
class Keys:
    root: Path

    def private(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def public(self, name: str) -> Path:
        return self.root / f"{name}.pub"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    for name in ("old", "new", "rogue"):
        r = pdp("bundle", "keygen", "-o", str(root / name))
        assert r.returncode == 0, r.stderr
    return Keys(root)


def signed_copy(
    dest: Path,
    keys: Keys,
    key: str = "old",
    version: str | None = None,
    tenants: tuple[str, ...] = (),
) -> Path:
    shutil.copytree(POLICIES, dest)
    if version is not None:
        set_version(dest, version)
    sign(dest, keys.private(key), tenants)
    return dest


def sign(bundle: Path, private: Path, tenants: tuple[str, ...] = ()) -> None:
    """What `pdp bundle sign` does (test_cli_sign_and_verify runs it), in process: fast."""
    files = read_bundle_files(bundle)
    manifest = json.loads(files.files["manifest.json"])
    key = signing.load_private_key(private)
    signature = signing.signature_file(files, manifest["name"], manifest["version"], key, tenants)
    (bundle / "signature.json").write_bytes(signature)


def set_version(bundle: Path, version: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "version": version}))


def _policy_byte(b: Path, keys: Keys) -> None:
    path = b / "rbac" / "documents.cedar"
    data = bytearray(path.read_bytes())
    data[data.index(b" ")] = ord("\t")  # one byte, same meaning to Cedar: still a tamper
    path.write_bytes(bytes(data))


def _schema(b: Path, keys: Keys) -> None:
    with (b / "schema.cedarschema").open("a") as f:
        f.write("\n")


def _entities(b: Path, keys: Keys) -> None:
    entities = json.loads((b / "entities.json").read_text())
    entities[0]["parents"] = []
    (b / "entities.json").write_text(json.dumps(entities))


def _manifest_version(b: Path, keys: Keys) -> None:
    set_version(b, "9.0.0")  # higher: only the signature refuses it


def _added_file(b: Path, keys: Keys) -> None:
    (b / "NOTES.txt").write_text("not part of what was signed\n")


def _signature(b: Path, keys: Keys) -> None:
    sig = json.loads((b / "signature.json").read_text())
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 1
    sig["signature"] = base64.b64encode(bytes(raw)).decode()
    (b / "signature.json").write_text(json.dumps(sig))


def _untrusted_key(b: Path, keys: Keys) -> None:
    sign(b, keys.private("rogue"))


def _untrusted_key_claiming_a_trusted_id(b: Path, keys: Keys) -> None:
    trusted = json.loads((b / "signature.json").read_text())["key_id"]
    _untrusted_key(b, keys)
    sig = json.loads((b / "signature.json").read_text())
    (b / "signature.json").write_text(json.dumps({**sig, "key_id": trusted}))


def _unsigned(b: Path, keys: Keys) -> None:
    (b / "signature.json").unlink()


def _malformed_signature(b: Path, keys: Keys) -> None:
    (b / "signature.json").write_text('{"signature": "not base64!"}')


DOES_NOT_VERIFY = "signature.json: does not verify with any of the 2 trusted key(s)"
TAMPERS: dict[str, tuple[Callable[[Path, Keys], None], str]] = {
    "policy-byte": (_policy_byte, DOES_NOT_VERIFY),
    "schema": (_schema, DOES_NOT_VERIFY),
    "entities": (_entities, DOES_NOT_VERIFY),
    "manifest-version": (_manifest_version, DOES_NOT_VERIFY),
    "added-file": (_added_file, DOES_NOT_VERIFY),
    "signature": (_signature, DOES_NOT_VERIFY),
    "untrusted-key": (_untrusted_key, f"{DOES_NOT_VERIFY} (key id "),
    "untrusted-key-claiming-trusted-id": (_untrusted_key_claiming_a_trusted_id, DOES_NOT_VERIFY),
    "unsigned": (_unsigned, "signature.json: missing: the bundle is not signed"),
    "malformed": (_malformed_signature, "signature.json: malformed: signature is not the base64"),
}


def tampered(root: Path, keys: Keys, name: str, archive: bool) -> Path:
    b = signed_copy(root / f"{name}-dir", keys)
    TAMPERS[name][0](b, keys)
    if not archive:
        return b
    out = root / f"{name}.tar.gz"
    out.write_bytes(build_archive(read_bundle_files(b)))
    return out


def trust_args(keys: Keys, data_dir: Path) -> list[str]:
    return [
        "--bundle-verification-key",
        str(keys.public("old")),
        "--bundle-verification-key",
        str(keys.public("new")),
        "--data-dir",
        str(data_dir),
    ]


def test_every_tampered_part_is_refused_at_start_up(tmp_path: Path, keys: Keys) -> None:
    """One start with every tampered bundle as its own tenant, as a directory and as a
    .tar.gz: the start is refused and the error names each bundle with its reason."""
    args: list[str] = []
    expected: dict[Path, str] = {}
    for i, name in enumerate(TAMPERS):
        for archive in (False, True):
            path = tampered(tmp_path / ("tar" if archive else "dir"), keys, name, archive)
            args += ["--bundle", f"t{i}{'a' if archive else 'd'}={path}"]
            expected[path] = TAMPERS[name][1]
    r = pdp("serve", "--listen", "127.0.0.1:0", *trust_args(keys, tmp_path / "data"), *args)
    assert r.returncode == 1, r.stderr
    assert "cannot start" in r.stderr
    for path, reason in expected.items():
        block = r.stderr.split(f"bundle {path} refused", 1)
        assert len(block) == 2, f"{path} not refused:\n{r.stderr}"
        assert reason in block[1].split("\n")[1], f"{path}: {block[1][:400]}"
    assert len(expected) == 2 * len(TAMPERS) == 20


def test_the_signed_bundle_starts_as_a_directory_and_as_an_archive(
    tmp_path: Path, keys: Keys
) -> None:
    good = signed_copy(tmp_path / "good", keys)
    archive = tmp_path / "good.tar.gz"
    r = pdp("bundle", "build", str(good), "-o", str(archive))
    assert r.returncode == 0, r.stderr
    # A signature without its key id still verifies: the id only orders the keys.
    sig = json.loads((good / "signature.json").read_text())
    del sig["key_id"]
    (good / "signature.json").write_text(json.dumps(sig))
    with (
        running_server(
            [*trust_args(keys, tmp_path / "data"), "--no-watch"]
            + ["--bundle", f"default={good}", "--bundle", f"arch={archive}"]
        ) as srv,
        srv.channel() as ch,
    ):
        stub = pb_grpc.AuthorizationServiceStub(ch)
        for tenant in ("default", "arch"):
            r2 = stub.Check(pb.CheckRequest(tenant=tenant, **_fields()), timeout=10)
            assert r2.decision == pb.DECISION_ALLOW
            assert r2.policy_version.version == "1.1.0"


def _fields() -> dict[str, vpb.EntityUid]:
    return {"principal": REQ.principal, "action": REQ.action, "resource": REQ.resource}


class Served:
    """A server serving `default` from a symlink that each step swaps atomically."""

    def __init__(self, root: Path, srv: ServerProcess, stub: pb_grpc.AuthorizationServiceStub):
        self.root, self.srv, self.stub = root, srv, stub
        self.link = root / "live"
        self.n = 0

    def publish(self, bundle: Path) -> int:
        """Swap `bundle` in; returns the log position from which its outcome appears."""
        start = len(self.srv.lines)
        self.n += 1
        staging = self.root / f".staging{self.n}"
        staging.symlink_to(bundle)
        os.replace(staging, self.link)
        return start

    def answer(self) -> pb.CheckResponse:
        return self.stub.Check(REQ, timeout=10)

    def failures(self) -> float:
        return value(
            scrape(metrics_port(self.srv)), "pdp_bundle_reload_failures_total", tenant="default"
        )


@pytest.fixture
def served(tmp_path: Path, keys: Keys) -> Iterator[Served]:
    first = signed_copy(tmp_path / "v1.1.0", keys)
    (tmp_path / "live").symlink_to(first)
    args = [*trust_args(keys, tmp_path / "data"), "--bundle", f"default={tmp_path / 'live'}"]
    with running_server([*args, "--reload-debounce-ms", "50"]) as srv, srv.channel() as ch:
        srv.wait_for_log("watching")
        yield Served(tmp_path, srv, pb_grpc.AuthorizationServiceStub(ch))


def test_every_tampered_part_is_refused_at_reload_and_the_old_bundle_keeps_serving(
    served: Served, keys: Keys
) -> None:
    before = served.answer()
    assert before.decision == pb.DECISION_ALLOW
    failures = served.failures()
    for name, (_, reason) in TAMPERS.items():
        start = served.publish(tampered(served.root / "t", keys, name, archive=False))
        line = served.srv.wait_for_log("tenant default: bundle refused", start=start)
        assert "keeping version 1.1.0" in line, line
        assert reason in "\n".join(served.srv.lines[start:]), name
        after = served.answer()
        assert after.decision == pb.DECISION_ALLOW
        assert after.policy_version == before.policy_version, name
        failures += 1
        assert served.failures() == failures, name  # counted as a reload failure


def test_key_rotation_and_no_downgrade_at_reload_and_across_a_restart(
    served: Served, keys: Keys, tmp_path: Path
) -> None:
    # Signed by the second trusted key, a higher version: served.
    served.publish(signed_copy(tmp_path / "v1.2.0", keys, "new", "1.2.0"))
    _wait(lambda: served.answer().policy_version.version == "1.2.0")
    # A validly signed older version is a downgrade: refused, 1.2.0 keeps serving.
    old = signed_copy(tmp_path / "v1.1.5", keys, "old", "1.1.5")
    start = served.publish(old)
    line = served.srv.wait_for_log("tenant default: bundle refused", start=start)
    assert "keeping version 1.2.0" in line
    served.srv.wait_for_log(
        "version 1.1.5 is lower than 1.2.0, the version being served: a downgrade", start=start
    )
    serving = served.answer().policy_version
    assert serving.version == "1.2.0"
    state = json.loads((tmp_path / "data" / "bundle_versions.json").read_text())
    recorded = {"default": {"version": "1.2.0", "digest": serving.digest}}
    assert state == recorded
    served.srv.proc.terminate()
    served.srv.proc.wait(timeout=20)

    # A restart with the old bundle is a downgrade too (the highest version is on disk)...
    args = [*trust_args(keys, tmp_path / "data"), "--bundle", f"default={old}", "--no-watch"]
    r = pdp("serve", "--listen", "127.0.0.1:0", *args)
    assert r.returncode == 1
    assert "version 1.1.5 is lower than 1.2.0, the highest served (recorded in" in r.stderr
    # ...unless rollback is allowed, explicitly.
    with running_server([*args, "--allow-bundle-rollback"]) as srv, srv.channel() as ch:
        answer = pb_grpc.AuthorizationServiceStub(ch).Check(REQ, timeout=10)
        assert answer.policy_version.version == "1.1.5"
    # Rolled back, the record keeps the highest: the next restart needs the flag again.
    state = json.loads((tmp_path / "data" / "bundle_versions.json").read_text())
    assert state == recorded


def test_another_build_of_the_recorded_version_refuses_restart(tmp_path: Path, keys: Keys) -> None:
    first = signed_copy(tmp_path / "first", keys, "old", "1.2.0")
    args = [*trust_args(keys, tmp_path / "data"), "--no-watch"]
    with running_server([*args, "--bundle", f"default={first}"]) as srv, srv.channel() as ch:
        digest = pb_grpc.AuthorizationServiceStub(ch).Check(REQ, timeout=10).policy_version.digest
    # Another signed build under an equal version (`1.2` = `1.2.0`), other content.
    other = signed_copy(tmp_path / "other", keys, "old", "1.2")
    (other / "extra.cedar").write_text("forbid(principal, action, resource) when { false };\n")
    sign(other, keys.private("old"))
    r = pdp("serve", "--listen", "127.0.0.1:0", *args, "--bundle", f"default={other}")
    assert r.returncode == 1
    assert "version 1.2 equals 1.2.0, the highest served (recorded in" in r.stderr
    assert "another build of a served version" in r.stderr
    # A state file from before digests were recorded (version strings) still reads: the
    # version rule alone applies, and the first start records the digest beside it.
    state = tmp_path / "data" / "bundle_versions.json"
    state.write_text(json.dumps({"default": "1.2.0"}))
    with running_server([*args, "--bundle", f"default={other}"]) as srv, srv.channel() as ch:
        served_digest = pb_grpc.AuthorizationServiceStub(ch).Check(REQ, timeout=10)
    assert served_digest.policy_version.digest != digest
    assert json.loads(state.read_text()) == {
        "default": {"version": "1.2", "digest": served_digest.policy_version.digest}
    }


def test_a_corrupt_version_record_refuses_start_up(tmp_path: Path, keys: Keys) -> None:
    good = signed_copy(tmp_path / "good", keys)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bundle_versions.json").write_text("{not json")
    r = pdp(
        "serve",
        "--listen",
        "127.0.0.1:0",
        *trust_args(keys, tmp_path / "data"),
        "--bundle",
        f"default={good}",
    )
    assert r.returncode == 1
    assert "bundle_versions.json: not JSON" in r.stderr


def test_a_bad_verification_key_is_a_settings_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    r = pdp("serve", "--listen", "127.0.0.1:0", "--bundle-verification-key", str(bad))
    assert r.returncode == 2
    assert "invalid setting bundle_verification_keys" in r.stderr
    assert str(bad) in r.stderr


def test_cli_sign_and_verify(tmp_path: Path, keys: Keys) -> None:
    b = signed_copy(tmp_path / "b", keys)
    ok = pdp(
        "bundle",
        "verify",
        "--key",
        str(keys.public("rogue")),
        "--key",
        str(keys.public("old")),
        str(b),
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: default 1.1.0" in ok.stdout
    wrong = pdp("bundle", "verify", "--key", str(keys.public("rogue")), str(b))
    assert wrong.returncode == 1
    assert "does not verify with any of the 1 trusted key(s)" in wrong.stderr
    # The private key is created owner-only, and keygen never overwrites a key.
    assert keys.private("old").stat().st_mode & 0o777 == 0o600
    again = pdp("bundle", "keygen", "-o", str(keys.root / "old"))
    assert again.returncode == 2
    # Signing an archive rewrites it with the signature inside; it then verifies.
    archive = tmp_path / "b.tar.gz"
    shutil.copytree(POLICIES, tmp_path / "plain")
    assert pdp("bundle", "build", str(tmp_path / "plain"), "-o", str(archive)).returncode == 0
    assert pdp("bundle", "sign", "--key", str(keys.private("new")), str(archive)).returncode == 0
    ok = pdp("bundle", "verify", "--key", str(keys.public("new")), str(archive))
    assert ok.returncode == 0, ok.stderr
    assert "for any tenant" in ok.stdout
    # Bound to tenants: verify says for which, and as another tenant it fails.
    signed = pdp(
        "bundle", "sign", "--key", str(keys.private("new")), "--tenant", "b", "--tenant", "a",
        str(archive),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert "for tenant(s) a, b" in signed.stdout
    verify = ["bundle", "verify", "--key", str(keys.public("new"))]
    for tenant in ((), ("--tenant", "a"), ("--tenant", "b", "--require-tenant-bound")):
        ok = pdp(*verify, *tenant, str(archive))
        assert ok.returncode == 0, (tenant, ok.stderr)
        assert "for tenant(s) a, b" in ok.stdout
    other = pdp(*verify, "--tenant", "c", str(archive))
    assert other.returncode == 1
    assert "signed for tenant(s) a, b, not for tenant c" in other.stderr
    assert pdp(*verify, "--require-tenant-bound", str(archive)).returncode == 2
    named = pdp(*verify, "--tenant", "not a name", str(archive))
    assert named.returncode == 2 and "--tenant: 'not a name' must match" in named.stderr
    keyless = pdp("serve", "--listen", "127.0.0.1:0", "--require-tenant-bound-signatures")
    assert keyless.returncode == 2
    assert "require_tenant_bound_signatures: needs bundle_verification_keys" in keyless.stderr
    bad = pdp("bundle", "sign", "--key", str(keys.private("new")), "--tenant", "a b", str(b))
    assert bad.returncode == 2
    assert "--tenant: tenants: " in bad.stderr and "'a b' must match" in bad.stderr


def _rebound(tenants: list[str] | None) -> Callable[[Path, Keys], None]:
    """Edit the tenants of a bundle signed for `acme` (None: drop the field)."""

    def edit(b: Path, keys: Keys) -> None:
        sig = json.loads((b / "signature.json").read_text())
        sig.pop("tenants")
        if tenants is not None:
            sig["tenants"] = tenants
        (b / "signature.json").write_text(json.dumps(sig))

    return edit


def test_a_bundle_signed_for_one_tenant_is_refused_for_any_other(
    tmp_path: Path, keys: Keys
) -> None:
    """One start: acme's signed bundle served as acme, refused as beta (a replay into
    another tenant's source), and every edit of its tenant list refused as a bad signature,
    even as the tenant the edit names."""
    acme = signed_copy(tmp_path / "acme", keys, tenants=("acme",))
    edits = {
        "dropped": (None, "acme"),
        "emptied": ([], "acme"),
        "swapped": (["beta"], "beta"),
        "added": (["acme", "beta"], "beta"),
    }
    args = ["--bundle", f"acme={acme}", "--bundle", f"beta={acme}"]
    for name, (tenants, tenant) in edits.items():
        b = signed_copy(tmp_path / name, keys, tenants=("acme",))
        _rebound(tenants)(b, keys)
        args += ["--bundle", f"{tenant}-{name}={b}"] if tenant != "acme" else []
        args += ["--bundle", f"acme{name}={b}"] if tenant == "acme" else []
    r = pdp("serve", "--listen", "127.0.0.1:0", *trust_args(keys, tmp_path / "data"), *args)
    assert r.returncode == 1, r.stderr
    refusals = r.stderr.split(f"bundle {acme} refused")
    assert len(refusals) == 2, r.stderr  # as beta only, not as acme
    assert "signed for tenant(s) acme, not for tenant beta" in refusals[1].split("\n")[1]
    for name in edits:
        block = r.stderr.split(f"bundle {tmp_path / name} refused", 1)
        assert len(block) == 2, f"{name} not refused:\n{r.stderr}"
        assert DOES_NOT_VERIFY in block[1].split("\n")[1], (name, block[1][:300])
    # The same bundle as acme alone serves.
    with (
        running_server(
            [*trust_args(keys, tmp_path / "data"), "--no-watch", "--bundle", f"acme={acme}"]
        ) as srv,
        srv.channel() as ch,
    ):
        answer = pb_grpc.AuthorizationServiceStub(ch).Check(
            pb.CheckRequest(tenant="acme", **_fields()), timeout=10
        )
        assert answer.decision == pb.DECISION_ALLOW


def test_another_tenants_signed_bundle_is_refused_at_reload(
    served: Served, keys: Keys, tmp_path: Path
) -> None:
    """acme's bundle, validly signed and of a higher version, swapped into default's
    source: refused, counted, and default keeps serving; one signed for default serves."""
    before = served.answer().policy_version
    failures = served.failures()
    foreign = signed_copy(tmp_path / "acme-9", keys, "new", "9.0.0", tenants=("acme",))
    start = served.publish(foreign)
    line = served.srv.wait_for_log("tenant default: bundle refused", start=start)
    assert "keeping version 1.1.0" in line, line
    served.srv.wait_for_log(
        re.escape("signed for tenant(s) acme, not for tenant default"), start=start
    )
    assert served.answer().policy_version == before
    assert served.failures() == failures + 1
    ours = signed_copy(tmp_path / "ours", keys, "new", "1.2.0", tenants=("acme", "default"))
    served.publish(ours)
    _wait(lambda: served.answer().policy_version.version == "1.2.0")


def test_require_tenant_bound_signatures(tmp_path: Path, keys: Keys) -> None:
    unbound = signed_copy(tmp_path / "unbound", keys)
    bound = signed_copy(tmp_path / "bound", keys, tenants=("default",))
    args = [*trust_args(keys, tmp_path / "data"), "--no-watch"]
    r = pdp(
        "serve",
        "--listen",
        "127.0.0.1:0",
        *args,
        "--require-tenant-bound-signatures",
        "--bundle",
        f"default={unbound}",
    )
    assert r.returncode == 1, r.stderr
    assert (
        "signature.json: signed for any tenant, and require_tenant_bound_signatures is set: "
        "sign it for this tenant (pdp bundle sign --tenant default)"
    ) in r.stderr
    with (
        running_server(
            [*args, "--require-tenant-bound-signatures", "--bundle", f"default={bound}"]
        ) as srv,
        srv.channel() as ch,
    ):
        assert pb_grpc.AuthorizationServiceStub(ch).Check(REQ, timeout=10).decision == (
            pb.DECISION_ALLOW
        )
    # Without the setting an unbound signature serves, and with other tenants beside it
    # the server says what it risks (each tenant once, at its load).
    acme = signed_copy(tmp_path / "acme", keys, tenants=("acme",))
    with running_server(
        [*args, "--bundle", f"default={unbound}", "--bundle", f"acme={acme}"]
    ) as srv:
        srv.wait_for_log("listening on")
        warned = [line for line in srv.lines if "is signed for any tenant" in line]
    assert len(warned) == 1 and "tenant default: bundle default" in warned[0], warned
    assert "pdp bundle sign --tenant default" in warned[0]


def _wait(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition never held")
