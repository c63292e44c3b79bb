"""Password hashing with argon2id (argon2-cffi defaults, RFC 9106 profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
#: verified against when the user does not exist, so both paths cost the same
_DUMMY_HASH = _hasher.hash("crmflow-timing-equaliser")

MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check ``password`` against ``stored_hash`` in constant-ish time.

    ``stored_hash=None`` (unknown user) still spends one verification.
    """
    try:
        return (
            _hasher.verify(stored_hash or _DUMMY_HASH, password)
            and stored_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False
