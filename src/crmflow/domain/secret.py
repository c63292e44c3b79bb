"""A wrapper that keeps secrets out of logs, reprs and tracebacks."""

from __future__ import annotations

import hmac
from typing import Final

_MASK: Final = "**********"


class Secret:
    """Holds a secret string (OAuth token, client secret, password).

    ``str()`` and ``repr()`` never show the value; call :meth:`reveal` at the one
    place that really needs it (an HTTP header, an encryption call). Equality is
    constant-time so secrets can be compared safely.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """Return the plaintext. Never log or render what this returns."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the plaintext somewhere we do not control.
        raise TypeError("Secret values cannot be pickled")
