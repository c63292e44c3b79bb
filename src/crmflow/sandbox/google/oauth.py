"""Google OAuth 2.0 endpoints over HTTP.

Paths below the Google mount, each the real path on its real host:

=====================================  ==============================================
sandbox path                           real endpoint
=====================================  ==============================================
``o/oauth2/v2/auth`` (GET)             accounts.google.com authorization + consent page
``signin/oauth/consent`` (POST)        the consent form's target (sandbox-internal)
``token`` (POST)                       oauth2.googleapis.com/token
``revoke`` (POST/GET)                  oauth2.googleapis.com/revoke
``o/oauth2/revoke`` (GET)              legacy accounts.google.com revoke
``tokeninfo`` (GET/POST)               oauth2.googleapis.com/tokeninfo
``v1/userinfo`` (GET)                  openidconnect.googleapis.com/v1/userinfo
``oauth2/v3/userinfo`` (GET)           www.googleapis.com/oauth2/v3/userinfo
``oauth2/v3/certs`` (GET)              www.googleapis.com/oauth2/v3/certs (JWKS)
``.well-known/openid-configuration``   accounts.google.com OIDC discovery
=====================================  ==============================================

The consent page lets the person pick a sandbox user (or type a new address)
and tick or untick each requested scope — Google's granular consent, which may
grant fewer scopes than requested. Identity scopes (openid, email, profile)
cannot be unticked, as on Google's page. Errors before a redirect URI is
trusted are HTML pages ("Error 400: redirect_uri_mismatch"); later ones are
redirects with ``error=``. Rules: :mod:`crmflow.sandbox.google.identity`.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from crmflow.sandbox._http import json_response
from crmflow.sandbox.faults import REQUEST_FAULTS, FaultKind
from crmflow.sandbox.google.api import DroppedResponse
from crmflow.sandbox.google.identity import (
    ACCESS_TOKEN_LIFETIME_S,
    EMAIL_SCOPE,
    OPENID_SCOPE,
    PROFILE_SCOPE,
    OAuthClient,
    OAuthError,
    PendingConsent,
    TokenGrant,
    canonical_scope,
)
from crmflow.sandbox.google.idtoken import ISSUER, IdTokenSigner
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.requestlog import annotate
from crmflow.sandbox.specs.discovery import bundled_document
from crmflow.sandbox.state import SandboxState

__all__ = ["OAuthEndpoints", "known_scopes"]

_IDENTITY_SCOPES = (OPENID_SCOPE, EMAIL_SCOPE, PROFILE_SCOPE)
_NO_STORE = {
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
}


def known_scopes() -> dict[str, str]:
    """Every scope the sandbox knows, with its description (from discovery)."""
    out = {
        OPENID_SCOPE: "Associate you with your personal info on Google",
        EMAIL_SCOPE: "See your primary Google Account email address",
        PROFILE_SCOPE: "See your personal info, including any personal info you've made publicly available",
    }
    for name in ("calendar", "gmail"):
        scopes = (
            bundled_document(name)
            .raw.get("auth", {})
            .get("oauth2", {})
            .get("scopes", {})
        )
        for scope, meta in scopes.items():
            out[scope] = str(meta.get("description", scope))
    return out


def _error_page(status: int, error: str, description: str) -> HTMLResponse:
    # Google renders these on accounts.google.com instead of redirecting,
    # because the redirect URI is not trusted yet.
    body = (
        "<!doctype html><html><head><title>Error</title></head><body>"
        f"<h1>Access blocked: authorization error</h1><h2>Error {status}: {html.escape(error)}</h2>"
        f"<p>{html.escape(description)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(uri + separator + urlencode(params), status_code=302)


class OAuthEndpoints:
    """The OAuth routes of one sandbox."""

    def __init__(
        self, state: SandboxState, mount_url: Callable[[Request], str]
    ) -> None:
        self.state = state
        self.mount_url = mount_url
        self.signer = IdTokenSigner()
        self.scopes = known_scopes()

    @property
    def store(self) -> GoogleStore:
        """The Google data."""
        return self.state.extension(GoogleStore)

    def routes(self) -> list[BaseRoute]:
        """Starlette routes, relative to the Google mount."""
        return [
            Route(
                "/o/oauth2/v2/auth",
                self._logged("oauth.authorize", self.authorize),
                methods=["GET"],
            ),
            Route(
                "/o/oauth2/auth",
                self._logged("oauth.authorize", self.authorize),
                methods=["GET"],
            ),
            Route(
                "/signin/oauth/consent",
                self._logged("oauth.consent", self.consent),
                methods=["POST"],
            ),
            Route("/token", self._logged("oauth.token", self.token), methods=["POST"]),
            Route(
                "/revoke",
                self._logged("oauth.revoke", self.revoke),
                methods=["POST", "GET"],
            ),
            Route(
                "/o/oauth2/revoke",
                self._logged("oauth.revoke", self.revoke),
                methods=["GET", "POST"],
            ),
            Route(
                "/tokeninfo",
                self._logged("oauth.tokeninfo", self.tokeninfo),
                methods=["GET", "POST"],
            ),
            Route(
                "/v1/userinfo",
                self._logged("oauth.userinfo", self.userinfo),
                methods=["GET", "POST"],
            ),
            Route(
                "/oauth2/v3/userinfo",
                self._logged("oauth.userinfo", self.userinfo),
                methods=["GET", "POST"],
            ),
            Route(
                "/oauth2/v3/certs",
                self._logged("oauth.certs", self.certs),
                methods=["GET"],
            ),
            Route(
                "/.well-known/openid-configuration",
                self._logged("oauth.discovery", self.openid_configuration),
                methods=["GET"],
            ),
        ]

    def _logged(
        self, method_id: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            annotate(request.scope).api_method = method_id
            return await endpoint(request)

        return wrapped

    async def _faults(
        self, request: Request, method_id: str, user: str | None
    ) -> Response | None:
        fired = self.state.faults.draw(
            REQUEST_FAULTS, user=user, api="oauth", method=method_id
        )
        latency_ms = sum(f.latency_ms for f in fired if f.kind == FaultKind.LATENCY)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        for fault in fired:
            headers = dict(_NO_STORE)
            if fault.retry_after_s is not None:
                headers["Retry-After"] = str(fault.retry_after_s)
            if fault.kind == FaultKind.DROP_CONNECTION:
                return DroppedResponse()
            if fault.kind == FaultKind.BACKEND_ERROR:
                return json_response(
                    {"error": "internal_failure", "error_description": "Backend Error"},
                    500,
                    headers,
                )
            if fault.kind == FaultKind.UNAVAILABLE:
                return json_response(
                    {
                        "error": "temporarily_unavailable",
                        "error_description": "The service is currently unavailable.",
                    },
                    503,
                    headers,
                )
            if fault.kind == FaultKind.AUTH_ERROR:
                return json_response(
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                    400,
                    headers,
                )
            if fault.kind != FaultKind.LATENCY:
                return json_response(
                    {
                        "error": "rate_limit_exceeded",
                        "error_description": "Rate Limit Exceeded",
                    },
                    429,
                    headers,
                )
        return None

    # -- authorization ----------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        """GET o/oauth2/v2/auth: validate, then show the consent page (or answer prompt=none)."""
        q = request.query_params
        dropped = await self._faults(request, "oauth.authorize", q.get("login_hint"))
        if isinstance(dropped, DroppedResponse):
            return dropped
        client_id = q.get("client_id")
        with self.state.lock:
            client = self.store.identity.data.clients.get(client_id or "")
        if not client_id:
            return _error_page(
                400, "invalid_request", "Missing required parameter: client_id"
            )
        if client is None:
            return _error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = q.get("redirect_uri")
        if not redirect_uri:
            return _error_page(
                400, "invalid_request", "Missing required parameter: redirect_uri"
            )
        if redirect_uri not in client.redirect_uris:
            # "must exactly match one of the authorized redirect URIs"
            return _error_page(
                400,
                "redirect_uri_mismatch",
                f"You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 "
                f"policy. If you're the app developer, register the redirect URI in the Google "
                f"Cloud Console. Request details: redirect_uri={redirect_uri}",
            )
        state = q.get("state")
        response_type = q.get("response_type")
        if not response_type:
            return _error_page(
                400, "invalid_request", "Required parameter is missing: response_type"
            )
        if response_type != "code":
            return _redirect(
                redirect_uri, _with_state({"error": "unsupported_response_type"}, state)
            )
        scope_text = q.get("scope")
        if not scope_text:
            return _error_page(
                400, "invalid_request", "Missing required parameter: scope"
            )
        requested = list(dict.fromkeys(canonical_scope(s) for s in scope_text.split()))
        invalid = [s for s in requested if s not in self.scopes]
        if invalid:
            return _error_page(
                400,
                "invalid_scope",
                "Some requested scopes were invalid. {invalid=["
                + ", ".join(invalid)
                + "]}",
            )
        access_type = q.get("access_type", "online")
        if access_type not in ("online", "offline"):
            return _error_page(
                400, "invalid_request", f"Invalid access_type: {access_type}"
            )
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method")
        if method is not None and method not in ("S256", "plain"):
            return _error_page(
                400, "invalid_request", "Invalid code_challenge_method value."
            )
        if challenge is not None and method is None:
            method = "plain"  # "defaults to plain if not present"
        prompt = q.get("prompt", "").split()
        pending = PendingConsent(
            id=secrets.token_urlsafe(24),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=requested,
            state=state,
            access_type=access_type,
            prompt=prompt,
            include_granted_scopes=q.get("include_granted_scopes") == "true",
            login_hint=q.get("login_hint"),
            code_challenge=challenge,
            code_challenge_method=method if challenge is not None else None,
            nonce=q.get("nonce"),
            created_ms=self.state.clock.now_ms(),
        )
        if "none" in prompt:
            return self._silent(pending)
        with self.state.lock:
            self.store.identity.start_consent(pending)
        return self._consent_page(request, client, pending)

    def _silent(self, pending: PendingConsent) -> Response:
        """prompt=none: succeed only for a known user who already granted everything."""
        with self.state.lock:
            email = (pending.login_hint or "").lower()
            if email not in self.state.users:
                return _redirect(
                    pending.redirect_uri,
                    _with_state({"error": "login_required"}, pending.state),
                )
            grant = self.store.identity.grant(email, pending.client_id)
            if grant is None or not set(pending.scopes) <= set(grant.scopes):
                return _redirect(
                    pending.redirect_uri,
                    _with_state({"error": "consent_required"}, pending.state),
                )
            code = self.store.identity.finish_consent(
                pending,
                email=email,
                granted=pending.scopes,
                now_ms=self.state.clock.now_ms(),
            )
            self.state.mark_dirty()
        return _redirect(
            pending.redirect_uri, _code_params(pending, code.code, code.scopes)
        )

    def _consent_page(
        self, request: Request, client: OAuthClient, pending: PendingConsent
    ) -> HTMLResponse:
        with self.state.lock:
            users = sorted(self.state.users.values(), key=lambda u: u.email)
        hint = (pending.login_hint or "").lower()
        account_rows = []
        for i, user in enumerate(users):
            checked = " checked" if user.email == hint or (not hint and i == 0) else ""
            account_rows.append(
                f'<label><input type="radio" name="email" value="{html.escape(user.email)}"{checked}> '
                f"{html.escape(user.name)} &lt;{html.escape(user.email)}&gt;</label><br>"
            )
        scope_rows = []
        for scope in pending.scopes:
            description = html.escape(self.scopes.get(scope, scope))
            if scope in _IDENTITY_SCOPES:
                scope_rows.append(
                    f'<input type="hidden" name="scope" value="{html.escape(scope)}">'
                    f"<p>&#10003; {description} <small>({html.escape(scope)})</small></p>"
                )
            else:
                scope_rows.append(
                    f'<label><input type="checkbox" name="scope" value="{html.escape(scope)}" checked> '
                    f"{description} <small>({html.escape(scope)})</small></label><br>"
                )
        action = self.mount_url(request) + "signin/oauth/consent"
        typed_value = html.escape(hint) if hint and hint not in self.state.users else ""
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Google Accounts (crmflow sandbox)</title></head>
<body>
<h1>Sign in with Google <small>(crmflow sandbox)</small></h1>
<p><b>{html.escape(client.name)}</b> wants access to your Google Account</p>
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="consent_id" value="{html.escape(pending.id)}">
<fieldset><legend>Choose an account</legend>
{"".join(account_rows)}
<label>Or use another account: <input type="email" name="new_email" value="{typed_value}"></label>
</fieldset>
<fieldset><legend>Select what {html.escape(client.name)} can access</legend>
{"".join(scope_rows)}
</fieldset>
<button type="submit" name="action" value="deny">Cancel</button>
<button type="submit" name="action" value="allow">Continue</button>
</form>
</body></html>"""
        return HTMLResponse(page)

    async def consent(self, request: Request) -> Response:
        """POST signin/oauth/consent: the person allowed (part of) the request, or denied it."""
        form = await request.form()
        consent_id = str(form.get("consent_id") or "")
        with self.state.lock:
            pending = self.store.identity.data.pending.get(consent_id)
        if pending is None:
            return _error_page(
                400, "invalid_request", "The consent request expired. Start again."
            )
        if form.get("action") != "allow":
            with self.state.lock:
                self.store.identity.data.pending.pop(consent_id, None)
            return _redirect(
                pending.redirect_uri,
                _with_state({"error": "access_denied"}, pending.state),
            )
        email = (
            str(form.get("new_email") or "").strip().lower()
            or str(form.get("email") or "").strip().lower()
        )
        if not email:
            return _error_page(400, "invalid_request", "Choose an account.")
        ticked = [str(s) for s in form.getlist("scope")]
        granted = [s for s in pending.scopes if s in ticked or s in _IDENTITY_SCOPES]
        if not granted:
            # Unticking everything is a refusal.
            return _redirect(
                pending.redirect_uri,
                _with_state({"error": "access_denied"}, pending.state),
            )
        try:
            self.state.add_user(email)
        except ValueError:
            return _error_page(400, "invalid_request", f"Not an email address: {email}")
        with self.state.lock:
            code = self.store.identity.finish_consent(
                pending, email=email, granted=granted, now_ms=self.state.clock.now_ms()
            )
            self.state.mark_dirty()
        annotate(request.scope).user = email
        return _redirect(
            pending.redirect_uri, _code_params(pending, code.code, code.scopes)
        )

    # -- token endpoint ---------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        """POST token: authorization_code and refresh_token grants."""
        fields = await _form_or_json(request)
        client_id, client_secret = fields.get("client_id"), fields.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(basic[6:]).decode()
                client_id, _, client_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                return _oauth_error(OAuthError(401, "invalid_client", "Unauthorized"))
        grant_type = fields.get("grant_type")
        user = self._user_of(fields)
        annotate(request.scope).user = user
        fault = await self._faults(request, "oauth.token", user)
        if fault is not None:
            return fault
        now_ms = self.state.clock.now_ms()
        try:
            if not grant_type:
                raise OAuthError(
                    400, "invalid_request", "Missing required parameter: grant_type"
                )
            if grant_type not in ("authorization_code", "refresh_token"):
                raise OAuthError(
                    400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}"
                )
            with self.state.lock:
                identity = self.store.identity
                client = identity.authenticate_client(client_id, client_secret)
                if grant_type == "authorization_code":
                    result = identity.exchange_code(
                        client,
                        code=fields.get("code"),
                        redirect_uri=fields.get("redirect_uri"),
                        code_verifier=fields.get("code_verifier"),
                        now_ms=now_ms,
                    )
                else:
                    result = identity.refresh(
                        client,
                        refresh_token=fields.get("refresh_token"),
                        scope=fields.get("scope"),
                        now_ms=now_ms,
                    )
                self.state.mark_dirty()
                body = self.token_response(result, client.client_id)
        except OAuthError as exc:
            return _oauth_error(exc)
        return json_response(body, headers=_NO_STORE)

    def _user_of(self, fields: dict[str, str]) -> str | None:
        with self.state.lock:
            data = self.store.identity.data
            code = data.codes.get(fields.get("code", ""))
            if code is not None:
                return code.email
            rt = data.refresh_tokens.get(fields.get("refresh_token", ""))
            return rt.email if rt is not None else None

    def token_response(self, result: TokenGrant, client_id: str) -> dict[str, Any]:
        """The token endpoint's JSON for ``result`` (also used by the control API)."""
        body: dict[str, Any] = {
            "access_token": result.access.token,
            "expires_in": ACCESS_TOKEN_LIFETIME_S,
        }
        if result.refresh is not None:
            body["refresh_token"] = result.refresh.token
        body["scope"] = " ".join(result.access.scopes)
        body["token_type"] = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
        if result.openid:
            body["id_token"] = self._id_token(result, client_id)
        return body

    def _id_token(self, result: TokenGrant, client_id: str) -> str:
        user = self.state.users.get(result.access.email)
        now_s = self.state.clock.now_ms() // 1000
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "azp": client_id,
            "aud": client_id,
            "sub": user.sub if user else result.access.email,
        }
        scopes = set(result.access.scopes)
        if EMAIL_SCOPE in scopes:
            claims["email"] = result.access.email
            claims["email_verified"] = True
        claims["at_hash"] = IdTokenSigner.at_hash(result.access.token)
        if result.nonce:
            claims["nonce"] = result.nonce
        if PROFILE_SCOPE in scopes and user is not None:
            claims.update(
                name=user.name,
                picture=_picture(user.email),
                given_name=user.given_name,
                family_name=user.family_name,
            )
        claims["iat"] = now_s
        claims["exp"] = now_s + ACCESS_TOKEN_LIFETIME_S + 1
        return self.signer.sign(claims)

    # -- revoke, tokeninfo, userinfo -----------------------------------------------------

    async def revoke(self, request: Request) -> Response:
        """POST revoke (token in form body or query): 200, or 400 invalid_token."""
        fields = await _form_or_json(request) if request.method == "POST" else {}
        token = fields.get("token") or request.query_params.get("token")
        with self.state.lock:
            ok = bool(token) and self.store.identity.revoke_token(str(token))
            self.state.mark_dirty()
        if not ok:
            return json_response(
                {
                    "error": "invalid_token",
                    "error_description": "Token expired or revoked",
                },
                400,
            )
        return json_response({})

    async def tokeninfo(self, request: Request) -> Response:
        """GET tokeninfo?access_token=: what Google knows about a live access token."""
        fields = await _form_or_json(request) if request.method == "POST" else {}
        token = fields.get("access_token") or request.query_params.get("access_token")
        now_ms = self.state.clock.now_ms()
        with self.state.lock:
            found = self.store.identity.access_token(token or "", now_ms)
            user = self.state.users.get(found.email) if found else None
        if found is None:
            return json_response(
                {"error": "invalid_token", "error_description": "Invalid Value"}, 400
            )
        body: dict[str, Any] = {
            "azp": found.client_id,
            "aud": found.client_id,
            "sub": user.sub if user else found.email,
            "scope": " ".join(found.scopes),
            "exp": str(found.expires_ms // 1000),
            "expires_in": str(max(0, (found.expires_ms - now_ms) // 1000)),
        }
        if EMAIL_SCOPE in found.scopes:
            body["email"] = found.email
            body["email_verified"] = "true"
        body["access_type"] = "offline" if found.refresh_token else "online"
        return json_response(body)

    async def userinfo(self, request: Request) -> Response:
        """OIDC userinfo: ``sub`` plus email / profile claims the token's scopes allow."""
        header = request.headers.get("authorization", "")
        token = (
            header[7:].strip()
            if header[:7].lower() == "bearer "
            else request.query_params.get("access_token")
        )
        with self.state.lock:
            found = self.store.identity.access_token(
                token or "", self.state.clock.now_ms()
            )
            user = self.state.users.get(found.email) if found else None
        if found is None or user is None:
            return json_response(
                {
                    "error": "invalid_request",
                    "error_description": "Invalid Credentials",
                },
                401,
                {
                    "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
                },
            )
        annotate(request.scope).user = user.email
        body: dict[str, Any] = {"sub": user.sub}
        if PROFILE_SCOPE in found.scopes:
            body.update(
                name=user.name,
                given_name=user.given_name,
                family_name=user.family_name,
                picture=_picture(user.email),
            )
        if EMAIL_SCOPE in found.scopes:
            body.update(email=user.email, email_verified=True)
        return json_response(body)

    async def certs(self, request: Request) -> Response:
        """The JWKS verifying ID tokens."""
        return json_response(self.signer.jwks())

    async def openid_configuration(self, request: Request) -> Response:
        """OIDC discovery pointing at the sandbox's endpoints."""
        base = self.mount_url(request)
        return json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": base + "o/oauth2/v2/auth",
                "token_endpoint": base + "token",
                "userinfo_endpoint": base + "v1/userinfo",
                "revocation_endpoint": base + "revoke",
                "jwks_uri": base + "oauth2/v3/certs",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "claims_supported": [
                    "aud",
                    "email",
                    "email_verified",
                    "exp",
                    "family_name",
                    "given_name",
                    "iat",
                    "iss",
                    "name",
                    "picture",
                    "sub",
                ],
                "code_challenge_methods_supported": ["plain", "S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            }
        )

    def issue_for_control(
        self, email: str, scopes: list[str], *, client_id: str | None, offline: bool
    ) -> dict[str, Any]:
        """Control API: tokens for ``email`` without the consent page (user created if new).

        Raises:
            KeyError: unknown ``client_id``.
            ValueError: unknown scope or bad email.
        """
        self.state.add_user(email)
        canonical = [canonical_scope(s) for s in scopes]
        unknown = [s for s in canonical if s not in self.scopes]
        if unknown:
            raise ValueError(f"unknown scopes: {unknown}")
        with self.state.lock:
            identity = self.store.identity
            if client_id is None:
                client = identity.default_client()
            else:
                found = identity.data.clients.get(client_id)
                if found is None:
                    raise KeyError(client_id)
                client = found
            result = identity.issue_direct(
                client,
                email=email.lower(),
                scopes=canonical,
                offline=offline,
                now_ms=self.state.clock.now_ms(),
            )
            self.state.mark_dirty()
            return self.token_response(result, client.client_id)


def _with_state(params: dict[str, str], state: str | None) -> dict[str, str]:
    return {**({"state": state} if state is not None else {}), **params}


def _code_params(
    pending: PendingConsent, code: str, scopes: list[str]
) -> dict[str, str]:
    # Redirect back: ?state=…&code=…&scope=<granted scopes>&authuser=0&prompt=consent
    return _with_state(
        {"code": code, "scope": " ".join(scopes), "authuser": "0", "prompt": "consent"},
        pending.state,
    )


def _picture(email: str) -> str:
    del email  # every sandbox user has Google's default avatar
    return "https://lh3.googleusercontent.com/a/default-user=s96-c"


def _oauth_error(exc: OAuthError) -> Response:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Basic"
    return json_response(exc.body(), exc.status, headers)


async def _form_or_json(request: Request) -> dict[str, str]:
    """Token-endpoint parameters: form-encoded (the standard) or JSON (Google accepts it too)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        raw = await request.body()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return (
            {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        )
    form = await request.form()
    return {k: str(v) for k, v in form.items()}
