"""Principals from bearer tokens (JWT): validate a token, build the principal it names.

A check may name its principal by a JWT instead of an EntityUid. PyJWT validates the
token against a key set (JWKS) that is loaded at start-up and refreshed by a background
thread (`KeyRing`), so no request ever waits on a fetch:

- the header's algorithm must be on the allow-list, which holds asymmetric algorithms
  only: `none` and HS* are refused when the settings are read, since a JWKS holds public
  keys and an HMAC "verified" with a public key as its secret is the RS/HS confusion;
- the key is the header's `kid` looked up in a dict of the loaded keys, nothing more (a
  `kid` never becomes a path, a URL or a query), and it must be a key of the header's
  algorithm: each key is bound to the algorithms its type allows (RSA: RS*/PS*, EC: the
  ES* of its curve, OKP: EdDSA), or to its own `alg` when the JWK names one, and PyJWT
  refuses a token whose `alg` differs from the key's binding;
- `exp` is required, `iss` and `aud` must be the configured ones, `nbf` and `iat` are
  honoured, each within `jwt_leeway_seconds`.

PyJWT's `PyJWKClient` is not used for the key set: it fetches on the request path when a
`kid` is unknown, with no bound on the response's size. Its `PyJWK` builds every key.

The configured claims then become the principal's uid, attributes and parents
(`TokenPrincipal`); what a bundle lets those facts do is `pdp.trust`'s rule.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt

from pdp.errors import KeySetError, TokenRejected
from pdp.model import EntityRef, TokenPrincipal

if TYPE_CHECKING:
    from pdp.config import Settings

log = logging.getLogger(__name__)

# The algorithms each kind of public key verifies: (kty, crv) -> algorithms.
_KEY_ALGORITHMS: Mapping[tuple[object, object], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}
ASYMMETRIC: frozenset[str] = frozenset().union(*_KEY_ALGORITHMS.values())
MAX_JWKS_BYTES = 1024 * 1024  # a JWKS of a few keys is a few KiB
VERIFIED_TOKENS = 1024  # verified tokens remembered: at most 8 MiB at max_token_bytes
FETCH_TIMEOUT_SECONDS = 5.0
_MAX_CLAIM_DEPTH = 8  # nesting of a claim mapped to an attribute
_LONG = (-(2**63), 2**63 - 1)  # Cedar's long


@dataclass(frozen=True)
class KeySet:
    """Verification keys by (kid, algorithm): one PyJWK per algorithm a key may verify."""

    keys: Mapping[tuple[str, str], jwt.PyJWK]
    kids: frozenset[str]
    document: bytes = b""  # the JWKS it was read from: an unchanged one is not swapped in


def parse_jwks(data: bytes, algorithms: frozenset[str]) -> tuple[KeySet, list[str]]:
    """The usable keys of a JWKS document and why each other key was skipped; KeySetError
    if the document is not a JWKS, names a `kid` twice, or has no usable key."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise KeySetError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeySetError('must be a JSON object with a "keys" list')
    keys: dict[tuple[str, str], jwt.PyJWK] = {}
    seen: set[str] = set()
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(jwk, dict) or not isinstance(kid, str) or not kid:
            skipped.append(f"keys[{i}]: no kid (a token's key is chosen by kid)")
            continue
        if kid in seen:  # which of the two would verify is not for us to guess
            raise KeySetError(f"keys[{i}]: kid {kid!r} appears twice")
        seen.add(kid)
        why = _unusable(jwk, algorithms)
        if why:
            skipped.append(f"keys[{i}] ({kid}): {why}")
            continue
        for alg in sorted(_algorithms_of(jwk) & algorithms):
            try:
                keys[(kid, alg)] = jwt.PyJWK(jwk, alg)
            except jwt.PyJWTError as exc:
                skipped.append(f"keys[{i}] ({kid}): {exc}")
                break
    if not keys:
        raise KeySetError("no usable key" + "".join(f"; {s}" for s in skipped))
    return KeySet(MappingProxyType(keys), frozenset(kid for kid, _ in keys), data), skipped


def _algorithms_of(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    allowed = _KEY_ALGORITHMS.get((kty, None if kty == "RSA" else jwk.get("crv")), frozenset())
    alg = jwk.get("alg")
    return allowed if alg is None else allowed & {alg}


def _unusable(jwk: Mapping[str, Any], algorithms: frozenset[str]) -> str:
    if jwk.get("use", "sig") != "sig":
        return f"use {jwk.get('use')!r} is not sig"
    if "d" in jwk or "k" in jwk:
        return "holds secret or private key material (a JWKS publishes public keys only)"
    if not _algorithms_of(jwk):
        what = f"kty {jwk.get('kty')!r}, crv {jwk.get('crv')!r}, alg {jwk.get('alg')!r}"
        return f"{what}: not a public signing key of an asymmetric algorithm"
    if not _algorithms_of(jwk) & algorithms:
        return f"verifies only {sorted(_algorithms_of(jwk))}, none of them in jwt_algorithms"
    return ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead an https URL to plaintext: it is an error instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def read_jwks(file: Path | None, url: str | None) -> bytes:
    """The JWKS document's bytes, from the file or the URL; at most MAX_JWKS_BYTES."""
    if file is not None:
        with open(file, "rb") as f:
            data = f.read(MAX_JWKS_BYTES + 1)
    else:
        assert url is not None
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with _OPENER.open(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
            data = response.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise KeySetError(f"larger than {MAX_JWKS_BYTES} bytes")
    return data


class KeyRing:
    """The current key set, replaced whole by a background refresh; the last good one is
    kept when a refresh fails. A lookup of an unknown `kid` asks for an early refresh (at
    most one per `min_refresh_seconds`) and answers from the keys at hand: it never waits."""

    def __init__(
        self,
        read: Callable[[], bytes],
        algorithms: frozenset[str],
        refresh_seconds: float,
        min_refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._algorithms = algorithms
        self._refresh_seconds = refresh_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._clock = clock
        self._keys: KeySet | None = None
        self._asked = -math.inf  # when an unknown kid last asked for a refresh
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Exported as pdp_jwks_{refreshes,refresh_failures}_total (app.py).
        self.refreshes = 0  # key sets read and accepted, the start-up read included
        self.refresh_failures = 0  # refreshes that failed (the last good set kept)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset() if self._keys is None else self._keys.kids

    def load(self) -> None:
        """Read the key set now; KeySetError (naming the source's problem) if it fails."""
        try:
            self._keys = self._fetch()
        except (OSError, ValueError) as exc:
            raise KeySetError(str(exc)) from exc

    def refresh(self) -> bool:
        """Read the key set again; on any failure keep the one in use (and log why)."""
        try:
            keys = self._fetch()
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the last good set stays
            self.refresh_failures += 1
            log.warning("JWKS refresh failed, keeping kids %s: %s", sorted(self.kids), exc)
            return False
        if keys.kids != self.kids:
            log.info("JWKS refreshed: kids %s", sorted(keys.kids))
        if self._keys is None or keys.document != self._keys.document:
            # One reference assignment: a lookup sees the old set or the new. An unchanged
            # document keeps the set in use, and so the verifications cached against it.
            self._keys = keys
        return True

    @property
    def current(self) -> KeySet | None:
        return self._keys

    def _fetch(self) -> KeySet:
        keys, skipped = parse_jwks(self._read(), self._algorithms)
        for why in skipped:
            log.debug("JWKS key skipped: %s", why)
        self.refreshes += 1
        return keys

    def key(self, kid: str, alg: str) -> jwt.PyJWK | None:
        keys = self._keys
        found = None if keys is None else keys.keys.get((kid, alg))
        if found is None and kid not in self.kids:
            now = self._clock()
            if now - self._asked >= self._min_refresh_seconds:
                self._asked = now
                self._wake.set()  # a key rotated in: the refresher reads the set early
        return found

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pdp-jwks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=FETCH_TIMEOUT_SECONDS + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._refresh_seconds)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()


# PyJWT's own words are precise; these say which check failed in the caller's terms.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not valid yet"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.MissingRequiredClaimError, "missing claim"),
)


@dataclass(frozen=True)
class ClaimsMapping:
    """Which claims make the principal: its type, the uid claim, attributes, parents."""

    principal_type: str = "User"
    uid_claim: str = "sub"
    attributes: Mapping[str, str] = field(default_factory=dict)  # claim -> attribute name
    parents: Mapping[str, str] = field(default_factory=dict)  # claim -> parent entity type


class TokenVerifier:
    """Bearer token -> `TokenPrincipal`, or TokenRejected saying why."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        algorithms: frozenset[str],
        leeway_seconds: float,
        claims: ClaimsMapping,
        max_token_bytes: int,
        max_id_bytes: int,
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._algorithms = algorithms
        self._leeway = leeway_seconds
        self._claims = claims
        self._max_token_bytes = max_token_bytes
        self._max_id_bytes = max_id_bytes
        # Verified tokens: a caller sends the same token for as long as it lives, and PyJWT
        # costs far more than a decision (it checks base64 character by character).
        self._verified: OrderedDict[str, tuple[float, KeySet, TokenPrincipal]] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_hits = 0

    def principal(self, token: str) -> TokenPrincipal:
        """The principal `token` names; TokenRejected saying why not.

        A token verified before is answered from a bounded cache while it is still
        unexpired (`exp` plus the leeway, as PyJWT checks it) and the key set it was
        verified against is still the one in use: a refresh that changes the JWKS drops
        every earlier verification, so a removed key stops verifying at once."""
        size = len(token.encode())
        if size > self._max_token_bytes:
            raise TokenRejected(
                f"{size} bytes exceed the limit of {self._max_token_bytes} (max_token_bytes)"
            )
        keys = self.keys.current
        with self._lock:
            found = self._verified.get(token)
            if found is not None:
                if found[1] is keys and time.time() < found[0]:
                    self._verified.move_to_end(token)
                    self.cache_hits += 1
                    return found[2]
                del self._verified[token]
        principal, expires = self._verify(token)
        if keys is not None:
            with self._lock:
                self._verified[token] = (expires + self._leeway, keys, principal)
                if len(self._verified) > VERIFIED_TOKENS:
                    self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[TokenPrincipal, float]:
        """The principal, and the token's `exp`."""
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            raise TokenRejected(f"algorithm {alg!r} is not allowed (jwt_algorithms: {allowed})")
        if not isinstance(kid, str):
            raise TokenRejected("the header names no kid (the key is chosen by kid)")
        key = self.keys.key(kid, alg)
        if key is None:
            if kid in self.keys.kids:
                raise TokenRejected(f"key {kid!r} of the JWKS does not verify {alg}")
            raise TokenRejected(f"unknown kid {kid[:64]!r}: no such key in the JWKS")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, RecursionError) as exc:
            why = next((w for t, w in _REASONS if isinstance(exc, t)), "invalid")
            raise TokenRejected(f"{why}: {exc}") from None
        return self._principal(claims), float(claims["exp"])

    def _principal(self, claims: Mapping[str, Any]) -> TokenPrincipal:
        m = self._claims
        uid = claims.get(m.uid_claim)
        if not isinstance(uid, str) or not uid:
            raise TokenRejected(
                f"the {m.uid_claim} claim (the principal's id, jwt_uid_claim) must be a "
                "non-empty string"
            )
        self._cap_id(m.uid_claim, uid)
        attrs: dict[str, Any] = {}
        attr_claims: list[str] = []
        for claim, attr in sorted(m.attributes.items()):
            if claims.get(claim) is not None:
                attrs[attr] = _cedar_value(claim, claims[claim], 0)
                attr_claims.append(claim)
        parents: dict[EntityRef, str] = {}
        for claim, parent_type in sorted(m.parents.items()):
            raw = claims.get(claim)
            if raw is None:
                continue
            ids = [raw] if isinstance(raw, str) else raw
            if not isinstance(ids, list) or not all(isinstance(x, str) and x for x in ids):
                raise TokenRejected(
                    f"claim {claim} (parents of type {parent_type}) must be a non-empty "
                    "string or a list of them"
                )
            for x in ids:
                self._cap_id(claim, x)
                parents.setdefault(EntityRef(parent_type, x), claim)
        attrs_text = json.dumps(attrs, sort_keys=True, separators=(",", ":"))
        pairs = tuple((claim, ref) for ref, claim in parents.items())
        return TokenPrincipal(
            uid=EntityRef(m.principal_type, uid),
            attrs=attrs_text,
            parents=pairs,
            attr_claims=tuple(attr_claims),
            key=json.dumps(
                [m.principal_type, uid, attrs_text, [[c, r.type, r.id] for c, r in pairs]],
                separators=(",", ":"),
            ),
        )

    def _cap_id(self, claim: str, value: str) -> None:
        size = len(value.encode())
        if size > self._max_id_bytes:
            raise TokenRejected(
                f"claim {claim}: an id of {size} bytes exceeds the limit of "
                f"{self._max_id_bytes} (max_id_bytes)"
            )


def _header(token: str) -> dict[str, Any]:
    """The token's header, read only to choose the key: `jwt.decode` then reads and checks
    all of the token itself. Not `jwt.get_unverified_header`, which decodes and validates
    every segment character by character in Python: it doubled the cost of a token."""
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError) as exc:  # binascii.Error is a ValueError
        raise TokenRejected(f"not a JWT: the header does not decode ({exc})") from None
    if "." not in token or not isinstance(header, dict):
        raise TokenRejected("not a JWT: no header object")
    return header


def _cedar_value(claim: str, v: Any, depth: int) -> Any:
    """A claim's JSON value as a Cedar value: strings, booleans, longs, sets, records."""
    if depth > _MAX_CLAIM_DEPTH:
        raise TokenRejected(f"claim {claim}: nested deeper than {_MAX_CLAIM_DEPTH} levels")
    if isinstance(v, bool | str):
        return v
    if isinstance(v, int) and _LONG[0] <= v <= _LONG[1]:
        return v
    if isinstance(v, list):
        return [_cedar_value(claim, x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {k: _cedar_value(claim, x, depth + 1) for k, x in v.items()}
    raise TokenRejected(f"claim {claim}: {type(v).__name__} {v!r:.40} has no Cedar value")


def token_verifier(s: Settings) -> TokenVerifier | None:
    """The verifier the settings describe, or None when no JWKS is configured (then a
    request carrying a token is UNAUTHENTICATED). Its key set is read by `keys.load()`."""
    if s.jwt_jwks_file is None and s.jwt_jwks_url is None:
        return None
    assert s.jwt_issuer is not None and s.jwt_audience is not None  # validated by Settings
    algorithms = frozenset(s.jwt_algorithms)
    file, url = s.jwt_jwks_file, s.jwt_jwks_url
    ring = KeyRing(
        lambda: read_jwks(file, url),
        algorithms,
        s.jwt_jwks_refresh_seconds,
        s.jwt_jwks_min_refresh_seconds,
    )
    return TokenVerifier(
        ring,
        issuer=s.jwt_issuer,
        audience=s.jwt_audience,
        algorithms=algorithms,
        leeway_seconds=s.jwt_leeway_seconds,
        claims=ClaimsMapping(
            s.jwt_principal_type,
            s.jwt_uid_claim,
            MappingProxyType(dict(s.jwt_attribute_claims)),
            MappingProxyType(dict(s.jwt_parent_claims)),
        ),
        max_token_bytes=s.max_token_bytes,
        max_id_bytes=s.max_id_bytes,
    )
