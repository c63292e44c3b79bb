"""OAuth plumbing the Google and Microsoft adapters share: authlib clients on
httpx, token-response parsing, the translation of failed token responses, and
:class:`AuthlibOAuthProvider`, the base of both adapters (the code flow's
steps that are the same at both vendors).

The protocol itself is authlib's (``AsyncOAuth2Client``: authorization URLs
with PKCE ``S256``, the token endpoint's grants, RFC 7009 revocation); this
module only configures it and turns what comes back into the port's values
(:class:`~crmflow.providers.base.TokenGrant`) and errors. Failed token
responses are translated in a compliance hook *before* authlib parses them,
because authlib keeps only ``error`` and ``error_description`` (Microsoft's
``error_codes`` would be lost) and refuses descriptions containing line breaks,
which Microsoft always sends (microsoft-graph.md section 1.5).
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import warnings
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import httpx

from crmflow.domain.secret import Secret
from crmflow.providers._http import (
    errors_from_response,
    retry_after_s,
    transport_error,
)
from crmflow.providers.base import (
    OAuthClientCredentials,
    OAuthProvider,
    ProviderError,
    RateLimited,
    TokenGrant,
    TransientProviderError,
)

with warnings.catch_warnings():
    # authlib >= 1.8 prefers the "httpx2" package and warns once, at import, when
    # it falls back to httpx. crmflow's HTTP client is httpx (house style), and
    # with pytest's "filterwarnings = error" that one warning would fail every
    # import. Only this import is silenced. authlib.deprecate installs an
    # "always" filter for its warnings when first imported: import it first, so
    # the "ignore" below is the filter that applies here.
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401 - for its side effect; no type information

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.common.errors import AuthlibBaseError  # type: ignore[import-untyped]  # authlib ships no type information
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]  # same
        AsyncOAuth2Client,
    )
    from authlib.oauth2.client import (  # type: ignore[import-untyped]  # same
        OAuth2Client,
    )

__all__ = [
    "AuthlibOAuthProvider",
    "ErrorTranslator",
    "authorization_url",
    "grant_from_token",
    "id_token_claims",
    "oauth_client",
    "protocol_error",
    "raise_for_profile",
]

#: timeouts of sign-in calls, in seconds: shorter than the generic ones because a
#: token refresh holds the integration's database lock while it waits (on
#: SQLite the write lock, whose other waiters give up after 15 s)
OAUTH_TIMEOUT = httpx.Timeout(8.0, connect=4.0)

#: (status, JSON body or {}, response) -> the error to raise
ErrorTranslator = Callable[[int, Mapping[str, Any], httpx.Response], ProviderError]


def authorization_url(
    credentials: OAuthClientCredentials,
    endpoint: str,
    *,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    code_verifier: Secret,
    params: Mapping[str, str],
) -> str:
    """The authorization request URL: code flow, PKCE S256 (no I/O)."""
    client = OAuth2Client(
        session=None,
        client_id=credentials.client_id,
        redirect_uri=redirect_uri,
        scope=" ".join(scopes),
        code_challenge_method="S256",
    )
    url, _state = client.create_authorization_url(
        endpoint, state=state, code_verifier=code_verifier.reveal(), **params
    )
    return str(url)


@asynccontextmanager
async def oauth_client(
    credentials: OAuthClientCredentials,
    translate: ErrorTranslator,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    token: Mapping[str, Any] | None = None,
) -> Any:
    """An authlib ``AsyncOAuth2Client`` (an ``httpx.AsyncClient``) whose failed
    token responses raise ``translate(...)``; network errors become
    :class:`TransientProviderError` and library errors :class:`ProviderError`.

    The client secret goes in the request body (``client_secret_post``), which
    Google and Microsoft both document.
    """
    secret = credentials.client_secret
    client = AsyncOAuth2Client(
        client_id=credentials.client_id,
        client_secret=secret.reveal() if secret is not None else None,
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
        revocation_endpoint_auth_method="client_secret_post",
        code_challenge_method="S256",
        token=dict(token) if token is not None else None,
        timeout=OAUTH_TIMEOUT,
        follow_redirects=False,
        transport=transport,
    )

    def check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise translate(response.status_code, _json(response), response)
        return response

    client.register_compliance_hook("access_token_response", check)
    client.register_compliance_hook("refresh_token_response", check)
    try:
        async with client:
            yield client
    except httpx.TransportError as exc:
        raise transport_error(exc, "The sign-in service") from None
    except (AuthlibBaseError, httpx.HTTPStatusError, ValueError, KeyError) as exc:
        # Only the class name: library messages may quote request data.
        raise ProviderError(
            f"The provider's sign-in service answered something crmflow cannot "
            f"read ({type(exc).__name__}); try again later."
        ) from None


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def protocol_error(
    status: int, body: Mapping[str, Any], response: httpx.Response, vendor: str
) -> ProviderError | None:
    """The error every vendor shares: 429 and 5xx, or None."""
    error = str(body.get("error") or "")
    if status == 429 or error == "rate_limit_exceeded":
        return RateLimited(
            retry_after_s(response),
            f"{vendor} is rate limiting sign-in requests; crmflow retries later.",
        )
    if status >= 500 or error in (
        "temporarily_unavailable",
        "server_error",
        "internal_failure",
    ):
        return TransientProviderError(
            f"{vendor}'s sign-in service is unavailable (HTTP {status}); crmflow "
            "retries later."
        )
    return None


def raise_for_profile(response: httpx.Response, vendor: str) -> None:
    """Raise the port's error for a failed profile request (userinfo, /me)."""
    if response.status_code >= 400:
        raise errors_from_response(response, f"Reading the {vendor} account")


def id_token_claims(id_token: object) -> dict[str, Any]:
    """The claims of a JWT, without verifying its signature ({} when unreadable).

    Only for an ID token received directly from the token endpoint over TLS
    (OpenID Connect Core 1.0 section 3.1.3.7 allows TLS server validation in
    place of the signature check there).
    """
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return {}
    payload = id_token.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def grant_from_token(
    token: Mapping[str, Any], canonical: Callable[[str], str]
) -> TokenGrant:
    """The port's value for a parsed token response (secrets wrapped at once).

    Raises:
        ProviderError: the response has no access token.
    """
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError(
            "The provider's token response had no access token; try connecting again."
        )
    refresh = token.get("refresh_token")
    expires = token.get("expires_in")
    scope = token.get("scope")
    scopes: tuple[str, ...] | None = None
    if isinstance(scope, str):
        scopes = tuple(dict.fromkeys(canonical(s) for s in scope.split()))
    elif isinstance(scope, list):
        scopes = tuple(dict.fromkeys(canonical(str(s)) for s in scope))
    try:
        expires_in_s = int(expires) if expires is not None else None
    except (TypeError, ValueError):
        expires_in_s = None
    return TokenGrant(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        expires_in_s=expires_in_s,
        scopes=scopes,
        id_claims=id_token_claims(token.get("id_token")),
    )


class OAuthEndpoints(Protocol):
    """What :class:`AuthlibOAuthProvider` needs of a vendor's endpoints."""

    @property
    def authorize(self) -> str: ...

    @property
    def token(self) -> str: ...


EndpointsT = TypeVar("EndpointsT", bound=OAuthEndpoints)


class AuthlibOAuthProvider(OAuthProvider, Generic[EndpointsT]):
    """The authorization code flow with PKCE on authlib, as Google and Microsoft
    share it: the code exchange, and the building blocks of the authorization
    URL, the refresh and the profile request. Subclasses name the vendor, map a
    step to its error translator and implement the vendor-specific steps.
    """

    #: the vendor's name in error messages ("Google", "Microsoft")
    vendor: ClassVar[str]

    def __init__(
        self,
        credentials: OAuthClientCredentials,
        endpoints: EndpointsT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """
        Args:
            credentials: crmflow's client (app) registration.
            endpoints: the vendor's base URLs (production or sandbox).
            transport: an httpx transport for unit tests (``httpx.MockTransport``).
        """
        self._credentials = credentials
        self._endpoints = endpoints
        self._transport = transport

    @abc.abstractmethod
    def _translate_for(self, step: str) -> ErrorTranslator:
        """The translator of failed token responses of ``step`` (``exchange``,
        ``refresh``, ``account``, ``revoke``)."""

    def _authorization_url(
        self,
        *,
        redirect_uri: str,
        scopes: list[str],
        state: str,
        code_verifier: Secret,
        login_hint: str | None,
        force_consent: bool,
        params: dict[str, str],
    ) -> str:
        """The authorization URL with the vendor's ``params``, plus
        ``prompt=consent`` when ``force_consent`` and ``login_hint`` when given."""
        if force_consent:
            params["prompt"] = "consent"
        if login_hint:
            params["login_hint"] = login_hint
        return authorization_url(
            self._credentials,
            self._endpoints.authorize,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            code_verifier=code_verifier,
            params=params,
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: Secret
    ) -> TokenGrant:
        async with oauth_client(
            self._credentials,
            self._translate_for("exchange"),
            transport=self._transport,
        ) as client:
            token = await client.fetch_token(
                self._endpoints.token,
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier.reveal(),
            )
        return grant_from_token(token, self.canonical_scope)

    async def _refresh_grant(
        self, refresh_token: Secret, params: Mapping[str, str]
    ) -> TokenGrant:
        """Redeem ``refresh_token`` (with the extra token ``params``); the grant's
        refresh token is None when the response carried none."""
        async with oauth_client(
            self._credentials, self._translate_for("refresh"), transport=self._transport
        ) as client:
            token = await client.refresh_token(
                self._endpoints.token, refresh_token=refresh_token.reveal(), **params
            )
            grant = grant_from_token(token, self.canonical_scope)
        if grant.refresh_token is not None and grant.refresh_token == refresh_token:
            # authlib copies the old refresh token into a response without one;
            # report "none sent", as the port promises.
            grant = TokenGrant(
                access_token=grant.access_token,
                refresh_token=None,
                expires_in_s=grant.expires_in_s,
                scopes=grant.scopes,
                id_claims=grant.id_claims,
            )
        return grant

    async def _fetch_profile(
        self, grant: TokenGrant, url: str, params: Mapping[str, str] | None = None
    ) -> Any:
        """The decoded JSON of the profile endpoint ``url``, read with ``grant``'s
        access token (a failed request raises the port's error)."""
        token = {"access_token": grant.access_token.reveal(), "token_type": "Bearer"}
        async with oauth_client(
            self._credentials,
            self._translate_for("account"),
            transport=self._transport,
            token=token,
        ) as client:
            response = await client.get(url, params=params)
            raise_for_profile(response, self.vendor)
            return response.json()
