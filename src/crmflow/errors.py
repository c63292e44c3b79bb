"""Root of crmflow's error hierarchy.

Every error a user can meet carries a message that says what happened and what to
do. A class's message defaults to its docstring, so raising ``NotFound()`` is
already meaningful.

Our exception hierarchy::

    CrmflowError
    ├── ConfigError               a setting is missing or malformed (start-up stops)
    ├── NotFound                  the object does not exist *for the acting user*
    ├── PermissionDenied          the object exists and is visible, but not writable
    ├── Conflict                  the write lost a race (stale version) or is a duplicate
    ├── ValidationFailed          the input breaks a domain rule
    └── CryptoError               encryption keys missing, malformed or wrong
        └── TokenDecryptError     a stored secret cannot be opened with any known key

Provider and sync errors join this tree under ``ProviderError`` and ``SyncError``
in later modules.
"""

from __future__ import annotations

#: what a sync that stopped on a bug (not a provider's or a user's error)
#: tells the user; the server's log has the exception
UNEXPECTED_FAILURE = (
    "The sync stopped on an unexpected error; it is tried again shortly. If this "
    "keeps happening, the server's log has the details."
)


class CrmflowError(Exception):
    """Something went wrong in crmflow."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The user-facing message."""
        return str(self)


class ConfigError(CrmflowError):
    """A setting is missing or malformed; fix the named CRMFLOW_ variable."""


class NotFound(CrmflowError):
    """The requested object does not exist."""


class PermissionDenied(CrmflowError):
    """You are not allowed to change this object."""


class Conflict(CrmflowError):
    """The object was changed by someone else; reload it and try again."""


class ValidationFailed(CrmflowError):
    """The input is not valid."""


class CryptoError(CrmflowError):
    """The encryption keys are missing or malformed; set CRMFLOW_ENCRYPTION_KEYS."""


class TokenDecryptError(CryptoError):
    """A stored secret cannot be decrypted with the configured keys.

    The key that encrypted it has probably been removed from CRMFLOW_ENCRYPTION_KEYS:
    add it back, or reconnect the integration so a new secret is stored.
    """
