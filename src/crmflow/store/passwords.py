"""Password hashing with argon2id (argon2-cffi defaults, RFC 9106 profile).

Each hash or verification holds 64 MiB for a moment (the profile's memory
cost); nothing is hashed when the module is imported, so processes that never
check a password (workers, most CLI commands) never pay it.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

MIN_PASSWORD_LENGTH = 8


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both paths cost the
    same; made on the first such check."""
    return _hasher.hash("crmflow-timing-equaliser")


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check ``password`` against ``stored_hash`` in constant-ish time.

    ``stored_hash=None`` (unknown user) still spends one verification.
    """
    try:
        return (
            _hasher.verify(stored_hash or _dummy_hash(), password)
            and stored_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False
