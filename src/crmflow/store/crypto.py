"""The token vault: AES-256-GCM envelope encryption under a key ring with key ids.

Stored format (ASCII, fits a text column)::

    v1:<key id>:<base64url(12-byte nonce || ciphertext || 16-byte tag)>

The associated data binds a ciphertext to the place it is stored
(``"<table>.<column>:<row id>"``), so a value copied into another row or column
fails to decrypt instead of silently authenticating someone else.

New secrets are sealed with the **last** key of the ring; every key of the ring
opens. Rotation (``crmflow keys rotate``) re-seals every stored secret under the
newest key, after which old keys can be removed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crmflow.domain.secret import Secret
from crmflow.errors import CryptoError, TokenDecryptError

_FORMAT = "v1"
_NONCE_BYTES = 12  # 96-bit nonce, as recommended for GCM (NIST SP 800-38D)
_KEY_BYTES = 32  # AES-256
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
ENV_NAME = "CRMFLOW_ENCRYPTION_KEYS"


def _b64d(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    # validate=True: the url-safe decoder otherwise drops stray characters silently
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def generate_key_entry(key_id: str | None = None) -> str:
    """Return a new ``id:base64key`` ring entry with 256 random bits."""
    kid = key_id or "k" + secrets.token_hex(4)
    if not _KEY_ID.match(kid):
        raise CryptoError("A key id is 1-32 letters, digits, '-' or '_'.")
    return f"{kid}:{_b64e(os.urandom(_KEY_BYTES))}"


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Parsed keys in ring order; the last one is current."""

    ids: tuple[str, ...]
    keys: tuple[bytes, ...]

    @property
    def current_id(self) -> str:
        """The id new secrets are sealed with."""
        return self.ids[-1]

    def __repr__(self) -> str:
        return f"KeyRing(ids={self.ids!r})"


def parse_key_ring(value: Secret | str) -> KeyRing:
    """Parse ``id:base64key[,id:base64key...]``.

    Raises:
        CryptoError: naming what is wrong, never echoing key material.
    """
    text = value.reveal() if isinstance(value, Secret) else value
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries:
        raise CryptoError(
            f"{ENV_NAME} is empty; create a key with `crmflow keys generate`."
        )
    ids: list[str] = []
    keys: list[bytes] = []
    for position, entry in enumerate(entries, start=1):
        kid, sep, b64 = entry.partition(":")
        if not sep or not _KEY_ID.match(kid):
            raise CryptoError(
                f"{ENV_NAME}: entry {position} is not 'id:base64key' "
                "(ids are 1-32 letters, digits, '-' or '_')."
            )
        try:
            key = _b64d(b64)
        except (binascii.Error, ValueError):
            raise CryptoError(f"{ENV_NAME}: key {kid!r} is not valid base64.") from None
        if len(key) != _KEY_BYTES:
            raise CryptoError(
                f"{ENV_NAME}: key {kid!r} has {len(key)} bytes; AES-256 needs 32."
            )
        if kid in ids:
            raise CryptoError(f"{ENV_NAME}: key id {kid!r} appears twice.")
        ids.append(kid)
        keys.append(key)
    return KeyRing(tuple(ids), tuple(keys))


def key_id_of(stored: str) -> str:
    """Return the key id a stored value was sealed with.

    Raises:
        TokenDecryptError: the value is not in the vault format.
    """
    parts = stored.split(":", 2)
    if len(parts) != 3 or parts[0] != _FORMAT:
        raise TokenDecryptError("A stored secret is not in the vault's format.")
    return parts[1]


class Vault:
    """Seals and opens secrets with a :class:`KeyRing`."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._aead = {
            kid: AESGCM(key) for kid, key in zip(ring.ids, ring.keys, strict=True)
        }

    @classmethod
    def from_setting(cls, value: Secret | None) -> Vault:
        """Build a vault from the ``CRMFLOW_ENCRYPTION_KEYS`` setting.

        Raises:
            CryptoError: the setting is missing or malformed.
        """
        if value is None:
            raise CryptoError(
                f"{ENV_NAME} is not set; create a key with `crmflow keys generate`."
            )
        return cls(parse_key_ring(value))

    @property
    def current_key_id(self) -> str:
        """The key id new secrets are sealed with."""
        return self._ring.current_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id of the ring, oldest first."""
        return self._ring.ids

    def seal(self, secret: Secret, context: str) -> str:
        """Encrypt ``secret`` for storage at ``context`` (``table.column:row id``)."""
        kid = self._ring.current_id
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead[kid].encrypt(
            nonce, secret.reveal().encode("utf-8"), context.encode("utf-8")
        )
        return f"{_FORMAT}:{kid}:{_b64e(nonce + sealed)}"

    def open(self, stored: str, context: str) -> Secret:
        """Decrypt a value sealed for ``context``.

        Raises:
            TokenDecryptError: unknown key id, tampering, or the wrong context.
        """
        kid = key_id_of(stored)
        aead = self._aead.get(kid)
        if aead is None:
            raise TokenDecryptError(
                f"A stored secret was encrypted with key {kid!r}, which is not in "
                f"{ENV_NAME}; add that key back (keys are only removed after "
                "`crmflow keys rotate`)."
            )
        try:
            blob = _b64d(stored.split(":", 2)[2])
            plain = aead.decrypt(
                blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode("utf-8")
            )
        except (InvalidTag, binascii.Error, ValueError):
            raise TokenDecryptError(
                f"A stored secret could not be decrypted with key {kid!r}: the key "
                "is wrong or the value was altered."
            ) from None
        return Secret(plain.decode("utf-8"))

    def needs_rotation(self, stored: str) -> bool:
        """Whether ``stored`` was sealed with a key other than the current one."""
        return key_id_of(stored) != self._ring.current_id


def context_for(table: str, column: str, row_id: object) -> str:
    """The associated data binding a ciphertext to its row and column."""
    return f"{table}.{column}:{row_id}"
