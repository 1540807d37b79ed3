"""The `pdp` command line as a user runs it: validate, bundle build, check, serve settings."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.cli import main

from .support import DOCS_BUNDLE, REPO, ServerProcess, pdp_command, running_server


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pdp_command(), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def broken_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(DOCS_BUNDLE, copy)
    (copy / "rules" / "x.cedar").write_text(
        '\n@id("x")\npermit(principal, action, resource) when { principal.nope };\n'
    )
    (copy / "rules" / "y.cedar").write_text("permit(principal action, resource);\n")
    return copy


def test_validate_ok_and_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DOCS_BUNDLE)]) == 0
    assert "OK — docs 1.0.0, 7 policies, 1 templates" in capsys.readouterr().out
    assert main(["validate", str(broken_copy(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert "refused (2 problem(s))" in err
    assert "rules/x.cedar:2 [x]:" in err and "rules/y.cedar:1: parse error" in err


def test_validate_defaults_to_the_default_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 0
    assert "OK — default" in capsys.readouterr().out


def test_bundle_build_is_reproducible_and_refuses_broken_bundles(tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    first = run("bundle", "build", str(DOCS_BUNDLE), "-o", str(a))
    assert first.returncode == 0, first.stderr
    assert run("bundle", "build", str(DOCS_BUNDLE), "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert first.stdout.split()[-1].startswith("sha256:")
    assert run("validate", str(a)).returncode == 0
    bad = run("bundle", "build", str(broken_copy(tmp_path)), "-o", str(tmp_path / "c.tar.gz"))
    assert bad.returncode == 1 and "rules/x.cedar:2" in bad.stderr
    assert not (tmp_path / "c.tar.gz").exists()


def test_check_in_process_human_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "check",
        "--bundle",
        str(DOCS_BUNDLE),
        "--principal",
        'User::"mallory"',
        "--action",
        'Action::"read"',
        "--resource",
        'Document::"doc1"',
    ]
    assert main(args) == 1
    assert capsys.readouterr().out.startswith("DENY  (determined by: org-boundary)")
    assert main([*args[:4], 'User::"alice"', *args[5:], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "ALLOW" and set(out["determining_policies"]) == {
        "read-public",
        "owner-all",
    }
    assert out["policy_version"]["bundle"] == "docs"


def test_check_rejects_bad_input_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "check",
        "--bundle",
        str(DOCS_BUNDLE),
        "--action",
        'Action::"read"',
        "--resource",
        'Document::"doc1"',
    ]
    assert main([*base, "--principal", "alice"]) == 2
    assert "principal: 'alice' is not an entity uid" in capsys.readouterr().err
    assert main([*base, "--principal", 'User::"alice"', "--context", '{"mfa": 3}']) == 2
    assert "context" in capsys.readouterr().err


def test_check_against_a_running_server(server: ServerProcess) -> None:
    r = run(
        "check",
        "--server",
        server.address,
        "--tenant",
        "docs",
        "--principal",
        'User::"bob"',
        "--action",
        'Action::"read"',
        "--resource",
        'Document::"doc2"',
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["determining_policies"] == ["share-doc2-with-bob"]
    r = run(
        "check",
        "--server",
        server.address,
        "--tenant",
        "nope",
        "--principal",
        'User::"bob"',
        "--action",
        'Action::"read"',
        "--resource",
        'Document::"doc2"',
    )
    assert r.returncode == 2 and "NOT_FOUND" in r.stderr


LIMITS_OUT_OF_RANGE = {
    "max_request_entities": "0",
    "max_request_entity_parents": "-1",
    "max_context_bytes": "10",
    "max_batch_context_bytes": "10",
    "max_context_depth": "65",
    "max_concurrent_streams": "0",
    "decision_cache_entries": "0",
    "decision_cache_bytes": "1000",
    "decision_cache_ttl_seconds": "0",
}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-batch-items", "0"], {}, "invalid setting max_batch_items"),
        (["--listen", "nowhere"], {}, "invalid setting listen"),
        ([], {"PDP_LISTEN": "127.0.0.1:99999"}, "invalid setting listen"),
        (["--bundle", "acme=/no/such/dir"], {}, "invalid setting bundles"),
        (["--bundle", "bad tenant=policies"], {}, "invalid setting bundles"),
        ([], {"PDP_LOG_LEVEL": "LOUD"}, "invalid setting log_level"),
        *(
            ([f"--{name.replace('_', '-')}", bad], {}, f"invalid setting {name}")
            for name, bad in LIMITS_OUT_OF_RANGE.items()
        ),
        ([], {"PDP_MAX_CONCURRENT_RPCS": "0"}, "invalid setting max_concurrent_rpcs"),
        (["--threads", "0"], {}, "invalid setting threads"),
        ([], {"PDP_THREADS": "2000"}, "invalid setting threads"),
        ([], {"PDP_DECISION_CACHE": "sometimes"}, "invalid setting decision_cache"),
        ([], {"PDP_DECISION_CACHE_TTL_SECONDS": "-1"}, "invalid setting decision_cache_ttl"),
        (["--max-check-streams", "-1"], {}, "invalid setting max_check_streams"),
        (["--threads", "2", "--max-check-streams", "2"], {}, "invalid setting max_check_streams"),
        (["--metrics-listen", "on"], {}, "invalid setting metrics_listen"),
        ([], {"PDP_METRICS_LISTEN": "127.0.0.1:70000"}, "invalid setting metrics_listen"),
        (["--config", "/no/such.toml"], {}, "invalid"),
    ],
)
def test_bad_settings_exit_2_naming_the_setting(
    args: list[str], env: dict[str, str], message: str
) -> None:
    import os

    r = run("serve", *args, env={**os.environ, **env}, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "listening" not in r.stderr + r.stdout


def test_unknown_key_in_config_file_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "pdp.toml"
    cfg.write_text("max_batch_itmes = 5\n")
    r = run("serve", "--config", str(cfg), timeout=30)
    assert r.returncode == 2 and "max_batch_itmes" in r.stderr


def test_settings_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "pdp.toml"
    cfg.write_text(f'max_batch_items = 2\nwatch = false\n\n[bundles]\ndocs = "{DOCS_BUNDLE}"\n')
    item = pb.BatchItem(
        action=vpb.EntityUid(type="Action", id="read"),
        resource=vpb.EntityUid(type="Document", id="doc1"),
    )

    def largest_batch(srv: ServerProcess) -> int:
        with srv.channel() as ch:
            stub = srv.stub(ch)
            for n in (5, 4, 3, 2, 1):
                req = pb.CheckBatchRequest(
                    tenant="docs",
                    principal=vpb.EntityUid(type="User", id="alice"),
                    items=[item] * n,
                )
                try:
                    stub.CheckBatch(req)
                    return n
                except grpc.RpcError:
                    continue
        return 0

    with running_server(["--config", str(cfg)]) as srv:
        assert largest_batch(srv) == 2  # from the file
    with running_server(["--config", str(cfg)], env={"PDP_MAX_BATCH_ITEMS": "3"}) as srv:
        assert largest_batch(srv) == 3  # env beats file
    with running_server(
        ["--config", str(cfg), "--max-batch-items", "4"], env={"PDP_MAX_BATCH_ITEMS": "3"}
    ) as srv:
        assert largest_batch(srv) == 4  # flag beats env


def test_a_taken_port_is_a_clear_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("serve", "--listen", f"127.0.0.1:{port}", "--no-watch", timeout=30)
    assert r.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in r.stderr


def test_start_up_refuses_a_broken_bundle_listing_every_problem(tmp_path: Path) -> None:
    r = run(
        "serve",
        "--bundle",
        f"docs={broken_copy(tmp_path)}",
        "--bundle",
        f"default={REPO / 'policies'}",
        timeout=30,
    )
    assert r.returncode == 1
    assert (
        "cannot start" in r.stderr
        and "rules/x.cedar:2 [x]" in r.stderr
        and "rules/y.cedar:1" in r.stderr
    )
