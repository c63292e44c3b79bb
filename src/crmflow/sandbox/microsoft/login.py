"""login.microsoftonline.com endpoints: OpenID discovery, JWKS, authorize + consent page, token.

Paths (relative to the sandbox base, mirroring the real host):

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` — discovery, as msal
  fetches it (``instance_discovery=False`` skips the instance check).
* ``GET /{tenant}/discovery/v2.0/keys`` — the id_token signing keys.
* ``GET /{tenant}/oauth2/v2.0/authorize`` — validates the request and shows the
  consent page (choose a sandbox user, untick scopes for partial consent).
  Errors the app cannot be trusted with (unknown client, unregistered
  redirect URI) are shown on the page, as Entra does; others are redirected
  back as ``?error=…&error_description=AADSTS…``.
* ``POST /{tenant}/login`` — the consent form's target (Entra's own form posts
  to ``/{tenant}/login`` too).
* ``POST /{tenant}/oauth2/v2.0/token`` — ``authorization_code`` and
  ``refresh_token`` grants; client secret in the body or HTTP Basic.

Rules are in :mod:`.identity`; rendering in :mod:`.tokens`.
"""

from __future__ import annotations

import base64
import html
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from crmflow.sandbox.microsoft.errors import AadError
from crmflow.sandbox.microsoft.faults import GraphFaultKind
from crmflow.sandbox.microsoft.identity import (
    ACCESS_MAX_S,
    ACCESS_MIN_S,
    MSA_TENANT_ID,
    SANDBOX_TENANT_ID,
    PendingAuthorization,
    parse_scopes,
)
from crmflow.sandbox.microsoft.tokens import token_response
from crmflow.sandbox.requestlog import annotate

if TYPE_CHECKING:
    from crmflow.sandbox.microsoft.store import MicrosoftStore
    from crmflow.sandbox.state import SandboxState

__all__ = ["Login"]

_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class Login:
    """The identity endpoints of one Microsoft sandbox app."""

    def __init__(
        self, state: SandboxState, store: MicrosoftStore, base_url: str
    ) -> None:
        self.state = state
        self.store = store
        self.base = base_url

    # -- discovery ------------------------------------------------------------------------

    def openid_configuration(self, tenant: str) -> Response:
        """The v2.0 OpenID configuration of ``tenant``."""
        with self.state.lock:
            try:
                self.store.identity.check_tenant(tenant, self.store.tenant_domains())
            except AadError as exc:
                return JSONResponse(
                    {
                        "error": "invalid_tenant",
                        "error_description": exc.description(),
                        "error_codes": [exc.code],
                    },
                    status_code=400,
                )
        low = tenant.casefold()
        issuer_tenant = (
            "{tenantid}"
            if low in {"common", "organizations"}
            else (
                MSA_TENANT_ID
                if low == "consumers"
                else (
                    tenant
                    if low in {SANDBOX_TENANT_ID, MSA_TENANT_ID}
                    else SANDBOX_TENANT_ID
                )
            )
        )
        root = f"{self.base}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.base}/{issuer_tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{self.base}/v1.0/oidc/userinfo",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
                "claims_supported": [
                    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                    "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                    "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                    "c_hash", "email",
                ],
                "kerberos_endpoint": f"{root}/kerberos",
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            }
        )  # fmt: skip

    def jwks(self) -> Response:
        """The signing keys."""
        return JSONResponse(self.store.signing_key.jwks())

    # -- authorize ----------------------------------------------------------------------------

    def _error_page(self, exc: AadError, status: int = 400) -> Response:
        text = html.escape(exc.description())
        return HTMLResponse(
            f"<!doctype html><title>Sign in to your account</title><h1>Sign in</h1>"
            f'<p>Sorry, but we\'re having trouble signing you in.</p><p id="error">{text}</p>',
            status_code=status,
        )

    @staticmethod
    def _redirect(redirect_uri: str, mode: str, params: dict[str, str]) -> Response:
        clean = {k: v for k, v in params.items() if v is not None}
        if mode == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in clean.items()
            )
            return HTMLResponse(
                f'<!doctype html><html><body onload="document.forms[0].submit()">'
                f'<form method="POST" action="{html.escape(redirect_uri)}">{inputs}'
                f"<noscript><button>Continue</button></noscript></form></body></html>"
            )
        sep = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
        return RedirectResponse(
            f"{redirect_uri}{sep}{urlencode(clean)}", status_code=302
        )

    def _error_redirect(
        self, pending: PendingAuthorization, exc: AadError, error: str | None = None
    ) -> Response:
        return self._redirect(
            pending.redirect_uri,
            pending.response_mode,
            {
                "error": error or exc.error_name,
                "error_description": exc.description(),
                "error_uri": f"https://login.microsoftonline.com/error?code={exc.code}",
                **({"state": pending.state} if pending.state is not None else {}),
            },
        )

    async def authorize(self, request: Request, tenant: str) -> Response:
        """``GET /{tenant}/oauth2/v2.0/authorize``."""
        annotate(request.scope).api_method = "identity.authorize"
        q = request.query_params
        now_ms = self.state.clock.now_ms()
        with self.state.lock:
            identity = self.store.identity
            try:
                identity.check_tenant(tenant, self.store.tenant_domains())
                app = identity.app(q.get("client_id"), tenant)
            except AadError as exc:
                return self._error_page(exc)
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri:
                return self._error_page(AadError(900971))
            if redirect_uri not in app.redirect_uris:
                return self._error_page(
                    AadError(50011, {"got": redirect_uri, "client_id": app.client_id})
                )
            mode = q.get("response_mode") or "query"
            pending = PendingAuthorization(
                id=secrets.token_urlsafe(18),
                tenant=tenant,
                client_id=app.client_id,
                redirect_uri=redirect_uri,
                scopes=[],
                state=q.get("state"),
                nonce=q.get("nonce"),
                response_mode=mode
                if mode in {"query", "fragment", "form_post"}
                else "query",
                code_challenge=q.get("code_challenge"),
                code_challenge_method=q.get("code_challenge_method"),
                login_hint=q.get("login_hint"),
                prompt=q.get("prompt"),
                created_ms=now_ms,
            )
            if "code" not in (q.get("response_type") or "").split():
                return self._error_redirect(
                    pending,
                    AadError(900144, {"param": "response_type"}),
                    "unsupported_response_type",
                )
            if pending.code_challenge and (
                pending.code_challenge_method or "plain"
            ) not in {"S256", "plain"}:
                return self._error_redirect(
                    pending,
                    AadError(900144, {"param": "code_challenge_method"}),
                    "invalid_request",
                )
            try:
                scopes, _resource = parse_scopes(q.get("scope") or "")
            except AadError as exc:
                return self._error_redirect(pending, exc)
            pending.scopes = identity.expand_default(app, scopes)
            if pending.prompt == "none":
                return self._silent(pending, now_ms)
            identity.data.pending[pending.id] = pending
            self.state.mark_dirty()
            users = sorted(self.state.users)
            app_name = app.name
        return HTMLResponse(self._consent_page(pending, users, app_name, tenant))

    def _silent(self, pending: PendingAuthorization, now_ms: int) -> Response:
        """``prompt=none``: succeed only for a known user who already consented."""
        identity = self.store.identity
        email = (pending.login_hint or "").lower()
        if email not in self.state.users:
            return self._error_redirect(pending, AadError(50058), "login_required")
        grant = identity.grant(email, pending.client_id)
        if grant is None or not set(pending.scopes) <= set(grant.scopes) | {
            "openid",
            "profile",
            "email",
            "offline_access",
        }:
            app = identity.app(pending.client_id, pending.tenant)
            return self._error_redirect(
                pending,
                AadError(65001, {"client_id": app.client_id, "name": app.name}),
                "consent_required",
            )
        code = identity.consent(
            pending, email=email, granted=list(pending.scopes), now_ms=now_ms
        )
        self.state.mark_dirty()
        return self._redirect(
            pending.redirect_uri,
            pending.response_mode,
            self._code_params(pending, code.code),
        )

    @staticmethod
    def _code_params(pending: PendingAuthorization, code: str) -> dict[str, str]:
        params = {"code": code}
        if pending.state is not None:
            params["state"] = pending.state
        params["session_state"] = secrets.token_hex(16)
        return params

    def _consent_page(
        self,
        pending: PendingAuthorization,
        users: list[str],
        app_name: str,
        tenant: str,
    ) -> str:
        hint = (pending.login_hint or "").lower()
        options = "".join(
            f'<option value="{html.escape(u)}"{" selected" if u == hint else ""}>{html.escape(u)}</option>'
            for u in users
        )
        boxes = "".join(
            f'<li><label><input type="checkbox" name="scope" value="{html.escape(s)}" checked> {html.escape(s)}</label></li>'
            for s in pending.scopes
        )
        action = html.escape(f"{self.base}/{tenant}/login")
        return (
            "<!doctype html><html><head><title>Permissions requested</title></head><body>"
            f"<h1>Permissions requested</h1><p>{html.escape(app_name)} (sandbox) wants to:</p>"
            f'<form method="POST" action="{action}">'
            f'<input type="hidden" name="pending" value="{html.escape(pending.id)}">'
            f'<label>Account <select name="login">{options}</select></label>'
            f"<ul>{boxes}</ul>"
            '<button type="submit" name="action" value="accept">Accept</button>'
            '<button type="submit" name="action" value="cancel">Cancel</button>'
            "</form></body></html>"
        )

    async def consent(self, request: Request, tenant: str) -> Response:
        """``POST /{tenant}/login``: the consent form's answer."""
        annotate(request.scope).api_method = "identity.consent"
        form = await request.form()
        pending_id = str(form.get("pending") or "")
        email = str(form.get("login") or "").strip().lower()
        granted = [str(s) for s in form.getlist("scope")]
        action = str(form.get("action") or "accept")
        now_ms = self.state.clock.now_ms()
        with self.state.lock:
            identity = self.store.identity
            pending = identity.data.pending.get(pending_id)
            if pending is None or now_ms - pending.created_ms > 3600 * 1000:
                return self._error_page(AadError(90014, {"param": "pending"}))
            annotate(request.scope).user = email or None
            if action != "accept":
                identity.data.pending.pop(pending.id, None)
                return self._error_redirect(pending, AadError(65004), "access_denied")
            if email not in self.state.users:
                return self._error_page(AadError(90014, {"param": "login"}))
            blocked = identity.user_allowed(pending.tenant, email, pending.client_id)
            if blocked is not None:
                identity.data.pending.pop(pending.id, None)
                return self._error_redirect(pending, blocked)
            granted = [s for s in pending.scopes if s in granted]
            code = identity.consent(
                pending, email=email, granted=granted, now_ms=now_ms
            )
            self.state.mark_dirty()
        return self._redirect(
            pending.redirect_uri,
            pending.response_mode,
            self._code_params(pending, code.code),
        )

    # -- token ----------------------------------------------------------------------------------

    def lifetime_s(self) -> int:
        """Access-token lifetime: fixed by settings, else random 60-90 minutes."""
        fixed = self.store.settings.access_token_lifetime_s
        if fixed is not None:
            return fixed
        return self.state.faults.random_int(ACCESS_MIN_S, ACCESS_MAX_S)

    async def token(self, request: Request, tenant: str) -> Response:
        """``POST /{tenant}/oauth2/v2.0/token``."""
        note = annotate(request.scope)
        note.api_method = "identity.token"
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        correlation = request.headers.get("client-request-id")
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:]).decode()
                client_id, _, secret = decoded.partition(":")
            except ValueError:
                pass
        now = self.state.clock.now()
        now_ms = self.state.clock.now_ms()
        try:
            with self.state.lock:
                identity = self.store.identity
                identity.check_tenant(tenant, self.store.tenant_domains())
                app = identity.authenticate(client_id, secret, tenant)
                grant_type = fields.get("grant_type")
                user = self._token_user(fields, grant_type)
                note.user = user
                faults = self.store.faults.draw(
                    {GraphFaultKind.TOKEN_ERROR},
                    user=user,
                    api="identity",
                    method="identity.token",
                )
                if faults:
                    code = faults[0].aadsts_code
                    raise AadError(
                        code,
                        {
                            "client_id": app.client_id,
                            "name": app.name,
                            "issued": "01/01/2024 00:00:00",
                        },
                    )
                if grant_type == "authorization_code":
                    result = identity.redeem_code(
                        app,
                        tenant=tenant,
                        code=fields.get("code"),
                        redirect_uri=fields.get("redirect_uri"),
                        code_verifier=fields.get("code_verifier"),
                        lifetime_s=self.lifetime_s(),
                        now_ms=now_ms,
                    )
                elif grant_type == "refresh_token":
                    result = identity.refresh(
                        app,
                        refresh_token=fields.get("refresh_token"),
                        scope=fields.get("scope"),
                        lifetime_s=self.lifetime_s(),
                        now_ms=now_ms,
                    )
                elif not grant_type:
                    raise AadError(900144, {"param": "grant_type"})
                else:
                    raise AadError(70003, {"grant_type": grant_type})
                note.user = result.access.email
                user_name = self.state.user(result.access.email).name
                self.state.mark_dirty()
                body = token_response(
                    result,
                    key=self.store.signing_key,
                    issuer_base=self.base,
                    name=user_name,
                    now_s=int(now.timestamp()),
                    client_info=fields.get("client_info") == "1",
                )
        except AadError as exc:
            return JSONResponse(
                exc.body(now=now, correlation_id=correlation),
                status_code=exc.status,
                headers=_NO_STORE,
            )
        return JSONResponse(body, headers=_NO_STORE)

    def _token_user(self, fields: dict[str, str], grant_type: str | None) -> str | None:
        data = self.store.data.identity
        if grant_type == "authorization_code":
            code = data.codes.get(fields.get("code") or "")
            return code.email if code else None
        if grant_type == "refresh_token":
            rt = data.refresh_tokens.get(fields.get("refresh_token") or "")
            return rt.email if rt else None
        return None


def token_json(body: dict[str, Any]) -> dict[str, Any]:
    """Identity helper for the control API (same rendering as the endpoint)."""
    return body
