"""`pdp admin ...` against a real server: the commands users will reach for."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..support import pdp_command, running_server
from .support import READ_TOKEN, WRITE_TOKEN, admin_port, serve_args, token_config, token_hash


def pdp(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pdp_command(), *args], capture_output=True, text=True, timeout=60, input=stdin
    )


def test_hash_token_prints_the_allow_list_entry(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(WRITE_TOKEN + "\n")  # the newline an editor adds is not the token's
    from_file = pdp("admin", "hash-token", "--token-file", str(token_file))
    from_stdin = pdp("admin", "hash-token", stdin=WRITE_TOKEN)
    assert from_file.stdout.strip() == from_stdin.stdout.strip() == token_hash(WRITE_TOKEN)


def test_status_kill_reload_unkill(tmp_path: Path) -> None:
    cfg = token_config(tmp_path)
    write, read = tmp_path / "write.token", tmp_path / "read.token"
    write.write_text(WRITE_TOKEN)
    read.write_text(READ_TOKEN)
    with running_server(serve_args(cfg)) as srv:
        server = f"127.0.0.1:{admin_port(srv)}"

        def admin(command: str, token: Path | None, *more: str) -> subprocess.CompletedProcess[str]:
            creds = ["--token-file", str(token)] if token else []
            return pdp("admin", command, "--server", server, *creds, *more)

        def decide() -> str:
            done = pdp(
                "check", "--server", srv.address, "--principal", 'User::"bob"',
                "--action", 'Action::"edit"', "--resource", 'Document::"doc-1"',
            )  # fmt: skip
            return done.stdout.splitlines()[0]

        status = admin("status", read)
        assert status.returncode == 0, status.stderr
        assert "default: HEALTH_SERVING, bundle default 1.1.0" in status.stdout
        assert "no kill switch is set" in status.stdout
        refused = admin("kill", read, "--tenant", "default", "--reason", "x")
        assert refused.returncode == 1
        assert "PERMISSION_DENIED" in refused.stderr
        anonymous = admin("status", None)
        assert (anonymous.returncode, anonymous.stderr.split(":")[1].strip()) == (
            1,
            "UNAUTHENTICATED",
        )
        killed = admin(
            "kill", write, "--tenant", "default", "--action", 'Action::"edit"', "--reason", "freeze"
        )
        assert killed.stdout.strip() == (
            'KILLED tenant default action Action::"edit" (admin): freeze'
        ), killed.stderr
        assert decide() == "DENY  (kill switch: freeze)"
        reloaded = admin("reload", write, "default")
        assert reloaded.stdout.strip() == "default: ok; serving 1.1.0"
        cleared = admin("unkill", write, "--tenant", "default", "--action", 'Action::"edit"',
                        "--reason", "thawed")  # fmt: skip
        assert cleared.stdout.strip() == "no kill switch is set"
        assert decide().startswith("ALLOW")
