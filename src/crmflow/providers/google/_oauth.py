"""Google's OAuth 2.0 endpoints through authlib (google-apis.md section 1).

* Authorization: ``{accounts}/o/oauth2/v2/auth`` with ``access_type=offline``
  (a refresh token on the first consent), ``include_granted_scopes=true``
  (incremental authorization: the new grant keeps earlier scopes), PKCE
  ``S256``, and ``prompt=consent`` when reconnecting — the only way to get a
  new refresh token for a grant that exists already (section 1.2).
* Token: ``{oauth2}/token``. Refresh responses carry no ``refresh_token``
  (section 1.4): :class:`~crmflow.providers.base.TokenGrant` then has None and
  the caller keeps the stored one. Every dead grant answers 400
  ``invalid_grant`` "Token has been expired or revoked." (section 1.5).
* Account: ``{api}/oauth2/v3/userinfo`` (``sub``, ``email``) when the ``email``
  scope was granted, else the ID token's claims.
* Revoke: ``{oauth2}/revoke`` (section 1.6); revoking one token revokes the
  whole grant of this client for that Google account, every kind included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from crmflow.domain.integrations import ProviderKey
from crmflow.domain.secret import Secret
from crmflow.providers._oauth import (
    AuthlibOAuthProvider,
    ErrorTranslator,
    oauth_client,
    protocol_error,
)
from crmflow.providers.base import (
    ClientRejected,
    GrantRejected,
    OAuthAccount,
    ProviderError,
    RevokeOutcome,
    TokenGrant,
)

EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
PROFILE_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"
#: Google reports the short identity scopes by these URLs (google-apis.md 1.7)
_ALIASES = {"email": EMAIL_SCOPE, "profile": PROFILE_SCOPE}


@dataclass(frozen=True, slots=True)
class GoogleEndpoints:
    """Base URLs of Google's hosts (the sandbox serves all three under one)."""

    #: accounts.google.com
    accounts_url: str
    #: oauth2.googleapis.com
    oauth2_url: str
    #: www.googleapis.com
    api_url: str

    @property
    def authorize(self) -> str:
        return self.accounts_url.rstrip("/") + "/o/oauth2/v2/auth"

    @property
    def token(self) -> str:
        return self.oauth2_url.rstrip("/") + "/token"

    @property
    def revoke(self) -> str:
        return self.oauth2_url.rstrip("/") + "/revoke"

    @property
    def userinfo(self) -> str:
        return self.api_url.rstrip("/") + "/oauth2/v3/userinfo"


def _translate_for(step: str) -> ErrorTranslator:
    def translate(
        status: int, body: Mapping[str, Any], response: httpx.Response
    ) -> ProviderError:
        shared = protocol_error(status, body, response, "Google")
        if shared is not None:
            return shared
        error = str(body.get("error") or f"HTTP {status}")
        if error == "invalid_grant":
            if step == "refresh":
                return GrantRejected(
                    "Google no longer accepts crmflow's access to this account: it "
                    "was revoked, expired or replaced (invalid_grant). Reconnect "
                    "the integration.",
                    error=error,
                )
            return GrantRejected(
                "Google did not accept this sign-in: the code was already used, "
                "has expired, or does not belong to this sign-in (invalid_grant). "
                "Start connecting again.",
                error=error,
            )
        if error in ("invalid_client", "unauthorized_client"):
            return ClientRejected(
                f"Google refused crmflow's OAuth client ({error}). An administrator "
                "must check the Google client id and secret."
            )
        if error == "redirect_uri_mismatch":
            return ProviderError(
                "Google refused the sign-in because the redirect URI does not match "
                "the one the sign-in started with (redirect_uri_mismatch). Start "
                "connecting again from crmflow."
            )
        return ProviderError(
            f"Google refused the sign-in request ({error}). Start connecting again; "
            "tell your administrator if it keeps happening."
        )

    return translate


class GoogleOAuth(AuthlibOAuthProvider[GoogleEndpoints]):
    """OAuth 2.0 authorization code flow with PKCE against Google.

    Built with crmflow's client registration, :class:`GoogleEndpoints`
    (production or sandbox) and optionally an httpx transport for unit tests.
    """

    key: ClassVar[ProviderKey] = ProviderKey.GOOGLE
    vendor: ClassVar[str] = "Google"

    def _translate_for(self, step: str) -> ErrorTranslator:
        return _translate_for(step)

    def canonical_scope(self, scope: str) -> str:
        return _ALIASES.get(scope, scope)

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
        return self._authorization_url(
            redirect_uri=redirect_uri,
            scopes=list(scopes),
            state=state,
            code_verifier=code_verifier,
            login_hint=login_hint,
            force_consent=force_consent,
            params={"access_type": "offline", "include_granted_scopes": "true"},
        )

    async def refresh(
        self, refresh_token: Secret, *, scopes: Sequence[str] = ()
    ) -> TokenGrant:
        # No scope parameter: Google refreshes "as granted" (narrowing is optional
        # and crmflow never needs it).
        del scopes
        return await self._refresh_grant(refresh_token, {})

    async def fetch_account(self, grant: TokenGrant) -> OAuthAccount:
        claims = grant.id_claims
        granted = set(grant.scopes or ())
        if grant.scopes is not None and EMAIL_SCOPE not in granted:
            # userinfo without the email scope would only say "sub": the ID token
            # says as much, without a request.
            return _account(claims)
        data = await self._fetch_profile(grant, self._endpoints.userinfo)
        if not isinstance(data, dict):
            return _account(claims)
        return _account({**claims, **data})

    async def revoke(self, token: Secret) -> RevokeOutcome:
        async with oauth_client(
            self._credentials, _translate_for("revoke"), transport=self._transport
        ) as client:
            response = await client.revoke_token(
                self._endpoints.revoke, token=token.reveal()
            )
        if response.status_code == 200:
            return RevokeOutcome.REVOKED
        shared = protocol_error(response.status_code, {}, response, "Google")
        if shared is not None:
            raise shared
        # 400 invalid_token: "Token expired or revoked" - nothing left to revoke.
        return RevokeOutcome.ALREADY_INVALID


def _account(data: Mapping[str, Any]) -> OAuthAccount:
    sub = data.get("sub")
    email = data.get("email")
    name = data.get("name")
    return OAuthAccount(
        account_id=str(sub) if sub else None,
        email=str(email).lower() if email else None,
        display_name=str(name) if name else None,
    )
