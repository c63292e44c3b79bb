"""Ports and errors every provider adapter shares.

Provider errors (all :class:`~crmflow.errors.CrmflowError`; the message says what
happened and what to do)::

    ProviderError                 .retryable decides whether a job tries again
    ├── AuthError                 the grant or password is no longer accepted:
    │   │                         the integration needs the user to reconnect
    │   └── MissingScope          the grant lacks a permission the feature needs
    ├── RateLimited               429 / 403 rate limits; carries retry_after_s (retryable)
    ├── TransientProviderError    5xx, timeouts, connection resets (retryable)
    ├── CursorExpired             a sync token / delta link / history id is gone
    ├── PreconditionFailed        an etag no longer matches
    │   ├── ItemNotFound
    │   └── ItemAlreadyExists
    ├── UnsupportedOperation      the provider cannot do this
    └── ConnectionCheckFailed     verifying credentials failed, with the reason:
        ├── WrongCredentials
        ├── TlsFailure
        ├── HostUnreachable
        └── NotAServer            the host answers, but not with the protocol asked for
"""

from __future__ import annotations

from collections.abc import Iterable

from crmflow.errors import CrmflowError


class ProviderError(CrmflowError):
    """The mail or calendar provider refused or failed the request."""

    #: whether trying the same request again later can succeed
    retryable: bool = False


class AuthError(ProviderError):
    """The provider no longer accepts this connection; reconnect the integration."""


class MissingScope(AuthError):
    """The connected account did not grant a permission this feature needs."""

    def __init__(self, missing: Iterable[str], message: str | None = None) -> None:
        self.missing = tuple(sorted(missing))
        super().__init__(
            message
            or "The connected account did not grant: "
            + ", ".join(self.missing)
            + ". Use 'Grant access' to add the permission."
        )


class RateLimited(ProviderError):
    """The provider asked us to slow down; crmflow retries later by itself."""

    retryable = True

    def __init__(
        self, retry_after_s: float | None = None, message: str | None = None
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class TransientProviderError(ProviderError):
    """The provider is temporarily unavailable; crmflow retries later by itself."""

    retryable = True


class CursorExpired(ProviderError):
    """The provider forgot our sync position; a full resync is needed."""


class PreconditionFailed(ProviderError):
    """The item changed at the provider since we last saw it."""


class ItemNotFound(PreconditionFailed):
    """The item no longer exists at the provider."""


class ItemAlreadyExists(PreconditionFailed):
    """An item with this id already exists at the provider."""


class UnsupportedOperation(ProviderError):
    """This provider cannot do that."""


class ConnectionCheckFailed(ProviderError):
    """The connection could not be verified."""


class WrongCredentials(ConnectionCheckFailed):
    """The server refused the user name or password; check them (an app-specific
    password may be needed)."""


class TlsFailure(ConnectionCheckFailed):
    """A secure (TLS) connection to the server failed; check the host, port and
    security setting."""


class HostUnreachable(ConnectionCheckFailed):
    """The server could not be reached; check the host name and port."""


class NotAServer(ConnectionCheckFailed):
    """The server answered, but not with the expected protocol; check the URL."""
