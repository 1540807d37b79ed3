"""Settings: command-line flags, then `PDP_*` environment variables, then a TOML file.

Everything is validated before any port opens; a bad setting is reported by name.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pdp.admin.identities import AdminIdentity
from pdp.jwt_identity import ASYMMETRIC
from pdp.masking import parse_path
from pdp.model import DEFAULT_TENANT, TENANT_NAME, TYPE_NAME
from pdp.signing import load_public_key
from pdp.tenants import BundleSources

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAX_BATCH_ITEMS = 100
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_THREADS = 4  # measured: bench/RESULTS.md, 2026-12-01
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(?P<port>\d{1,5})")


def is_loopback(host: str) -> bool:
    """Whether a listen host reaches only this machine (`localhost`, 127.0.0.0/8, ::1)."""
    bare = host.strip("[]")
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False  # any other name may resolve to a routable address


def default_bundle() -> Path:
    """The repository's `policies/` bundle, else `./policies` (e.g. in the container)."""
    beside_source = Path(__file__).resolve().parents[2] / "policies"
    return beside_source if beside_source.is_dir() else Path("policies")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PDP_", extra="forbid", frozen=True)

    listen: str = DEFAULT_LISTEN
    """host:port to serve gRPC on; port 0 picks a free port."""

    bundles: dict[str, Path] = Field(default_factory=dict)
    """Tenant name -> bundle directory or .tar.gz. With neither this nor `bundles_dir`, the
    built-in default bundle is served as tenant `default`."""

    bundles_dir: Path | None = None
    """A directory whose every subdirectory or .tar.gz is a tenant's bundle (name = tenant)."""

    follow_symlinks: bool = False
    """Read bundle files (and bundles_dir entries) through symlinks that lead outside them."""

    max_batch_items: int = Field(DEFAULT_MAX_BATCH_ITEMS, ge=1, le=10_000)
    """Most items one CheckBatch may carry (AVP caps at 30)."""

    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024, le=256 * 1024 * 1024)
    """Largest request accepted; larger ones get RESOURCE_EXHAUSTED."""

    workers: int = Field(1, ge=1, le=64)
    """Server processes sharing the port. cedarpy holds the GIL while deciding, so one
    process uses one core: set this to the cores you give the PDP."""

    watch: bool = True
    """Reload a tenant's bundle when its files change."""

    reload_debounce_ms: int = Field(300, ge=10, le=60_000)
    """Quiet time after a file change before reloading, so an editor's burst is one reload."""

    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600)
    """How long in-flight calls may take to finish once the listener closes."""

    drain_seconds: float = Field(0.0, ge=0, le=600)
    """After SIGTERM, keep answering while health says NOT_SERVING for this long, so load
    balancers stop routing here before the listener closes."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Limits on the request path: every input has a cap, so a bad request costs at most a
    # small multiple of a good one of its size (issue 6 §5).
    max_request_entities: int = Field(1000, ge=1, le=100_000)
    """Most request entities one `entities` / `entities_json` field (per request or batch
    item, and at batch level) may carry; more is INVALID_ARGUMENT."""

    max_request_entity_parents: int = Field(100, ge=0, le=100_000)
    """Most parent references all the request entities of one field may name together.
    Cedar computes the ancestors of request entities when it merges them, at a cost that
    grows far faster than the request (a chain of 500 groups in groups: ~4 s holding the
    GIL); only bundles that accept request entities with parents are exposed."""

    max_context_bytes: int = Field(64 * 1024, ge=64, le=256 * 1024 * 1024)
    """Largest context of one check, as Cedar JSON bytes (`context_json`, or the typed
    `context` once converted). Cedar parses a context at roughly 1-30 MB/s depending on
    its shape (sets are slow), so 64 KiB costs at most tens of milliseconds."""

    max_batch_context_bytes: int = Field(512 * 1024, ge=64, le=1024 * 1024 * 1024)
    """Context bytes of a whole CheckBatch: Cedar parses the context once per item, so a
    batch-level context counts once for every item that uses it."""

    max_context_depth: int = Field(32, ge=1, le=64)
    """Deepest nesting of a context, counted as JSON nesting of its Cedar JSON (the context
    object is level 1, an entity or extension escape adds levels)."""

    max_concurrent_streams: int = Field(32, ge=1, le=10_000)
    """HTTP/2 streams one connection may have open (`grpc.max_concurrent_streams`)."""

    sched_batch: bool = False
    """Run the server's threads under Linux's SCHED_BATCH policy (`pdp.scheduling`): a
    thread woken by a message no longer preempts the one holding the GIL. For a server
    with its cores to itself: beside another busy process on the same core, a woken
    thread waits for that process's time slice (p50 ~4 ms instead of ~0.8 ms)."""

    threads: int = Field(DEFAULT_THREADS, ge=1, le=1024)
    """Calls deciding at once in one server process. cedarpy holds the GIL, so more do not
    add cores (`workers` does); a few let grpcio overlap its own I/O with decisions. Every
    admitted call has a thread of its own (up to `max_concurrent_rpcs`), so a client that
    never finishes its message, or an open reflection stream, holds a thread but no slot."""

    max_check_streams: int | None = Field(None, ge=0, le=1023)
    """CheckStream streams open at once (default: half of `threads`, rounded down); more end
    RESOURCE_EXHAUSTED. A stream holds a worker thread while it is open, so this must stay
    below `threads`: unary calls keep the rest."""

    max_concurrent_rpcs: int = Field(100, ge=1, le=100_000)
    """RPCs the server handles at once, over all connections; more get RESOURCE_EXHAUSTED.
    Each may buffer up to `max_message_bytes`, so this times that bounds request memory."""

    # The decision cache (`pdp.decision_cache`): decisions already made, keyed by all
    # they read, so a hit equals a fresh evaluation of the same inputs.
    decision_cache: bool = True
    """Answer repeated identical checks from an in-process decision cache."""

    decision_cache_entries: int = Field(100_000, ge=1, le=100_000_000)
    """Most decisions the cache holds; the least recently used go first."""

    decision_cache_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, le=64 * 1024**3)
    """Most bytes the cache's entries hold (an estimate: keys, results, ~1 KiB overhead
    each); a context of 64 KiB makes a 65 KiB entry."""

    decision_cache_ttl_seconds: float = Field(60.0, gt=0, le=86_400)
    """How long a cached decision may be served. A decision is keyed by its inputs, so
    this bounds memory held by idle entries, not staleness."""

    @field_validator("max_check_streams")
    @classmethod
    def _check_streams(cls, v: int | None, info: ValidationInfo) -> int | None:
        threads = info.data.get("threads")
        if v is not None and threads is not None and v >= threads:
            raise ValueError(f"must be below threads ({threads}): a stream holds a thread")
        return v

    # Decision logs (README, "Decision logs"): one masked JSON record per decision.
    decision_log: Literal["stdout", "file", "off"] = "off"
    """Where decision records go: nowhere (the default: writing every decision costs 20-35%
    of a Check, so an operator turns it on knowingly, as with Cerbos's audit log and OPA's
    decision logs), stdout (the server's own log is on stderr) or a rotating file
    (`decision_log_file`)."""

    decision_log_file: Path | None = Field(None, validate_default=True)
    """The file of `decision_log = "file"`; with `--workers`, each worker writes PATH.<pid>."""

    decision_log_max_file_bytes: int = Field(100 * 1024 * 1024, ge=4096, le=1 << 40)
    """Size at which the file is rotated (PATH -> PATH.1 -> PATH.2 ...)."""

    decision_log_backup_count: int = Field(5, ge=1, le=1000)
    """Rotated files kept beside the current one."""

    decision_log_queue_size: int = Field(10_000, ge=1, le=1_000_000)
    """Records waiting to be written; past it (a sink slower than the decisions) records are
    dropped and counted, never waited for."""

    decision_log_max_record_bytes: int = Field(4096, ge=1024, le=1024 * 1024)
    """Largest record; what does not fit is dropped (entities, then context, ...) and named
    in the record's `truncated`. At 4096 or less a record is one atomic write to a pipe."""

    decision_log_allow_sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of Allow decisions written (an Allow with errors counts as a Deny here)."""

    decision_log_deny_sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of Deny decisions (and decisions with errors) written."""

    decision_log_context: bool = True
    """Write the (masked) context and request entities: the facts a decision rested on."""

    decision_log_mask_paths: list[str] = Field(default_factory=list)
    """Paths in the record to mask, e.g. `context.customer.email`, `entities.attrs.ssn`."""

    decision_log_drop_paths: list[str] = Field(default_factory=list)
    """Paths in the record to leave out altogether (same syntax)."""

    @field_validator("decision_log_mask_paths", "decision_log_drop_paths")
    @classmethod
    def _check_paths(cls, v: list[str]) -> list[str]:
        for path in v:
            parse_path(path)  # ValueError naming the path
        return v

    @field_validator("decision_log_file")
    @classmethod
    def _check_log_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None and info.data.get("decision_log") == "file":
            raise ValueError("required when decision_log is 'file'")
        if v is not None and (v.is_dir() or not v.parent.is_dir()):
            raise ValueError(f"must be a file in an existing directory: {v}")
        return v

    metrics_listen: str = DEFAULT_METRICS_LISTEN
    """host:port of the Prometheus `/metrics` listener, or `off`; port 0 picks a free port."""

    # String lengths (issue 10, "Limits and abuse"): every string a request carries has a
    # cap; the ones a content cap does not already bound are capped here.
    max_id_bytes: int = Field(1024, ge=16, le=1024 * 1024)
    """Longest entity type or id, in UTF-8 bytes, wherever a request names an entity (the
    principal, action and resource, request entities and their parents, entity values);
    also the longest id a token's uid or parent claim may give."""

    max_string_bytes: int = Field(16 * 1024, ge=16, le=256 * 1024 * 1024)
    """Longest attribute name or string value, in UTF-8 bytes, in a context or in request
    entities (typed or Cedar JSON)."""

    max_token_bytes: int = Field(8 * 1024, ge=256, le=1024 * 1024)
    """Longest bearer token (`token`); a longer one is UNAUTHENTICATED."""

    # JWT principals (pdp.jwt_identity): a check may carry a bearer JWT instead of a
    # principal. Off unless a JWKS is configured; then issuer and audience are required.
    jwt_jwks_file: Path | None = None
    """The JWKS (public keys that verify tokens) as a file, re-read every refresh."""

    jwt_jwks_url: str | None = None
    """The JWKS as an https URL (http only to a loopback host), fetched off the request path."""

    jwt_issuer: str | None = None
    """The `iss` every token must carry (required with a JWKS)."""

    jwt_audience: str | None = None
    """The `aud` every token must carry (required with a JWKS): a token minted for another
    service is refused."""

    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    """Algorithms a token may be signed with; asymmetric ones only (never `none` or HS*)."""

    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300)
    """Clock skew allowed for `exp`, `nbf` and `iat`."""

    jwt_jwks_refresh_seconds: float = Field(300.0, ge=0.1, le=86_400)
    """How often the JWKS is read again (keys rotate in and out)."""

    jwt_jwks_min_refresh_seconds: float = Field(30.0, ge=0.05, le=86_400)
    """A token with an unknown `kid` asks for an early refresh, at most once per this long;
    the request itself is answered from the keys at hand, never after a fetch."""

    jwt_principal_type: str = "User"
    """Entity type of a token's principal."""

    jwt_uid_claim: str = "sub"
    """The claim whose string is the principal's entity id."""

    jwt_attribute_claims: dict[str, str] = Field(default_factory=dict)
    """Claim -> attribute of the principal entity, e.g. `{"email": "email"}`."""

    jwt_parent_claims: dict[str, str] = Field(default_factory=dict)
    """Claim -> entity type of the principal's parents, e.g. `{"roles": "Role", "org":
    "Org"}` (a string or a list of strings each)."""

    @field_validator("jwt_algorithms")
    @classmethod
    def _check_algorithms(cls, v: list[str]) -> list[str]:
        for alg in v:
            if alg not in ASYMMETRIC:
                raise ValueError(
                    f"{alg!r} is not allowed: only asymmetric algorithms verify against a "
                    f"JWKS of public keys ({', '.join(sorted(ASYMMETRIC))}); never none or HS*"
                )
        if not v:
            raise ValueError("must name at least one algorithm")
        return v

    @field_validator("jwt_jwks_url")
    @classmethod
    def _check_jwks_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        url = urllib.parse.urlsplit(v)
        if url.scheme == "https" and url.hostname:
            return v
        if url.scheme == "http" and url.hostname is not None and is_loopback(url.hostname):
            return v  # plaintext cannot be tampered with on the way from this host
        raise ValueError("must be an https URL (or http to a loopback address: 127.0.0.1, ::1)")

    @field_validator("jwt_principal_type")
    @classmethod
    def _check_principal_type(cls, v: str) -> str:
        if not TYPE_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a Cedar entity type name")
        return v

    @field_validator("jwt_parent_claims")
    @classmethod
    def _check_parent_types(cls, v: dict[str, str]) -> dict[str, str]:
        for claim, t in v.items():
            if not TYPE_NAME.fullmatch(t):
                raise ValueError(f"{claim}: {t!r} is not a Cedar entity type name")
        return v

    @model_validator(mode="after")
    def _check_jwt(self) -> Settings:
        if self.jwt_jwks_file is not None and self.jwt_jwks_url is not None:
            raise ValueError("jwt_jwks_file and jwt_jwks_url: set one of them, not both")
        if self.jwt_jwks_file is not None or self.jwt_jwks_url is not None:
            for name in ("jwt_issuer", "jwt_audience"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: required when a JWKS is configured")
        return self

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _check_listen(cls, v: str, info: ValidationInfo) -> str:
        if info.field_name == "metrics_listen" and v == "off":
            return v
        m = LISTEN.fullmatch(v)
        if m is None or int(m["port"]) > 65535:
            off = ", or off" if info.field_name == "metrics_listen" else ""
            raise ValueError(f"must be host:port with a port from 0 to 65535{off}")
        return v

    @field_validator("bundles")
    @classmethod
    def _check_bundles(cls, v: dict[str, Path]) -> dict[str, Path]:
        for tenant, path in v.items():
            if not TENANT_NAME.fullmatch(tenant):
                raise ValueError(f"tenant name {tenant!r} must match {TENANT_NAME.pattern}")
            if not path.exists():
                raise ValueError(f"bundle for tenant {tenant!r} does not exist: {path}")
        return v

    @field_validator("bundles_dir")
    @classmethod
    def _check_bundles_dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and not v.is_dir():
            raise ValueError(f"not a directory: {v}")
        if v is not None and "bundles" in info.data:  # else `bundles` itself is invalid
            conflicts = BundleSources(info.data["bundles"], v).scan().conflicts
            if conflicts:
                raise ValueError("; ".join(conflicts[t] for t in sorted(conflicts)))
        return v

    # The entity store (`pdp.entity_store`, issue 9): entities the PDP holds per tenant.
    entity_store_url: str | None = None
    """None: SQLite at `data_dir`/entities.sqlite3; `sqlite:///PATH`; or `postgresql://...`
    (a store replicas share)."""

    data_dir: Path = Path("data")
    """Where the PDP keeps state that must survive a restart (the SQLite entity store, the
    kill switch's), created on first start."""

    entity_slice_depth: int = Field(2, ge=0, le=8)
    """Hops of attribute references a check's entity slice follows from the principal,
    action and resource (their ancestors always come with them)."""

    entity_write_max_entities: int = Field(10_000, ge=1, le=1_000_000)
    """Upserts plus deletes in one entity store write; more is INVALID_ARGUMENT."""

    entity_max_bytes: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    """Largest stored entity, as compact Cedar JSON; larger is INVALID_ARGUMENT."""

    entity_max_ancestors: int = Field(1_000, ge=1, le=1_000_000)
    """Transitive ancestors one stored entity may have; a write that gives an entity more
    is INVALID_ARGUMENT (each ancestor is a closure row, recomputed on writes above it)."""

    entity_write_max_closure_rows: int = Field(1_000_000, ge=1, le=100_000_000)
    """Closure rows (entity, ancestor) one entity store write may recompute; more is
    INVALID_ARGUMENT (bounds a write's cost under the tenant's write lock)."""

    @field_validator("entity_store_url")
    @classmethod
    def _check_store_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must be sqlite:///PATH or postgresql://...")
        return v

    # The EntityService (`pdp.grpc.entity_servicer`, issue 9): the store's writes and reads.
    entity_service: bool = True
    """Serve pdp.v1.EntityService beside the AdminService (`admin_listen`), behind the same
    authentication and roles (Write needs `write`; Get, List and GetDataVersion `read`):
    its writes are facts decisions trust."""
    # Transport security (`pdp.grpc.tls`) and per-caller limits (`pdp.rate_limit`).
    tls_cert_file: Path | None = None
    """PEM server certificate (chain) for the gRPC port; with `tls_key_file`, TLS is on.
    Both are read again, before the next handshake, whenever they change on disk."""

    tls_key_file: Path | None = None
    """PEM private key (unencrypted) of `tls_cert_file`."""

    tls_client_ca_file: Path | None = None
    """PEM CA certificate(s) that client certificates must chain to (mutual TLS)."""

    tls_require_client_cert: bool = False
    """Refuse a connection without a client certificate from `tls_client_ca_file`."""

    allow_plaintext: bool = Field(False, validate_default=True)
    """Serve plaintext gRPC on an address other than loopback (refused without this)."""

    @field_validator("allow_plaintext")
    @classmethod
    def _check_plaintext(cls, v: bool, info: ValidationInfo) -> bool:
        listen = info.data.get("listen")
        if v or listen is None or info.data.get("tls_cert_file") is not None:
            return v
        host = LISTEN.fullmatch(listen)
        if host is not None and not is_loopback(host["host"]):
            raise ValueError(
                f"plaintext gRPC on {listen}, which is not a loopback address: configure "
                "tls_cert_file and tls_key_file, or set allow_plaintext = true"
            )
        return v

    rate_limit_per_tenant: float | None = Field(None, gt=0, le=10_000_000)
    """Requests per second one tenant may make (per server process); None: no limit. A
    CheckBatch costs its item count, each CheckStream request one."""

    rate_limit_per_tenant_burst: int | None = Field(None, ge=1, le=100_000_000)
    """Requests a tenant may make at once (default: one second's worth)."""

    rate_limit_per_client: float | None = Field(None, gt=0, le=10_000_000)
    """Requests per second one client may make (per server process): the client
    certificate's identity, else the peer address without its port."""

    rate_limit_per_client_burst: int | None = Field(None, ge=1, le=100_000_000)
    """Requests a client may make at once (default: one second's worth)."""

    rate_limit_max_keys: int = Field(10_000, ge=1, le=10_000_000)
    """Most tenants and most clients each rate-limit table tracks; the least recently
    seen is forgotten first (and starts again with a full budget)."""

    # The admin API and the kill switch (`pdp.admin`, `pdp.kill_switch`; README "Admin API").
    admin_listen: str = "127.0.0.1:50052"
    """host:port of the AdminService, or `off`; never the decision port (below). A listener
    on an address other than loopback needs TLS. With `--workers`, worker 0 serves it."""

    admin_on_decision_port: bool = False
    """Serve the AdminService on the decision port (`listen`) as well: every call is still
    authenticated and authorized. Not with `--workers` (each worker would keep its own
    kill switch state)."""

    admin_identities: list[AdminIdentity] = Field(default_factory=list)
    """The allow-list: `[{identity = "cert:uri:<id>" | "token-sha256:<hex>", role = "read" |
    "write"}]`. Empty: every admin call is refused."""

    admin_audit_log: Path | None = None
    """File the audit log (one JSON line per admin call) is appended to; default: the
    `pdp.audit` logger on stderr."""

    kill_switch_file: Path | None = None
    """While this file exists its content (JSON: {"scope": {...}, "reason": "..."}, or a
    list; empty: the whole PDP) is a kill switch, for when the admin side is down."""

    kill_switch_poll_ms: int = Field(100, ge=10, le=60_000)
    """How often the kill switch files are checked for changes (and, with `--workers`, how
    soon the other workers apply a switch set through worker 0)."""

    @field_validator("admin_listen")
    @classmethod
    def _check_admin_listen(cls, v: str) -> str:
        m = LISTEN.fullmatch(v)
        if v != "off" and (m is None or int(m["port"]) > 65535):
            raise ValueError("must be host:port with a port from 0 to 65535, or off")
        return v

    @field_validator("admin_on_decision_port")
    @classmethod
    def _check_admin_port(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("workers", 1) > 1:
            raise ValueError("not with workers > 1: each worker would keep its own state")
        return v

    @field_validator("admin_audit_log")
    @classmethod
    def _check_audit_log(cls, v: Path | None) -> Path | None:
        if v is not None and (v.is_dir() or not v.parent.is_dir()):
            raise ValueError(f"must be a file in an existing directory: {v}")
        return v

    # Signed bundles, no downgrade, max_bundle_age (README, "Signed bundles" and
    # "Stale bundles").
    bundle_verification_keys: list[Path] = Field(default_factory=list)
    """Ed25519 public keys (PEM) trusted to sign bundles; several for key rotation. When
    any is set, every bundle must carry a signature (`signature.json`) by one of them."""

    require_tenant_bound_signatures: bool = False
    """With verification keys, refuse a signature that names no tenant (`pdp bundle sign
    --tenant`): an unbound one is good for every tenant, so a tenant's signed bundle copied
    into another tenant's source would be served there. A signature that names tenants is
    only ever good for those, with or without this setting."""

    allow_bundle_rollback: bool = False
    """Serve a bundle whose manifest version is lower than the tenant's active one (or, with
    verification keys, the highest it ever served, kept in `data_dir`)."""

    max_bundle_age: float | None = Field(None, gt=0, le=365 * 86_400)
    """Seconds a tenant's bundle source may go unconfirmed (not re-read as equal to the served
    bundle, and no reload succeeded) before the tenant denies every check. None: off."""

    bundle_confirm_interval_seconds: float = Field(30.0, gt=0, le=86_400)
    """How often every bundle source is re-read to confirm it (with `max_bundle_age`)."""

    @field_validator("bundle_verification_keys")
    @classmethod
    def _check_keys(cls, v: list[Path]) -> list[Path]:
        for path in v:
            try:
                load_public_key(path)  # ValueError naming the file
            except OSError as exc:
                raise ValueError(f"{path}: unreadable: {exc.strerror}") from None
        return v

    @model_validator(mode="after")
    def _check_tenant_binding(self) -> Settings:
        # Without keys no signature is checked, so the setting would silently do nothing.
        if self.require_tenant_bound_signatures and not self.bundle_verification_keys:
            raise ValueError(
                "require_tenant_bound_signatures: needs bundle_verification_keys (without "
                "them no signature is checked)"
            )
        return self

    @field_validator("bundle_confirm_interval_seconds")
    @classmethod
    def _check_confirm(cls, v: float, info: ValidationInfo) -> float:
        age = info.data.get("max_bundle_age")
        if age is not None and v >= age:
            raise ValueError(f"must be below max_bundle_age ({age}): else every tenant goes stale")
        return v

    @property
    def check_streams(self) -> int:
        """`max_check_streams`, or its default."""
        return self.threads // 2 if self.max_check_streams is None else self.max_check_streams

    def bundle_sources(self) -> BundleSources:
        return BundleSources(
            self.bundles,
            self.bundles_dir,
            builtin={DEFAULT_TENANT: default_bundle()},
            follow_symlinks=self.follow_symlinks,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def load_settings(flags: dict[str, object], config_file: Path | None = None) -> Settings:
    """Settings from flags (those given), the environment and an optional TOML file."""
    if config_file is None:
        return Settings(**flags)  # type: ignore[arg-type]

    if not config_file.is_file():
        raise FileNotFoundError(f"no such file: {config_file}")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return FromFile(**flags)  # type: ignore[arg-type]
