"""Ports and errors every provider adapter shares.

Ports: :class:`OAuthProvider` (authorization code + PKCE, refresh, account,
revoke) with its values :class:`OAuthClientCredentials`, :class:`TokenGrant`,
:class:`OAuthAccount` and :class:`RevokeOutcome`.

Provider errors (all :class:`~crmflow.errors.CrmflowError`; the message says what
happened and what to do)::

    ProviderError                 .retryable decides whether a job tries again
    ├── AuthError                 the grant or password is no longer accepted:
    │   │                         the integration needs the user to reconnect
    │   ├── MissingScope          the grant lacks a permission the feature needs
    │   └── GrantRejected         the token endpoint refused a code or refresh
    │                             token (invalid_grant, AADSTS70008/700082/50173 ...)
    ├── ClientRejected            the provider refused crmflow's OAuth client id or
    │                             secret: an administrator must fix them
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

import abc
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from crmflow.domain.integrations import ProviderKey
from crmflow.domain.secret import Secret
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


class GrantRejected(AuthError):
    """The provider refused the authorization code or refresh token; connect again."""

    def __init__(
        self,
        message: str | None = None,
        *,
        error: str = "invalid_grant",
        codes: Sequence[int] = (),
    ) -> None:
        #: the OAuth ``error`` value (``invalid_grant``, ``interaction_required`` ...)
        self.error = error
        #: Microsoft's AADSTS numbers from ``error_codes`` (empty for Google)
        self.codes = tuple(codes)
        super().__init__(message)


class ClientRejected(ProviderError):
    """The provider refused crmflow's OAuth client id or secret; an administrator
    must check them (PUT /api/organization/oauth-clients/{provider}, or the
    CRMFLOW_*_CLIENT_* settings)."""


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


# ------------------------------------------------------------------------ OAuth port


@dataclass(frozen=True, slots=True)
class OAuthClientCredentials:
    """crmflow's registration at a provider (one per organization or deployment)."""

    client_id: str
    #: None for a public client (never the case for crmflow's web server)
    client_secret: Secret | None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A successful token-endpoint response (code exchange or refresh)."""

    access_token: Secret
    #: None when the provider sent none (Google refreshes; Google re-consents
    #: without ``prompt=consent``): keep the stored one
    refresh_token: Secret | None
    #: lifetime of ``access_token`` in seconds, as sent (``expires_in``)
    expires_in_s: int | None
    #: the granted scopes in canonical form; None when the response omitted
    #: ``scope`` (RFC 6749 section 5.1: then equal to the requested scopes)
    scopes: tuple[str, ...] | None
    #: claims of the ID token, read without verifying its signature: it came
    #: straight from the token endpoint over TLS (OpenID Connect Core 3.1.3.7);
    #: used only to name the account when no profile endpoint may be called
    id_claims: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"TokenGrant(expires_in_s={self.expires_in_s!r}, scopes={self.scopes!r}, "
            f"refresh_token={'set' if self.refresh_token else None})"
        )


@dataclass(frozen=True, slots=True)
class OAuthAccount:
    """Who the grant belongs to at the provider."""

    #: the provider's stable id (Google ``sub``, Microsoft Graph user ``id``)
    account_id: str | None
    email: str | None
    display_name: str | None = None


class RevokeOutcome(enum.StrEnum):
    """What revoking a grant at the provider achieved."""

    #: the provider confirmed: every token of the grant is dead
    REVOKED = "revoked"
    #: the provider says the token was already invalid (nothing left to revoke)
    ALREADY_INVALID = "already_invalid"
    #: the provider has no revocation endpoint for delegated grants (Microsoft)
    UNSUPPORTED = "unsupported"


class OAuthProvider(abc.ABC):
    """OAuth 2.0 authorization code flow with PKCE (RFC 6749, RFC 7636) at one
    provider, for one client registration.

    Adapters translate every library and HTTP error into the ``ProviderError``
    tree; no third-party exception escapes. They never prompt, redirect or
    render, and never store anything: the caller persists what they return.
    Scopes go in and come out in the provider's canonical form
    (:meth:`canonical_scope`).
    """

    #: which provider this adapter talks to
    key: ClassVar[ProviderKey]

    @abc.abstractmethod
    def canonical_scope(self, scope: str) -> str:
        """The form the provider reports ``scope`` in (Google ``email`` ->
        ``https://www.googleapis.com/auth/userinfo.email``; Microsoft drops the
        ``https://graph.microsoft.com/`` prefix). Pure; never raises."""

    @abc.abstractmethod
    def authorization_url(
        self,
        *,
        redirect_uri: str,
        scopes: Sequence[str],
        state: str,
        code_verifier: Secret,
        login_hint: str | None = None,
        force_consent: bool = False,
    ) -> str:
        """The URL to send the person's browser to (no I/O).

        Always asks for a code with PKCE ``S256`` and offline access (a refresh
        token); ``force_consent`` adds ``prompt=consent`` (reconnecting), which
        also makes Google issue a new refresh token.

        Returns:
            The authorization endpoint URL with its query.
        """

    @abc.abstractmethod
    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: Secret
    ) -> TokenGrant:
        """Redeem an authorization code (``grant_type=authorization_code``).

        Not idempotent: a code is single-use at every provider.

        Raises:
            GrantRejected: the code is unknown, used, expired, or the PKCE
                verifier does not match its challenge.
            ClientRejected: the client id or secret was refused.
            RateLimited, TransientProviderError: try again later.
            ProviderError: anything else (e.g. redirect URI mismatch).
        """

    @abc.abstractmethod
    async def refresh(
        self, refresh_token: Secret, *, scopes: Sequence[str] = ()
    ) -> TokenGrant:
        """Get a new access token (``grant_type=refresh_token``).

        ``scopes`` narrows the request where the provider wants them (Microsoft);
        empty means "as granted". Microsoft rotates the refresh token on every
        call (the result carries the new one); Google usually sends none.

        Raises:
            GrantRejected: expired or revoked grant: the user must reconnect.
            ClientRejected: the client id or secret was refused.
            RateLimited, TransientProviderError: try again later.
            ProviderError: anything else.
        """

    @abc.abstractmethod
    async def fetch_account(self, grant: TokenGrant) -> OAuthAccount:
        """Who granted ``grant``: the profile endpoint when the granted scopes
        allow it, else the ID token's claims (a narrower grant never fails here).

        Raises:
            AuthError: the access token was refused.
            RateLimited, TransientProviderError: try again later.
        """

    @abc.abstractmethod
    async def revoke(self, token: Secret) -> RevokeOutcome:
        """Revoke the grant ``token`` belongs to (RFC 7009), where the provider can.

        Idempotent: an already dead token is :attr:`RevokeOutcome.ALREADY_INVALID`.

        Raises:
            RateLimited, TransientProviderError: the provider could not be asked.
        """
