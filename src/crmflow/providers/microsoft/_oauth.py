"""The Microsoft identity platform's authorization code flow through authlib
(microsoft-graph.md section 1).

* Authorization: ``{login}/{tenant}/oauth2/v2.0/authorize`` with PKCE ``S256``,
  ``response_mode=query`` and ``prompt=consent`` when reconnecting. The
  ``offline_access`` scope is what yields a refresh token (section 1.2).
* Token: ``{login}/{tenant}/oauth2/v2.0/token``. Every refresh returns a **new**
  refresh token that replaces the old one (section 1.4). Errors carry
  ``error_codes`` (AADSTS numbers); clients must branch on ``error`` and those
  codes, never on the text (section 1.5).
* Account: ``{graph}/v1.0/me`` (``id``, ``mail``, falling back to
  ``userPrincipalName``) when ``User.Read`` was granted, else the ID token.
* Revoke: the identity platform has no endpoint that revokes one app's
  delegated grant (``revokeSignInSessions`` would sign the person out of every
  app); :meth:`MicrosoftOAuth.revoke` reports
  :attr:`~crmflow.providers.base.RevokeOutcome.UNSUPPORTED` and the caller
  deletes its copy of the tokens instead.
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

GRAPH_RESOURCE = "https://graph.microsoft.com/"
_OIDC = frozenset({"openid", "email", "profile", "offline_access"})

#: AADSTS codes of a dead grant, in plain words (microsoft-graph.md section 1.5)
DEAD_GRANT_CODES: Mapping[int, str] = {
    70008: "the sign-in expired after a period of inactivity",
    700082: "the sign-in expired after 90 days without use",
    50173: "the access was revoked, for example after a password change",
    70000: "the sign-in is no longer valid",
    9002313: "the stored sign-in was not recognised",
    50076: "Microsoft requires a new multi-factor sign-in",
    70043: "your organization requires you to sign in again",
    65001: "the permission was withdrawn",
}
#: AADSTS codes of a refused authorization code (section 1.5)
CODE_CODES: Mapping[int, str] = {
    54005: "the code was already used",
    70008: "the code has expired",
    50148: "the code does not belong to this sign-in (PKCE verifier mismatch)",
    501481: "the code does not belong to this sign-in (PKCE verifier mismatch)",
    700005: "the code was issued for another tenant",
}
#: codes that mean "crmflow's client registration is wrong"
CLIENT_CODES = frozenset({7000215, 7000222, 700016, 7000218, 50194})
#: codes of a redirect URI that does not match
REDIRECT_CODES = frozenset({50011, 500112})


@dataclass(frozen=True, slots=True)
class MicrosoftEndpoints:
    """Base URLs and the tenant of the identity platform and Graph."""

    #: login.microsoftonline.com
    login_url: str
    #: graph.microsoft.com
    graph_url: str
    #: ``common``, ``organizations``, ``consumers``, a tenant GUID or domain
    tenant: str = "common"

    @property
    def authorize(self) -> str:
        return f"{self.login_url.rstrip('/')}/{self.tenant}/oauth2/v2.0/authorize"

    @property
    def token(self) -> str:
        return f"{self.login_url.rstrip('/')}/{self.tenant}/oauth2/v2.0/token"

    @property
    def me(self) -> str:
        return self.graph_url.rstrip("/") + "/v1.0/me"


def _codes(body: Mapping[str, Any]) -> tuple[int, ...]:
    raw = body.get("error_codes")
    if not isinstance(raw, list):
        return ()
    return tuple(c for c in raw if isinstance(c, int))


def _named(codes: tuple[int, ...], names: Mapping[int, str]) -> str | None:
    for code in codes:
        if code in names:
            return f"{names[code]} (AADSTS{code})"
    return None


def _translate_for(step: str) -> ErrorTranslator:
    def translate(
        status: int, body: Mapping[str, Any], response: httpx.Response
    ) -> ProviderError:
        shared = protocol_error(status, body, response, "Microsoft")
        if shared is not None:
            return shared
        error = str(body.get("error") or f"HTTP {status}")
        codes = _codes(body)
        aadsts = f"AADSTS{codes[0]}" if codes else error
        if error in ("invalid_client", "unauthorized_client") or CLIENT_CODES & set(
            codes
        ):
            return ClientRejected(
                f"Microsoft refused crmflow's app registration ({aadsts}). An "
                "administrator must check the Microsoft client id, secret and tenant."
            )
        if REDIRECT_CODES & set(codes):
            return ProviderError(
                "Microsoft refused the sign-in because the redirect URI does not "
                f"match the one the sign-in started with ({aadsts}). Start "
                "connecting again from crmflow."
            )
        if error in ("invalid_grant", "interaction_required", "consent_required"):
            if step == "refresh":
                reason = _named(codes, DEAD_GRANT_CODES) or f"{aadsts}"
                return GrantRejected(
                    f"Microsoft no longer accepts crmflow's access to this account: "
                    f"{reason}. Reconnect the integration.",
                    error=error,
                    codes=codes,
                )
            reason = _named(codes, CODE_CODES) or f"{aadsts}"
            return GrantRejected(
                f"Microsoft did not accept this sign-in: {reason}. Start connecting "
                "again.",
                error=error,
                codes=codes,
            )
        return ProviderError(
            f"Microsoft refused the sign-in request ({aadsts}). Start connecting "
            "again; tell your administrator if it keeps happening."
        )

    return translate


class MicrosoftOAuth(AuthlibOAuthProvider[MicrosoftEndpoints]):
    """OAuth 2.0 authorization code flow with PKCE against Microsoft Entra ID.

    Built with crmflow's app registration, :class:`MicrosoftEndpoints` (base
    URLs and tenant, production or sandbox) and optionally an httpx transport
    for unit tests.
    """

    key: ClassVar[ProviderKey] = ProviderKey.MICROSOFT
    vendor: ClassVar[str] = "Microsoft"

    def _translate_for(self, step: str) -> ErrorTranslator:
        return _translate_for(step)

    def canonical_scope(self, scope: str) -> str:
        low = scope.casefold()
        if low in _OIDC:
            return low
        if low.startswith(GRAPH_RESOURCE):
            return scope[len(GRAPH_RESOURCE) :]
        return scope

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
        wanted = list(scopes)
        if "offline_access" not in {s.casefold() for s in wanted}:
            wanted.append("offline_access")  # the refresh token
        return self._authorization_url(
            redirect_uri=redirect_uri,
            scopes=wanted,
            state=state,
            code_verifier=code_verifier,
            login_hint=login_hint,
            force_consent=force_consent,
            params={"response_mode": "query"},
        )

    async def refresh(
        self, refresh_token: Secret, *, scopes: Sequence[str] = ()
    ) -> TokenGrant:
        wanted = list(dict.fromkeys(self.canonical_scope(s) for s in scopes))
        if wanted and "offline_access" not in wanted:
            wanted.append("offline_access")  # keep getting rotated refresh tokens
        params = {"scope": " ".join(wanted)} if wanted else {}
        return await self._refresh_grant(refresh_token, params)

    async def fetch_account(self, grant: TokenGrant) -> OAuthAccount:
        claims = grant.id_claims
        granted = {s.casefold() for s in grant.scopes or ()}
        if grant.scopes is not None and "user.read" not in granted:
            return _account({}, claims)
        data = await self._fetch_profile(
            grant,
            self._endpoints.me,
            params={"$select": "id,mail,userPrincipalName,displayName"},
        )
        return _account(data if isinstance(data, dict) else {}, claims)

    async def revoke(self, token: Secret) -> RevokeOutcome:
        del token  # nothing to call: see the module docstring
        return RevokeOutcome.UNSUPPORTED


def _account(me: Mapping[str, Any], claims: Mapping[str, Any]) -> OAuthAccount:
    account_id = me.get("id") or claims.get("oid")
    email = (
        me.get("mail")
        or me.get("userPrincipalName")
        or claims.get("email")
        or claims.get("preferred_username")
    )
    name = me.get("displayName") or claims.get("name")
    return OAuthAccount(
        account_id=str(account_id) if account_id else None,
        email=str(email).lower() if email else None,
        display_name=str(name) if name else None,
    )
