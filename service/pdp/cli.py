"""`pdp` command line: serve, check, validate, bundle build, entities import/export.

Exit codes: 0 success (for `check`: ALLOW), 1 failure (for `check`: DENY; for
`validate`: problems found), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pdp import __version__
from pdp.bundle import compile_bundle, load_bundle
from pdp.bundle_files import build_archive, read_bundle_files
from pdp.config import LISTEN, default_bundle, load_settings
from pdp.errors import BundleError, KeySetError, PdpError, TlsConfigError
from pdp.model import DEFAULT_TENANT

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `--workers` re-runs it
    try:
        return int(args.func(args))
    except BundleError as exc:
        print(f"pdp: {exc.message}", file=sys.stderr)
        return EXIT_FAIL
    except PdpError as exc:
        print(f"pdp: {exc.message}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdp", description="Cedar policy decision point")
    p.add_argument("--version", action="version", version=f"pdp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve decisions over gRPC")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--listen", help="host:port (default 127.0.0.1:50051)")
    serve.add_argument(
        "--bundle",
        action="append",
        metavar="[TENANT=]PATH",
        help="a tenant's bundle (repeatable; no TENANT= means 'default')",
    )
    serve.add_argument("--bundles-dir", type=Path, help="directory of bundles, one per tenant")
    serve.add_argument(
        "--follow-symlinks",
        action="store_const",
        const=True,
        help="read bundles through symlinks that lead outside them",
    )
    serve.add_argument("--max-batch-items", type=int)
    serve.add_argument("--max-message-bytes", type=int)
    serve.add_argument("--workers", type=int, help="server processes sharing the port")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--no-watch", dest="watch", action="store_const", const=False)
    serve.add_argument("--reload-debounce-ms", type=int)
    serve.add_argument("--shutdown-grace-seconds", type=float)
    serve.add_argument("--drain-seconds", type=float)
    serve.add_argument("--log-level")
    serve.add_argument("--max-request-entities", type=int)
    serve.add_argument("--max-request-entity-parents", type=int)
    serve.add_argument("--max-context-bytes", type=int)
    serve.add_argument("--max-batch-context-bytes", type=int)
    serve.add_argument("--max-context-depth", type=int)
    serve.add_argument("--max-concurrent-streams", type=int, help="per connection")
    serve.add_argument("--max-concurrent-rpcs", type=int, help="server-wide")
    serve.add_argument("--threads", type=int, help="calls deciding at once")
    serve.add_argument(
        "--sched-batch",
        action=argparse.BooleanOptionalAction,
        help="threads under SCHED_BATCH (no preemption on wake-up; Linux)",
    )
    serve.add_argument(
        "--decision-cache", action=argparse.BooleanOptionalAction, help="decision cache on/off"
    )
    serve.add_argument("--decision-cache-entries", type=int)
    serve.add_argument("--decision-cache-bytes", type=int)
    serve.add_argument("--decision-cache-ttl-seconds", type=float)
    serve.add_argument("--max-check-streams", type=int, help="open CheckStream streams")
    serve.add_argument("--decision-log", choices=["stdout", "file", "off"])
    serve.add_argument("--decision-log-file", type=Path)
    serve.add_argument("--decision-log-max-file-bytes", type=int)
    serve.add_argument("--decision-log-backup-count", type=int)
    serve.add_argument("--decision-log-queue-size", type=int)
    serve.add_argument("--decision-log-max-record-bytes", type=int)
    serve.add_argument("--decision-log-allow-sample-rate", type=float)
    serve.add_argument("--decision-log-deny-sample-rate", type=float)
    serve.add_argument(
        "--no-decision-log-context", dest="decision_log_context", action="store_const", const=False
    )
    serve.add_argument(
        "--decision-log-mask-path", dest="decision_log_mask_paths", action="append", metavar="PATH"
    )
    serve.add_argument(
        "--decision-log-drop-path", dest="decision_log_drop_paths", action="append", metavar="PATH"
    )
    serve.add_argument(
        "--metrics-listen", help="host:port of /metrics (default 127.0.0.1:9464), or off"
    )
    serve.add_argument("--tls-cert-file", type=Path, help="PEM server certificate: TLS on")
    serve.add_argument("--tls-key-file", type=Path, help="PEM key of --tls-cert-file")
    serve.add_argument("--tls-client-ca-file", type=Path, help="CA of client certificates")
    serve.add_argument(
        "--tls-require-client-cert", action="store_const", const=True, help="mutual TLS"
    )
    serve.add_argument(
        "--allow-plaintext", action="store_const", const=True, help="plaintext off loopback"
    )
    serve.add_argument("--rate-limit-per-tenant", type=float, metavar="PER_SECOND")
    serve.add_argument("--rate-limit-per-tenant-burst", type=int)
    serve.add_argument("--rate-limit-per-client", type=float, metavar="PER_SECOND")
    serve.add_argument("--rate-limit-per-client-burst", type=int)
    serve.add_argument("--rate-limit-max-keys", type=int)
    # The admin API and the kill switch (README, "Admin API").
    serve.add_argument("--admin-listen", help="host:port (default 127.0.0.1:50052), or off")
    serve.add_argument("--admin-audit-log", type=Path, help="audit log file (default: stderr)")
    serve.add_argument("--data-dir", type=Path, help="state kept across restarts (default data)")
    serve.add_argument("--kill-switch-file", type=Path, help="a kill switch while it exists")
    # Signed bundles, no downgrade, max_bundle_age.
    serve.add_argument(
        "--bundle-verification-key",
        dest="bundle_verification_keys",
        action="append",
        type=Path,
        metavar="PUB",
        help="trusted Ed25519 public key (repeatable); every bundle must be signed by one",
    )
    serve.add_argument(
        "--require-tenant-bound-signatures",
        action="store_const",
        const=True,
        help="refuse bundle signatures that name no tenant (pdp bundle sign --tenant)",
    )
    serve.add_argument(
        "--allow-bundle-rollback",
        action="store_const",
        const=True,
        help="serve a lower bundle version than the active (or recorded) one",
    )
    serve.add_argument("--max-bundle-age", type=float, help="seconds; stale tenants deny all")
    serve.add_argument("--bundle-confirm-interval-seconds", type=float)
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="ask for one decision")
    check.add_argument("--principal", required=True, help='e.g. User::"alice"')
    check.add_argument("--action", required=True, help='e.g. Action::"read"')
    check.add_argument("--resource", required=True, help='e.g. Document::"doc-1"')
    check.add_argument("--context", default="", help="context as Cedar JSON (an object)")
    check.add_argument("--entities", default="", help="request entities: Cedar JSON or @FILE")
    check.add_argument("--tenant", default="")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--bundle", type=Path, help="decide in-process against this bundle")
    where.add_argument("--server", help="ask a running server at host:port")
    check.add_argument("--tls-ca", type=Path, help="with --server: TLS, trusting this PEM CA")
    check.add_argument("--tls-cert", type=Path, help="with --tls-ca: client certificate (mTLS)")
    check.add_argument("--tls-key", type=Path, help="the key of --tls-cert")
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.set_defaults(func=_check)

    validate = sub.add_parser("validate", help="report every problem in a bundle")
    validate.add_argument("bundle", type=Path, nargs="?", default=None)
    validate.set_defaults(func=_validate)

    bundle = sub.add_parser("bundle", help="bundle tools")
    bsub = bundle.add_subparsers(dest="bundle_command", required=True)
    build = bsub.add_parser("build", help="write a reproducible .tar.gz of a valid bundle")
    build.add_argument("bundle", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True)
    build.set_defaults(func=_build)
    from pdp import sign_cli  # `pdp bundle keygen/sign/verify`

    sign_cli.add_commands(bsub)

    health = sub.add_parser("health", help="ask a server's gRPC health service (exit 0: SERVING)")
    health.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    health.add_argument("--service", default="", help='a service or tenant name ("": readiness)')
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
    health.set_defaults(func=_health)

    from pdp.policytest.cli import add_commands  # `pdp test`, `pdp lint`

    add_commands(sub)
    from pdp import entities_cli  # `pdp entities import/export`

    entities_cli.add_commands(sub)
    from pdp.admin.cli import add_admin_command  # `pdp admin`

    add_admin_command(sub)
    return p


def _serve(args: argparse.Namespace) -> int:
    from pdp.app import App  # grpc is imported only by the commands that serve
    from pdp.grpc.tls import check_tls_files
    from pdp.tracing import TraceConfig, TraceConfigError

    try:
        settings = load_settings(_serve_flags(args), args.config)
        traces = TraceConfig.from_env(os.environ)  # OTEL_* variables, the standard way
    except TraceConfigError as exc:
        print(f"pdp: invalid setting {exc.name}: {exc.reason}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(x) for x in err["loc"]) or "settings"
            print(f"pdp: invalid setting {name}: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:  # unreadable or malformed config file
        print(f"pdp: invalid config file {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.sched_batch:  # before the server's threads start: they inherit it
        from pdp.scheduling import batch_scheduling

        batch_scheduling()
    try:
        check_tls_files(settings)  # here too with --workers: reported once, before any fork
        app = App(settings, reuse_port=args.worker, tracing=traces.start)
        app.load()  # with --workers, also done here first: problems are reported once
        if settings.workers > 1:
            from pdp.supervisor import run_workers

            m = LISTEN.fullmatch(settings.listen)
            assert m is not None  # validated by Settings
            return run_workers(
                args.argv, m["host"], int(m["port"]), settings.workers, settings.metrics_listen
            )
        asyncio.run(app.run())
    except TlsConfigError as exc:
        print(f"pdp: invalid setting {exc.setting}: {exc.reason}", file=sys.stderr)
        return EXIT_USAGE
    except BundleError as exc:
        print(f"pdp: cannot start: {exc.message}", file=sys.stderr)
        return EXIT_FAIL
    except KeySetError as exc:
        print(f"pdp: cannot start: JWKS: {exc.message}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were up: nothing to drain
        print("pdp: interrupted before serving", file=sys.stderr)
    except (OSError, RuntimeError) as exc:  # e.g. the port is taken
        print(f"pdp: cannot serve on {settings.listen}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _serve_flags(args: argparse.Namespace) -> dict[str, object]:
    flags: dict[str, object] = {
        k: v
        for k in (
            "listen",
            "bundles_dir",
            "follow_symlinks",
            "max_batch_items",
            "max_message_bytes",
            "workers",
            "watch",
            "reload_debounce_ms",
            "shutdown_grace_seconds",
            "drain_seconds",
            "log_level",
            "max_request_entities",
            "max_request_entity_parents",
            "max_context_bytes",
            "max_batch_context_bytes",
            "max_context_depth",
            "max_concurrent_streams",
            "max_concurrent_rpcs",
            "threads",
            "sched_batch",
            "decision_cache",
            "decision_cache_entries",
            "decision_cache_bytes",
            "decision_cache_ttl_seconds",
            "max_check_streams",
            "decision_log",
            "decision_log_file",
            "decision_log_max_file_bytes",
            "decision_log_backup_count",
            "decision_log_queue_size",
            "decision_log_max_record_bytes",
            "decision_log_allow_sample_rate",
            "decision_log_deny_sample_rate",
            "decision_log_context",
            "decision_log_mask_paths",
            "decision_log_drop_paths",
            "metrics_listen",
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "tls_require_client_cert",
            "allow_plaintext",
            "rate_limit_per_tenant",
            "rate_limit_per_tenant_burst",
            "rate_limit_per_client",
            "rate_limit_per_client_burst",
            "rate_limit_max_keys",
            "admin_listen",
            "admin_audit_log",
            "data_dir",
            "kill_switch_file",
            "bundle_verification_keys",
            "require_tenant_bound_signatures",
            "allow_bundle_rollback",
            "max_bundle_age",
            "bundle_confirm_interval_seconds",
        )
        if (v := getattr(args, k)) is not None
    }
    if args.bundle:
        bundles: dict[str, Path] = {}
        for spec in args.bundle:
            tenant, sep, path = spec.rpartition("=")
            bundles[tenant if sep else DEFAULT_TENANT] = Path(path)
        flags["bundles"] = bundles
    return flags


def _validate(args: argparse.Namespace) -> int:
    path = args.bundle or default_bundle()
    bundle = load_bundle(path)  # BundleError -> every problem printed, exit 1
    kinds = [p for p in bundle.policies.values()]
    print(
        f"{path}: OK — {bundle.version.name} {bundle.version.version}, "
        f"{sum(not p.is_template for p in kinds)} policies, "
        f"{sum(p.is_template for p in kinds)} templates, {bundle.entity_count} entities, "
        f"{bundle.version.digest}"
    )
    return EXIT_OK


def _build(args: argparse.Namespace) -> int:
    files = read_bundle_files(args.bundle)
    bundle = compile_bundle(files)  # refuse to package a bundle that would not load
    args.output.write_bytes(build_archive(files))
    print(f"{args.output}: {bundle.version.name} {bundle.version.version} {files.digest}")
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    import grpc  # only the commands that talk gRPC import it
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service=args.service)
    try:
        with grpc.insecure_channel(args.server) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"pdp: health of {args.server}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_FAIL
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAIL


def _check(args: argparse.Namespace) -> int:
    from pdp.check_cli import run_check

    result = run_check(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_human(result))
    return EXIT_OK if result["decision"] == "ALLOW" else EXIT_FAIL


def _human(r: dict[str, Any]) -> str:
    lines = [r["decision"]]
    if r.get("reason"):
        lines[0] += f"  ({r['reason']})"
    elif r["determining_policies"]:
        lines[0] += f"  (determined by: {', '.join(r['determining_policies'])})"
    elif r.get("reason"):
        lines[0] += f"  ({r['reason']})"
    else:
        lines[0] += "  (no policy applied: denied by default)" if r["decision"] == "DENY" else ""
    for e in r["errors"]:
        lines.append(f"  error in {e['policy_id'] or '(request)'}: {e['message']}")
    v = r["policy_version"]
    lines.append(f"  bundle {v['bundle']} {v['version']} ({v['digest'][:19]}…)")
    lines.append(f"  decision id {r['decision_id']}")
    return "\n".join(lines)
