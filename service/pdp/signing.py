"""Ed25519 signatures of bundles: keys, the signed payload, the signature file.

A signature covers one canonical payload: the bundle's content digest (the one served as
`policy_version.digest`, over every file but the signature file itself, so an added file
changes it too), the manifest's name and version, and, when the signer named them, the
tenants the bundle may serve. The payload is rebuilt from the bundle at every verification;
nothing in the signature file is trusted but the signature bytes and the tenant names they
cover. Its `key_id` only orders the configured keys to try: a signature is good when one
configured key verifies it, whether the id is present, absent or names no key, so no
setting or field can switch verification off (OPA's GHSA-g2pf-6v5v-qcc8 turned it on only
when a key id was set).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pdp.bundle_files import SIGNATURE_FILE, BundleFiles
from pdp.errors import BundleError, BundleProblem
from pdp.model import TENANT_NAME

PAYLOAD_FORMAT = "cedar-pdp-bundle-signature/v1"
MAX_SIGNATURE_FILE = 4096  # a signature file is ~200 bytes
MAX_KEY_FILE = 16 * 1024  # a PEM key is ~120 bytes
MAX_SIGNED_TENANTS = 16  # keeps the file under MAX_SIGNATURE_FILE with the longest names


class SignatureFile(BaseModel):
    """`signature.json` in a bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(default=PAYLOAD_FORMAT, pattern=f"^{PAYLOAD_FORMAT}$")
    algorithm: str = Field(default="ed25519", pattern="^ed25519$")
    key_id: str = Field(default="", max_length=64)  # a hint among configured keys, never required
    signature: str = Field(max_length=200)  # base64 of the 64 signature bytes
    # The tenants the bundle is signed for (none: any tenant). Covered by the signature:
    # adding, removing or changing a name makes it fail, so a bound bundle cannot be
    # unbound, nor replayed into another tenant's source.
    tenants: tuple[str, ...] = Field(default=(), max_length=MAX_SIGNED_TENANTS)

    @field_validator("tenants")
    @classmethod
    def _check_tenants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not TENANT_NAME.fullmatch(name):
                raise ValueError(f"tenant name {name[:40]!r} must match {TENANT_NAME.pattern}")
        if list(v) != sorted(set(v)):
            raise ValueError("must be sorted and without repeats (as `pdp bundle sign` writes)")
        return v


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey
    source: str  # where it was read from, for messages

    @property
    def key_id(self) -> str:
        return key_id(self.key)


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key: sha256 of its raw 32 bytes, 16 hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def payload(digest: str, name: str, version: str, tenants: Sequence[str] = ()) -> bytes:
    """The signed bytes: one spelling only (sorted keys, no whitespace, ASCII). `tenants`
    only when the signer named some: a payload with them never equals one without."""
    body: dict[str, object] = {
        "digest": digest,
        "format": PAYLOAD_FORMAT,
        "name": name,
        "version": version,
    }
    if tenants:
        body["tenants"] = sorted(set(tenants))
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _read_capped(path: Path, what: str) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"{path}: {what} file exceeds {MAX_KEY_FILE} bytes")
    return data


def load_public_key(path: Path) -> PublicKey:
    """An Ed25519 public key from a PEM file; ValueError naming the file otherwise."""
    data = _read_capped(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return PublicKey(key, str(path))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read_capped(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def write_keypair(private_path: Path, public_path: Path) -> str:
    """A new key pair: the private key PEM (PKCS#8) created mode 0600, never overwriting
    a file, and the public key PEM beside it. Returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public_path.exists():
        raise FileExistsError(f"{public_path} exists; not overwriting it")
    # O_EXCL: never replace a key; the mode is set at creation, so the key is never
    # readable by others, not even for a moment.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())


def signature_file(
    files: BundleFiles,
    name: str,
    version: str,
    key: Ed25519PrivateKey,
    tenants: Sequence[str] = (),
) -> bytes:
    """The content of `signature.json` signing these files as manifest `name` `version`,
    for `tenants` only (none: for any tenant). ValueError for a bad tenant name."""
    bound = tuple(sorted(set(tenants)))
    sig = key.sign(payload(files.digest, name, version, bound))
    try:
        body = SignatureFile(
            key_id=key_id(key.public_key()),
            signature=base64.b64encode(sig).decode("ascii"),
            tenants=bound,
        )
    except ValidationError as exc:
        raise ValueError(f"tenants: {exc.errors()[0]['msg']}") from None
    # An unbound signature's file stays as it always was: no `tenants` key.
    unbound = None if bound else {"tenants"}
    return (body.model_dump_json(indent=2, exclude=unbound) + "\n").encode()


@dataclass(frozen=True)
class Verified:
    """A good signature: the configured key that made it, and the tenants it names."""

    key: PublicKey
    tenants: tuple[str, ...]  # empty: signed for any tenant


def verify(
    files: BundleFiles,
    name: str,
    version: str,
    keys: Sequence[PublicKey],
    tenant: str | None = None,
    require_tenant: bool = False,
) -> Verified:
    """The configured key that signed these files as manifest `name` `version`; else
    BundleError naming the signature file and why (unsigned, malformed, bad signature).

    `tenant`: the tenant that would serve the bundle; a signature that names tenants must
    name it. `require_tenant`: a signature that names no tenant is refused too. Without a
    `tenant` (`pdp bundle verify` with no `--tenant`) only the signature is checked."""
    if not keys:
        raise ValueError("verify needs at least one key")  # a caller bug, never a pass
    raw = files.files.get(SIGNATURE_FILE)
    if raw is None:
        raise _refused(files, "missing: the bundle is not signed, and verification keys are set")
    if len(raw) > MAX_SIGNATURE_FILE:
        raise _refused(files, f"exceeds {MAX_SIGNATURE_FILE} bytes")
    try:
        sig_file = SignatureFile.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(document)"
        raise _refused(files, f"malformed: {loc}: {first['msg']}") from None
    try:
        sig = base64.b64decode(sig_file.signature, validate=True)
    except binascii.Error:
        sig = b""
    if len(sig) != 64:
        raise _refused(files, "malformed: signature is not the base64 of 64 bytes")
    # The hint only orders the candidates: every configured key is tried.
    ordered = sorted(keys, key=lambda k: k.key_id != sig_file.key_id)
    signed = payload(files.digest, name, version, sig_file.tenants)
    for key in ordered:
        try:
            key.key.verify(sig, signed)
        except InvalidSignature:
            continue
        _bound_to(files, sig_file.tenants, tenant, require_tenant)
        return Verified(key, sig_file.tenants)
    known = any(k.key_id == sig_file.key_id for k in keys)
    who = "" if known or not sig_file.key_id else f" (key id {sig_file.key_id} is not trusted)"
    raise _refused(
        files,
        f"does not verify with any of the {len(keys)} trusted key(s){who}: the bundle "
        f"({name} {version}, {files.digest[:19]}…) was changed after signing, or signed "
        "by another key",
    )


def _bound_to(
    files: BundleFiles, signed: tuple[str, ...], tenant: str | None, require_tenant: bool
) -> None:
    """Checked only once the signature verified: until then `signed` is a caller's claim."""
    if tenant is None:
        return
    if not signed:
        if require_tenant:
            raise _refused(
                files,
                "signed for any tenant, and require_tenant_bound_signatures is set: sign it "
                f"for this tenant (pdp bundle sign --tenant {tenant})",
            )
        return
    if tenant not in signed:
        raise _refused(
            files,
            f"signed for tenant(s) {', '.join(signed)}, not for tenant {tenant}: another "
            "tenant's bundle is never served here",
        )


def _refused(files: BundleFiles, message: str) -> BundleError:
    return BundleError(files.source, [BundleProblem(SIGNATURE_FILE, message)])
