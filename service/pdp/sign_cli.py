"""`pdp bundle keygen`, `pdp bundle sign`, `pdp bundle verify` (README, "Signed bundles")."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pdp import signing
from pdp.admission import Admission
from pdp.bundle import compile_bundle
from pdp.bundle_files import SIGNATURE_FILE, BundleFiles, build_archive, read_bundle_files
from pdp.model import TENANT_NAME

EXIT_OK, EXIT_USAGE = 0, 2


def add_commands(bsub: Any) -> None:
    """Add the three commands to `pdp bundle`'s sub-parsers."""
    keygen = bsub.add_parser("keygen", help="write a new Ed25519 key pair for signing bundles")
    keygen.add_argument(
        "-o", "--output", type=Path, required=True, help="writes OUTPUT.key (0600) and OUTPUT.pub"
    )
    keygen.set_defaults(func=_keygen)

    sign = bsub.add_parser("sign", help="sign a valid bundle (directory or .tar.gz) in place")
    sign.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    sign.add_argument(
        "--tenant",
        dest="tenants",
        action="append",
        default=[],
        help="the only tenant that may serve it (repeatable; none: any tenant)",
    )
    sign.add_argument("bundle", type=Path)
    sign.set_defaults(func=_sign)

    verify = bsub.add_parser("verify", help="check a bundle's signature against trusted keys")
    verify.add_argument(
        "--key", type=Path, action="append", required=True, help="trusted public key (repeatable)"
    )
    verify.add_argument(
        "--tenant", help="check it as this tenant would: a signature for other tenants fails"
    )
    verify.add_argument(
        "--require-tenant-bound",
        action="store_true",
        help="with --tenant: fail a signature that names no tenant, as "
        "require_tenant_bound_signatures does",
    )
    verify.add_argument("bundle", type=Path)
    verify.set_defaults(func=_verify)


def _keygen(args: argparse.Namespace) -> int:
    out: Path = args.output
    private, public = out.with_name(out.name + ".key"), out.with_name(out.name + ".pub")
    try:
        kid = signing.write_keypair(private, public)
    except OSError as exc:
        print(f"pdp: cannot write the key pair: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{private} (private, mode 0600), {public} (public): key id {kid}")
    return EXIT_OK


def _sign(args: argparse.Namespace) -> int:
    try:
        key = signing.load_private_key(args.key)
    except (OSError, ValueError) as exc:
        print(f"pdp: --key: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path: Path = args.bundle
    files = read_bundle_files(path)
    bundle = compile_bundle(files)  # never sign a bundle that would not load
    v = bundle.version
    try:
        signature = signing.signature_file(files, v.name, v.version, key, args.tenants)
    except ValueError as exc:
        print(f"pdp: --tenant: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if path.is_dir():
        _replace(path / f".{SIGNATURE_FILE}.tmp", path / SIGNATURE_FILE, signature)
    else:  # an archive is rewritten whole (reproducibly), with the signature as a member
        signed = BundleFiles(files.source, {**files.files, SIGNATURE_FILE: signature})
        _replace(path.with_name(f".{path.name}.tmp"), path, build_archive(signed))
    kid = signing.key_id(key.public_key())
    scope = _scope(tuple(sorted(set(args.tenants))))
    print(f"{path}: signed {v.name} {v.version} {v.digest} with key {kid}, {scope}")
    return EXIT_OK


def _replace(tmp: Path, target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically: a watching server never reads half of it."""
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _verify(args: argparse.Namespace) -> int:
    if args.require_tenant_bound and args.tenant is None:
        print("pdp: --require-tenant-bound needs --tenant", file=sys.stderr)
        return EXIT_USAGE
    if args.tenant is not None and not TENANT_NAME.fullmatch(args.tenant):
        print(f"pdp: --tenant: {args.tenant!r} must match {TENANT_NAME.pattern}", file=sys.stderr)
        return EXIT_USAGE
    try:
        keys = tuple(signing.load_public_key(k) for k in args.key)
    except (OSError, ValueError) as exc:
        print(f"pdp: --key: {exc}", file=sys.stderr)
        return EXIT_USAGE
    admission = Admission(keys, require_tenant=args.require_tenant_bound)
    files = read_bundle_files(args.bundle)
    verified = admission.verify(files, args.tenant)  # BundleError: exit 1 with the reason
    assert verified is not None
    bundle = compile_bundle(files)
    v = bundle.version
    print(
        f"{args.bundle}: OK: {v.name} {v.version} {v.digest} signed by key "
        f"{verified.key.key_id}, {_scope(verified.tenants)}"
    )
    return EXIT_OK


def _scope(tenants: tuple[str, ...]) -> str:
    return f"for tenant(s) {', '.join(tenants)}" if tenants else "for any tenant"
