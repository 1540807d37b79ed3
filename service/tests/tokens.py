"""Test support for bearer tokens: keys made at test time, JWKS documents, signed tokens,
and a real JWKS server on loopback whose key set a test can change."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test"
AUDIENCE = "cedar-pdp"


@dataclass
class Key:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        algorithm = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm}.get(
            self.alg[:2], OKPAlgorithm
        )
        out: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)
        return {**out, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        alg = headers.pop("alg", self.alg)
        return jwt.encode(claims, self.private, algorithm=alg, headers=headers)


def rsa_key(kid: str, alg: str = "RS256") -> Key:
    return Key(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str) -> Key:
    return Key(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: Key) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})


def claims(sub: str = "mallory", ttl: float = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with `header` as given and no signature (`alg: none`)."""
    h = _b64(json.dumps(header).encode())
    return f"{h}.{_b64(json.dumps(payload).encode())}."


def hmac_signed(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 with `secret` (say an RSA public key's PEM): the RS/HS confusion attack,
    built by hand since PyJWT refuses to sign HMAC with a PEM key."""
    h = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = f"{h}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


class JwksServer:
    """An HTTP server on 127.0.0.1 answering GET with `document` (or `status`)."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = server.document.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"


@contextmanager
def jwks_server(document: str) -> Iterator[JwksServer]:
    srv = JwksServer(document)
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        thread.join(timeout=5)
