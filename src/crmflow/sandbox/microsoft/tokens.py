"""Token rendering: the token endpoint's JSON, RS256 id_tokens, JWKS and ``client_info``.

* Response shape (microsoft-graph.md §1.3)::

      {"token_type": "Bearer", "scope": "...", "expires_in": 4231,
       "ext_expires_in": 4231, "access_token": "...", "refresh_token": "...",
       "id_token": "...", "client_info": "..."}

  ``ext_expires_in`` "is in every observed real response"; ``client_info``
  (base64url ``{"uid": oid, "utid": tid}``) is returned when the request sends
  ``client_info=1``, as msal does to build its account ids.
* id_tokens are v2.0 JWTs signed RS256 with a key published at the
  ``jwks_uri`` of the OpenID configuration; claims follow "ID token claims
  reference": ``aud, iss, iat, nbf, exp, name, oid, preferred_username, email
  (with the email scope), sub (pairwise per app), tid, nonce, ver``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crmflow.sandbox.microsoft._ids import object_id
from crmflow.sandbox.microsoft.identity import TokenGrant, response_scope, tenant_of

__all__ = ["SigningKey", "b64url", "token_response"]

#: id_tokens live one hour
ID_TOKEN_LIFETIME_S = 3600


def b64url(data: bytes) -> str:
    """Base64url without padding (JWS)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class SigningKey:
    """An RSA key that signs id_tokens; generated per process (not persisted)."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = b64url(hashlib.sha1(public).digest())[:27]  # noqa: S324 - a key id, not security

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (``keys`` with n/e)."""
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "alg": "RS256",
                    "n": _int_b64(numbers.n),
                    "e": _int_b64(numbers.e),
                }
            ]
        }

    def sign(self, claims: dict[str, Any]) -> str:
        """Return a compact RS256 JWS of ``claims``."""
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + b64url(signature)


def token_response(
    grant: TokenGrant,
    *,
    key: SigningKey,
    issuer_base: str,
    name: str,
    now_s: int,
    client_info: bool,
) -> dict[str, Any]:
    """Render a successful token response."""
    email = grant.access.email
    tid = tenant_of(email)
    oid = object_id(email)
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": response_scope(grant.access.scopes),
        "expires_in": grant.lifetime_s,
        "ext_expires_in": grant.lifetime_s,
        "access_token": grant.access.token,
    }
    if grant.refresh is not None:
        body["refresh_token"] = grant.refresh.token
    if grant.openid:
        claims: dict[str, Any] = {
            "aud": grant.access.client_id,
            "iss": f"{issuer_base}/{tid}/v2.0",
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + ID_TOKEN_LIFETIME_S,
            "name": name,
            "oid": oid,
            "preferred_username": email,
            "sub": b64url(
                hashlib.sha256(f"{oid}:{grant.access.client_id}".encode()).digest()
            )[:43],
            "tid": tid,
            "ver": "2.0",
        }
        if "email" in grant.access.scopes:
            claims["email"] = email
        if grant.nonce:
            claims["nonce"] = grant.nonce
        body["id_token"] = key.sign(claims)
    if client_info:
        body["client_info"] = b64url(json.dumps({"uid": oid, "utid": tid}).encode())
    return body
