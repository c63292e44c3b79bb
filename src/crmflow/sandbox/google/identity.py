"""Google OAuth 2.0 data and rules: clients, grants, codes, tokens.

HTTP lives in :mod:`crmflow.sandbox.google.oauth`; this module holds the rules,
each from Google's "OAuth 2.0 for Web Server Applications" page and the facts
collected in google-apis.md §1 / checklist items 29-32:

* ``redirect_uri`` must match a registered URI exactly (scheme, case and
  trailing slash).
* ``access_type=offline`` yields a refresh token "the first time that your
  application exchanges an authorization code" — i.e. on the first consent of a
  user to a client — or again when ``prompt=consent`` forces the consent screen.
  A revoke resets this (the next consent is a first consent again).
* ``include_granted_scopes=true`` adds the scopes granted earlier; the token's
  ``scope`` lists **granted** scopes only (granular consent may grant fewer).
* Access tokens live 3599 s. Refresh responses carry no new refresh token.
* Refresh tokens die on revoke, after six months unused, after 7 days when the
  client's consent screen is in Testing, and silently when the 101st token for
  the same account and client is issued (the oldest goes).
* PKCE: ``S256`` or ``plain`` (``plain`` when ``code_challenge_method`` is absent).
* Revoking an access token also revokes its refresh token (and the grant).

Every method must be called with ``state.lock`` held (GoogleStore does that).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACCESS_TOKEN_LIFETIME_S",
    "AccessToken",
    "AuthCode",
    "Grant",
    "Identity",
    "OAuthClient",
    "OAuthError",
    "PendingConsent",
    "RefreshToken",
    "canonical_scope",
]

#: "expires_in": Google's access tokens live one hour minus a second
ACCESS_TOKEN_LIFETIME_S = 3599
#: authorization codes are short-lived; Google does not document the value
CODE_LIFETIME_S = 600
#: Testing-mode consent screens get refresh tokens "expiring in 7 days"
TESTING_REFRESH_LIFETIME_S = 7 * 24 * 3600
#: "The refresh token has not been used for six months."
REFRESH_IDLE_LIMIT_S = 183 * 24 * 3600
#: "a limit of 100 refresh tokens per Google Account per OAuth 2.0 client ID"
MAX_REFRESH_TOKENS = 100

EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
PROFILE_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"
OPENID_SCOPE = "openid"

_ALIASES = {"email": EMAIL_SCOPE, "profile": PROFILE_SCOPE}


def canonical_scope(scope: str) -> str:
    """Map the short identity scopes to the URLs Google returns (``email`` -> ``…/userinfo.email``)."""
    return _ALIASES.get(scope, scope)


class OAuthError(Exception):
    """A token-endpoint error: ``{"error": error, "error_description": description}``."""

    def __init__(self, status: int, error: str, description: str | None) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        """Return the JSON body (RFC 6749 §5.2 fields)."""
        body = {"error": self.error}
        if self.description is not None:
            body["error_description"] = self.description
        return body


def _expired_or_revoked() -> OAuthError:
    # The body every refresh failure returns (google-apis.md §1.4, [OBS] across
    # many client libraries).
    return OAuthError(400, "invalid_grant", "Token has been expired or revoked.")


@dataclass
class OAuthClient:
    """A registered OAuth client (Google Cloud "Web application" credentials)."""

    client_id: str
    client_secret: str
    #: exact-match list ("scheme, case, and trailing slash must all match")
    redirect_uris: list[str] = field(default_factory=list)
    #: consent screen publishing status "Testing": refresh tokens last 7 days
    testing: bool = False
    #: shown on the consent page
    name: str = "crmflow"

    def public_json(self) -> dict[str, Any]:
        """Return the control API's JSON form (secret included: it is a sandbox)."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "testing": self.testing,
            "name": self.name,
        }


@dataclass
class Grant:
    """What one user granted one client."""

    email: str
    client_id: str
    scopes: list[str]
    #: a refresh token was issued since the grant began (so the next
    #: offline consent is not a "first" one)
    refresh_issued: bool = False


@dataclass
class RefreshToken:
    """An issued refresh token."""

    token: str
    email: str
    client_id: str
    scopes: list[str]
    issued_ms: int
    last_used_ms: int
    #: Testing-mode expiry; None = no time limit
    expires_ms: int | None = None
    revoked: bool = False


@dataclass
class AccessToken:
    """An issued access token."""

    token: str
    email: str
    client_id: str
    scopes: list[str]
    expires_ms: int
    #: the refresh token it came from (or was issued with)
    refresh_token: str | None = None
    revoked: bool = False


@dataclass
class AuthCode:
    """An authorization code waiting for the token exchange."""

    code: str
    email: str
    client_id: str
    redirect_uri: str
    #: scopes the token will carry (granted now, plus earlier ones with
    #: include_granted_scopes)
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str | None
    issue_refresh: bool
    nonce: str | None
    expires_ms: int
    used: bool = False


@dataclass
class PendingConsent:
    """An authorization request waiting on the consent page."""

    id: str
    client_id: str
    redirect_uri: str
    #: requested scopes, canonical, in request order
    scopes: list[str]
    state: str | None
    access_type: str
    prompt: list[str]
    include_granted_scopes: bool
    login_hint: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    created_ms: int


@dataclass
class IdentityData:
    """Everything :class:`Identity` persists."""

    clients: dict[str, OAuthClient] = field(default_factory=dict)
    #: key "email client_id"
    grants: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    pending: dict[str, PendingConsent] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenGrant:
    """The outcome of a successful token request, before rendering."""

    access: AccessToken
    refresh: RefreshToken | None
    #: include an OpenID id_token (openid scope granted)
    openid: bool
    nonce: str | None = None


def pkce_s256(verifier: str) -> str:
    """Return ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`` without padding (RFC 7636 §4.2).

    A verifier outside ASCII cannot match any challenge; it is hashed as UTF-8
    so that it fails the comparison instead of raising.
    """
    digest = hashlib.sha256(verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same(given: str, expected: str) -> bool:
    """Constant-time string comparison that also accepts non-ASCII input.

    ``secrets.compare_digest`` raises TypeError for non-ASCII ``str``; form
    fields are client input, so compare their UTF-8 bytes.
    """
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class Identity:
    """OAuth rules over :class:`IdentityData`. Call with the state lock held."""

    def __init__(self, data: IdentityData | None = None) -> None:
        self.data = data or IdentityData()

    # -- clients ---------------------------------------------------------------

    def register_client(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        redirect_uris: list[str] | None = None,
        testing: bool = False,
        name: str = "crmflow",
    ) -> OAuthClient:
        """Register (or replace) a client; ids and secrets are generated when absent."""
        cid = client_id or (
            f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com"
        )
        client = OAuthClient(
            client_id=cid,
            client_secret=client_secret or "GOCSPX-" + secrets.token_urlsafe(21),
            redirect_uris=list(redirect_uris or []),
            testing=testing,
            name=name,
        )
        self.data.clients[cid] = client
        return client

    def default_client(self) -> OAuthClient:
        """Return the first registered client, registering one if there is none."""
        if not self.data.clients:
            return self.register_client(name="crmflow sandbox")
        return next(iter(self.data.clients.values()))

    def authenticate_client(
        self, client_id: str | None, client_secret: str | None
    ) -> OAuthClient:
        """Check client credentials at the token endpoint.

        Raises:
            OAuthError: 400 invalid_request without a client id; 401
                invalid_client for an unknown client or a wrong secret.
        """
        if not client_id:
            raise OAuthError(
                400, "invalid_request", "Could not determine client ID from request."
            )
        client = self.data.clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if not client_secret or not _same(client_secret, client.client_secret):
            raise OAuthError(401, "invalid_client", "Unauthorized")
        return client

    # -- grants ----------------------------------------------------------------

    def grant(self, email: str, client_id: str) -> Grant | None:
        """Return the user's grant to the client, if any."""
        return self.data.grants.get(f"{email} {client_id}")

    def _record_grant(self, email: str, client_id: str, scopes: list[str]) -> Grant:
        key = f"{email} {client_id}"
        grant = self.data.grants.get(key)
        if grant is None:
            grant = Grant(email=email, client_id=client_id, scopes=sorted(set(scopes)))
            self.data.grants[key] = grant
        else:
            grant.scopes = sorted(set(grant.scopes) | set(scopes))
        return grant

    def revoke_grant(self, email: str, client_id: str | None = None) -> int:
        """Revoke the user's grants (to one client or all) with every token; return how many."""
        keys = [
            k
            for k, g in self.data.grants.items()
            if g.email == email and (client_id is None or g.client_id == client_id)
        ]
        for key in keys:
            grant = self.data.grants.pop(key)
            self._kill_tokens(grant.email, grant.client_id)
        return len(keys)

    def _kill_tokens(self, email: str, client_id: str) -> None:
        for rt in self.data.refresh_tokens.values():
            if rt.email == email and rt.client_id == client_id:
                rt.revoked = True
        for at in self.data.access_tokens.values():
            if at.email == email and at.client_id == client_id:
                at.revoked = True

    # -- consent -----------------------------------------------------------------

    def start_consent(self, pending: PendingConsent) -> None:
        """Remember an authorization request shown on the consent page."""
        self.data.pending[pending.id] = pending

    def finish_consent(
        self,
        pending: PendingConsent,
        *,
        email: str,
        granted: list[str],
        now_ms: int,
    ) -> AuthCode:
        """The user allowed ``granted`` (a subset of the request): issue a code.

        The grant remembers the union of everything ever granted; the code
        carries ``granted`` plus, with ``include_granted_scopes``, the earlier
        scopes. A refresh token will be issued when access is offline and this
        is the first consent (no refresh token since the grant began) or
        ``prompt=consent`` was given.
        """
        self.data.pending.pop(pending.id, None)
        previous = self.grant(email, pending.client_id)
        earlier = list(previous.scopes) if previous else []
        first = previous is None or not previous.refresh_issued
        grant = self._record_grant(email, pending.client_id, granted)
        scopes = sorted(
            set(granted) | (set(earlier) if pending.include_granted_scopes else set())
        )
        issue_refresh = pending.access_type == "offline" and (
            first or "consent" in pending.prompt
        )
        if issue_refresh:
            grant.refresh_issued = True
        code = AuthCode(
            code="4/0" + secrets.token_urlsafe(48),
            email=email,
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            scopes=scopes,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            issue_refresh=issue_refresh,
            nonce=pending.nonce,
            expires_ms=now_ms + CODE_LIFETIME_S * 1000,
        )
        self.data.codes[code.code] = code
        return code

    # -- token endpoint ------------------------------------------------------------

    def exchange_code(
        self,
        client: OAuthClient,
        *,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
        now_ms: int,
    ) -> TokenGrant:
        """``grant_type=authorization_code``.

        Raises:
            OAuthError: invalid_request (missing code / redirect_uri),
                invalid_grant "Bad Request" (unknown, used, expired or foreign
                code), redirect_uri_mismatch, invalid_grant "Missing code
                verifier." / "Invalid code verifier." (PKCE).
        """
        if not code:
            raise OAuthError(400, "invalid_request", "Missing required parameter: code")
        found = self.data.codes.get(code)
        if found is None or found.used or found.expires_ms <= now_ms:
            raise OAuthError(400, "invalid_grant", "Bad Request")
        if found.client_id != client.client_id:
            raise OAuthError(400, "invalid_grant", "Bad Request")
        if not redirect_uri:
            raise OAuthError(400, "invalid_request", "Missing parameter: redirect_uri")
        if redirect_uri != found.redirect_uri:
            raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        if found.code_challenge is not None:
            if not code_verifier:
                raise OAuthError(400, "invalid_grant", "Missing code verifier.")
            method = found.code_challenge_method or "plain"
            expected = pkce_s256(code_verifier) if method == "S256" else code_verifier
            if not _same(expected, found.code_challenge):
                raise OAuthError(400, "invalid_grant", "Invalid code verifier.")
        found.used = True
        refresh = None
        if found.issue_refresh:
            refresh = self._issue_refresh(client, found.email, found.scopes, now_ms)
        access = self._issue_access(
            found.email, client.client_id, found.scopes, refresh, now_ms
        )
        return TokenGrant(
            access=access,
            refresh=refresh,
            openid=OPENID_SCOPE in found.scopes,
            nonce=found.nonce,
        )

    def refresh(
        self,
        client: OAuthClient,
        *,
        refresh_token: str | None,
        scope: str | None,
        now_ms: int,
    ) -> TokenGrant:
        """``grant_type=refresh_token``; the response has no new refresh token.

        Raises:
            OAuthError: invalid_request (missing token), invalid_grant "Token has
                been expired or revoked." (unknown, revoked, idle six months,
                Testing 7-day expiry, evicted as the 101st), unauthorized_client
                (token of another client), invalid_scope (scope beyond the grant).
        """
        if not refresh_token:
            raise OAuthError(
                400, "invalid_request", "Missing required parameter: refresh_token"
            )
        rt = self.data.refresh_tokens.get(refresh_token)
        if rt is None or rt.revoked:
            raise _expired_or_revoked()
        if rt.expires_ms is not None and rt.expires_ms <= now_ms:
            raise _expired_or_revoked()
        if now_ms - rt.last_used_ms > REFRESH_IDLE_LIMIT_S * 1000:
            rt.revoked = True
            raise _expired_or_revoked()
        if rt.client_id != client.client_id:
            raise OAuthError(400, "unauthorized_client", "Unauthorized")
        scopes = list(rt.scopes)
        if scope:
            wanted = [canonical_scope(s) for s in scope.split()]
            if not set(wanted) <= set(rt.scopes):
                raise OAuthError(
                    400, "invalid_scope", "Some requested scopes were invalid."
                )
            scopes = sorted(set(wanted))
        rt.last_used_ms = now_ms
        access = self._issue_access(rt.email, rt.client_id, scopes, rt, now_ms)
        return TokenGrant(access=access, refresh=None, openid=OPENID_SCOPE in scopes)

    def issue_direct(
        self,
        client: OAuthClient,
        *,
        email: str,
        scopes: list[str],
        offline: bool,
        now_ms: int,
    ) -> TokenGrant:
        """Control API: grant ``scopes`` and issue tokens as if the user consented."""
        canonical = sorted({canonical_scope(s) for s in scopes})
        grant = self._record_grant(email, client.client_id, canonical)
        refresh = None
        if offline:
            grant.refresh_issued = True
            refresh = self._issue_refresh(client, email, canonical, now_ms)
        access = self._issue_access(email, client.client_id, canonical, refresh, now_ms)
        return TokenGrant(
            access=access, refresh=refresh, openid=OPENID_SCOPE in canonical
        )

    def _issue_refresh(
        self, client: OAuthClient, email: str, scopes: list[str], now_ms: int
    ) -> RefreshToken:
        live = sorted(
            (
                rt
                for rt in self.data.refresh_tokens.values()
                if rt.email == email
                and rt.client_id == client.client_id
                and not rt.revoked
            ),
            key=lambda rt: rt.issued_ms,
        )
        # "creating a new refresh token automatically invalidates the oldest
        # refresh token without warning" once 100 are live.
        for old in live[: max(0, len(live) - (MAX_REFRESH_TOKENS - 1))]:
            old.revoked = True
        rt = RefreshToken(
            token="1//0" + secrets.token_urlsafe(64),
            email=email,
            client_id=client.client_id,
            scopes=list(scopes),
            issued_ms=now_ms,
            last_used_ms=now_ms,
            expires_ms=now_ms + TESTING_REFRESH_LIFETIME_S * 1000
            if client.testing
            else None,
        )
        self.data.refresh_tokens[rt.token] = rt
        return rt

    def _issue_access(
        self,
        email: str,
        client_id: str,
        scopes: list[str],
        refresh: RefreshToken | None,
        now_ms: int,
    ) -> AccessToken:
        # Drop access tokens that expired more than a day ago so a long demo
        # does not grow without bound.
        cutoff = now_ms - 24 * 3600 * 1000
        stale = [k for k, t in self.data.access_tokens.items() if t.expires_ms < cutoff]
        for key in stale:
            del self.data.access_tokens[key]
        at = AccessToken(
            token="ya29." + secrets.token_urlsafe(96),
            email=email,
            client_id=client_id,
            scopes=list(scopes),
            expires_ms=now_ms + ACCESS_TOKEN_LIFETIME_S * 1000,
            refresh_token=refresh.token if refresh else None,
        )
        self.data.access_tokens[at.token] = at
        return at

    # -- use and revoke ------------------------------------------------------------

    def access_token(self, token: str, now_ms: int) -> AccessToken | None:
        """Return the live access token ``token``, or None (unknown, expired, revoked)."""
        at = self.data.access_tokens.get(token)
        if at is None or at.revoked or at.expires_ms <= now_ms:
            return None
        return at

    def revoke_token(self, token: str) -> bool:
        """Revoke an access or refresh token and the grant behind it; False if unknown.

        Revoking removes the app's access entirely, so the next consent is a
        first consent again (a new refresh token is issued).
        """
        at = self.data.access_tokens.get(token)
        rt = self.data.refresh_tokens.get(token)
        owner = at or rt
        if owner is None or owner.revoked:
            return False
        self.revoke_grant(owner.email, owner.client_id)
        owner.revoked = True
        return True

    def expire_tokens(self, email: str, *, access: bool, refresh: bool) -> int:
        """Control API: make the user's access and/or refresh tokens unusable; return how many."""
        count = 0
        if access:
            for at in self.data.access_tokens.values():
                if at.email == email and not at.revoked:
                    at.revoked = True
                    count += 1
        if refresh:
            for rt in self.data.refresh_tokens.values():
                if rt.email == email and not rt.revoked:
                    rt.revoked = True
                    count += 1
        return count
