"""`pdp admin ...`: the AdminService from the command line.

    pdp admin hash-token [--token-file F]       the allow-list entry for a token
    pdp admin status                            every tenant, bundle, kill switch, health
    pdp admin reload [TENANT]                   reload one tenant (or all) now
    pdp admin kill [--tenant T [--action A]] --reason R
    pdp admin unkill [--tenant T [--action A]] --reason R
    pdp admin kills                             the kill switches in force

Credentials: `--token-file` (a bearer token, whitespace around it ignored) and/or a client
certificate (`--cert`, `--key`), with `--ca` to verify the server (TLS is on when any of the
three is given). Exit codes: 0 done, 1 the call failed (its status printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pdp.errors import PdpError

DEFAULT_SERVER = "127.0.0.1:50052"


def add_admin_command(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)  # accepted after each subcommand
    common.add_argument("--server", default=DEFAULT_SERVER, help=f"default {DEFAULT_SERVER}")
    common.add_argument("--token-file", type=Path, help="file holding the bearer token")
    common.add_argument("--ca", type=Path, help="CA certificate(s) to verify the server (PEM)")
    common.add_argument("--cert", type=Path, help="client certificate (PEM)")
    common.add_argument("--key", type=Path, help="client private key (PEM)")
    common.add_argument("--json", action="store_true", help="print the response as JSON")
    admin = sub.add_parser("admin", help="call the admin API (status, reload, kill switch)")
    asub = admin.add_subparsers(dest="admin_command", required=True)

    def command(name: str, what: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = asub.add_parser(name, help=what, parents=[common])
        return p

    command("hash-token", "print the admin_identities entry of a token (file or stdin)")
    command("status", "every tenant's bundle, reload outcome, kill switch, health")
    command("reload", "reload a tenant's bundle now (default: all)").add_argument(
        "tenant", nargs="?", default=""
    )
    command("kills", "the kill switches in force")
    for name, what in (("kill", "deny everything in a scope"), ("unkill", "clear a kill switch")):
        p = command(name, what)
        p.add_argument("--tenant", default="", help="the tenant (default: the whole PDP)")
        p.add_argument("--action", default="", help='one action of the tenant: Action::"x"')
        p.add_argument("--reason", required=True)
    admin.set_defaults(func=run_admin)


def read_token(path: Path | None) -> bytes:
    raw = path.read_bytes() if path is not None else sys.stdin.buffer.read()
    token = raw.strip()
    if not token:
        raise PdpError("the token is empty")
    return token


def run_admin(args: argparse.Namespace) -> int:
    if args.admin_command == "hash-token":
        print(f"token-sha256:{hashlib.sha256(read_token(args.token_file)).hexdigest()}")
        return 0
    import grpc
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import Message

    from pdp._proto.v1 import admin_pb2 as apb
    from pdp._proto.v1 import admin_pb2_grpc as apb_grpc
    from pdp.check_cli import parse_uid

    metadata = []
    if args.token_file is not None:
        metadata.append(("authorization", f"Bearer {read_token(args.token_file).decode()}"))
    cmd = args.admin_command
    if cmd in ("kill", "unkill"):
        scope = apb.KillSwitchScope(
            tenant=args.tenant, action=parse_uid("action", args.action) if args.action else None
        )
    with _channel(args) as channel:
        stub = apb_grpc.AdminServiceStub(channel)
        call: Any
        request: Message
        if cmd == "status":
            call, request = stub.GetStatus, apb.GetStatusRequest()
        elif cmd == "reload":
            call, request = stub.ReloadTenant, apb.ReloadTenantRequest(tenant=args.tenant)
        elif cmd == "kills":
            call, request = stub.GetKillSwitch, apb.GetKillSwitchRequest()
        elif cmd == "kill":
            call = stub.SetKillSwitch
            request = apb.SetKillSwitchRequest(scope=scope, reason=args.reason)
        else:
            call = stub.ClearKillSwitch
            request = apb.ClearKillSwitchRequest(scope=scope, reason=args.reason)
        try:
            response = call(request, metadata=metadata, timeout=120)
        except grpc.RpcError as exc:
            print(f"pdp admin: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    doc = MessageToDict(response, preserving_proto_field_name=True)
    print(json.dumps(doc, indent=2) if args.json else _human(cmd, doc))
    return 0


def _channel(args: argparse.Namespace) -> Any:
    import grpc

    if args.ca is None and args.cert is None and args.key is None:
        return grpc.insecure_channel(args.server)
    if (args.cert is None) != (args.key is None):
        raise PdpError("--cert and --key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes() if args.ca else None,
        private_key=args.key.read_bytes() if args.key else None,
        certificate_chain=args.cert.read_bytes() if args.cert else None,
    )
    return grpc.secure_channel(args.server, credentials)


def _scope(s: dict[str, Any]) -> str:
    if not s.get("tenant"):
        return "the whole PDP"
    action = s.get("action")
    return f"tenant {s['tenant']}" + (
        f' action {action["type"]}::"{action["id"]}"' if action else ""
    )


def _kills(doc: dict[str, Any]) -> list[str]:
    kills = doc.get("kill_switches", [])
    if not kills:
        return ["no kill switch is set"]
    return [f"KILLED {_scope(k.get('scope', {}))} ({k['source']}): {k['reason']}" for k in kills]


def _human(cmd: str, doc: dict[str, Any]) -> str:
    if cmd in ("kill", "unkill", "kills"):
        return "\n".join(_kills(doc))
    if cmd == "reload":
        lines = []
        for t in doc.get("tenants", []):
            v = t.get("policy_version", {})
            state = "ok" if t.get("ok") else f"REFUSED: {t.get('error', '')}"
            lines.append(f"{t['tenant']}: {state}; serving {v.get('version', 'nothing')}")
        return "\n".join(lines)
    lines = [f"server {doc.get('health', '')} (pdp {doc.get('server_version', '')})"]
    for t in doc.get("tenants", []):
        v = t.get("policy_version", {})
        lines.append(
            f"{t['tenant']}: {t.get('health', '')}, bundle {v.get('bundle', '-')} "
            f"{v.get('version', '-')} ({v.get('digest', '')[:19]}), last reload "
            + ("ok" if t.get("last_reload_ok") else f"FAILED: {t.get('last_reload_error', '')}")
        )
    return "\n".join([*lines, *_kills(doc)])
