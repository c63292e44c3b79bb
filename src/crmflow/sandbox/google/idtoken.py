"""OpenID Connect ID tokens (RS256 JWTs) and the JWKS that verifies them.

Google issues an ``id_token`` when ``openid`` is granted; ``iss`` is
``https://accounts.google.com``, ``aud``/``azp`` the client id, ``sub`` the
account id, plus ``email``/``email_verified`` (email scope), profile claims
(profile scope), ``at_hash`` and ``nonce`` when one was sent. The key pair is
generated per process on first use; ``{base}oauth2/v3/certs`` publishes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["ISSUER", "IdTokenSigner"]

ISSUER = "https://accounts.google.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class IdTokenSigner:
    """Signs ID tokens with a lazily generated RSA-2048 key."""

    def __init__(self) -> None:
        self._key: rsa.RSAPrivateKey | None = None
        self._kid = secrets.token_hex(20)
        self._lock = threading.Lock()

    def _private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(
                    public_exponent=65537, key_size=2048
                )
            return self._key

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set (``oauth2/v3/certs``)."""
        numbers = self._private_key().public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self._kid,
                    "n": _uint(numbers.n),
                    "e": _uint(numbers.e),
                }
            ]
        }

    def sign(self, claims: dict[str, Any]) -> str:
        """Return a compact RS256 JWT of ``claims``."""
        header = {"alg": "RS256", "kid": self._kid, "typ": "JWT"}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._private_key().sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + _b64(signature)

    @staticmethod
    def at_hash(access_token: str) -> str:
        """OIDC ``at_hash``: left half of SHA-256 of the access token, base64url."""
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        return _b64(digest[: len(digest) // 2])
