"""``/api/integrations`` (the user's OAuth connections) and
``/api/organization/oauth-clients`` (an organization's own OAuth clients).

Bearer-token endpoints; each acts as the token's user and sees only that
user's integrations (another user's is 404). No endpoint ever returns a token
or a client secret.

=====================================================  ==========================================
``GET    /api/integrations``                           the user's integrations, with features
``GET    /api/integrations/events``                    the audit trail, newest first
``GET    /api/integrations/{kind}?provider=``          one integration
``POST   /api/integrations/{kind}/connect?provider=``  start: returns the authorization URL
``POST   /api/integrations/callback/{provider}``       finish with ``state`` + ``code`` (front
                                                       ends that receive the redirect themselves)
``POST   /api/integrations/{kind}/refresh?provider=``  refresh server-side if due (``force=true``)
``DELETE /api/integrations/{kind}?provider=``          disconnect
``PUT    /api/integrations/gmail/mail-protocol``       ``{"protocol": "api"|"imap"}``: Gmail
                                                       through the API or IMAP + SMTP (XOAUTH2)
``GET    /api/organization/oauth-clients``             per provider: client id, secret set? (admins)
``PUT    /api/organization/oauth-clients/{provider}``  set the organization's client (admins)
``DELETE /api/organization/oauth-clients/{provider}``  back to the configuration's (admins)
=====================================================  ==========================================

``provider`` is needed only when ``kind`` alone is ambiguous (Google and
Microsoft calendars): then the answer is 409 saying so. Provider failures map
to HTTP here (:class:`ProviderErrorRoute`): a grant that needs reconnecting is 409,
a server that refused a sign-in check (nothing was changed) 422,
rate limits 429 with ``Retry-After``, an unavailable provider 503, a provider
that refuses crmflow's client 502, a provider without an OAuth client 409.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from crmflow.connections.clients import ClientStatus
from crmflow.connections.errors import ProviderNotConfigured
from crmflow.connections.mail_protocol import MailProtocol, mail_protocol
from crmflow.connections.oauth import ConnectResult
from crmflow.connections.scopes import FeatureState
from crmflow.connections.service import (
    DisconnectResult,
    Integrations,
    IntegrationView,
    view_of,
)
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.providers.base import (
    AuthError,
    ConnectionCheckFailed,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from crmflow.services.push import PushChannels
from crmflow.store.integrations import IntegrationEvent, IntegrationStatus
from crmflow.web.api.schemas import Strict
from crmflow.web.deps import TenantDep


def get_integrations(request: Request) -> Integrations:
    """The process's connections service (one per app: it owns the refresh
    single flight). Tests may put their own in ``app.state.integrations``."""
    found = getattr(request.app.state, "integrations", None)
    if isinstance(found, Integrations):
        return found
    services = request.app.state.services
    created = Integrations(services.db, services.vault, services.settings)
    request.app.state.integrations = created
    return created


IntegrationsDep = Annotated[Integrations, Depends(get_integrations)]


def provider_error_status(exc: Exception) -> int:
    """The HTTP status of a provider failure (see the module docstring)."""
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, TransientProviderError):
        return 503
    if isinstance(exc, AuthError | ProviderNotConfigured):
        return 409
    if isinstance(exc, ConnectionCheckFailed):
        return 422
    # ClientRejected and other refusals: the provider did not do what we asked
    return 502


class ProviderErrorRoute(APIRoute):
    """Answers provider failures with ``{"detail", "error"}`` like every other
    API error (``web/errors.py`` maps the application's own errors)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (ProviderError, ProviderNotConfigured) as exc:
                headers: dict[str, str] = {}
                if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
                    headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
                return JSONResponse(
                    {"detail": exc.message, "error": type(exc).__name__},
                    status_code=provider_error_status(exc),
                    headers=headers,
                )

        return guarded


router = APIRouter(prefix="/api", tags=["integrations"], route_class=ProviderErrorRoute)

ProviderQuery = Annotated[
    ProviderKey | None,
    Query(description="google or microsoft; needed when the kind is ambiguous."),
]


# ------------------------------------------------------------------ schemas


class FeatureOut(BaseModel):
    key: str
    label: str
    enabled: bool
    missing_scopes: list[str] = Field(
        description="Scopes to grant to turn it on (ask with 'Grant access')."
    )
    missing: list[str] = Field(description="The same, in plain words.")
    message: str | None
    optional: bool = Field(
        description="Asked for only when named; being off is no gap in the grant."
    )

    @classmethod
    def of(cls, f: FeatureState) -> FeatureOut:
        return cls(
            key=f.key,
            label=f.label,
            enabled=f.enabled,
            missing_scopes=list(f.missing_scopes),
            missing=list(f.missing),
            message=f.message,
            optional=f.optional,
        )


class IntegrationOut(BaseModel):
    id: uuid.UUID
    provider: ProviderKey
    kind: IntegrationKind
    label: str
    email: str | None
    account_id: str | None
    status: IntegrationStatus
    reconnect_required: bool = Field(description="Show 'Reconnect'.")
    message: str | None = Field(description="What the user should know, if anything.")
    oauth: bool
    scopes: list[str] = Field(description="The granted scopes.")
    features: list[FeatureOut]
    has_refresh_token: bool
    expires_at: dt.datetime | None = Field(description="When the access token expires.")
    last_refreshed_at: dt.datetime | None
    last_error: str | None
    connected_at: dt.datetime
    updated_at: dt.datetime
    mail_protocol: MailProtocol | None = Field(
        description="Gmail: read and send through the Gmail API (api) or IMAP + "
        "SMTP with OAuth (imap); None for other kinds."
    )

    @classmethod
    def of(cls, v: IntegrationView) -> IntegrationOut:
        i = v.info
        return cls(
            id=i.id,
            provider=i.provider,
            kind=i.kind,
            label=v.label,
            email=i.email,
            account_id=i.account_id,
            status=i.status,
            reconnect_required=v.reconnect_required,
            message=v.message,
            oauth=v.oauth,
            scopes=list(i.scopes),
            features=[FeatureOut.of(f) for f in v.features],
            has_refresh_token=i.has_refresh_token,
            expires_at=i.expires_at,
            last_refreshed_at=i.last_refreshed_at,
            last_error=i.last_error,
            connected_at=i.connected_at,
            updated_at=i.updated_at,
            mail_protocol=(
                mail_protocol(i) if i.kind is IntegrationKind.GMAIL else None
            ),
        )


class EventOut(BaseModel):
    id: uuid.UUID
    integration_id: uuid.UUID | None
    provider: ProviderKey
    kind: IntegrationKind
    event: IntegrationEvent
    detail: str | None
    created_at: dt.datetime


class ConnectIn(Strict):
    features: list[str] | None = Field(
        default=None,
        description="Feature keys to ask access for ('Grant access' sends the "
        "missing ones); default: every feature of the kind.",
    )
    redirect_uri: str | None = Field(
        default=None,
        max_length=2000,
        description="One of the configured redirect URIs; default: this "
        "deployment's /oauth/callback/{provider}.",
    )
    login_hint: str | None = Field(default=None, max_length=320)


class ConnectOut(BaseModel):
    authorization_url: str = Field(description="Send the person's browser here.")
    provider: ProviderKey
    kind: IntegrationKind
    scopes: list[str]
    redirect_uri: str
    expires_at: dt.datetime
    reconnect: bool


class CallbackIn(Strict):
    state: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, max_length=4000)
    error: str | None = Field(default=None, max_length=200)


class ConnectedOut(BaseModel):
    integration: IntegrationOut
    reconnected: bool
    complete: bool = Field(
        description="Whether every requested permission was granted."
    )
    message: str

    @classmethod
    def of(cls, result: ConnectResult) -> ConnectedOut:
        view = view_of(result.integration)
        summary = result.report.summary()
        verb = "Reconnected" if result.reconnected else "Connected"
        who = f" as {result.integration.email}" if result.integration.email else ""
        return cls(
            integration=IntegrationOut.of(view),
            reconnected=result.reconnected,
            complete=result.report.complete,
            message=summary or f"{verb} {view.label}{who}.",
        )


class RefreshOut(BaseModel):
    integration: IntegrationOut
    message: str


class DisconnectOut(BaseModel):
    provider: ProviderKey
    kind: IntegrationKind
    email: str | None
    revocation: str = Field(
        description="revoked, already_invalid, unsupported (Microsoft), kept "
        "(another integration shares the Google grant), failed, not_applicable."
    )
    detached_email_accounts: int
    detached_calendar_accounts: int
    message: str

    @classmethod
    def of(cls, r: DisconnectResult) -> DisconnectOut:
        return cls(
            provider=r.provider,
            kind=r.kind,
            email=r.email,
            revocation=r.revocation,
            detached_email_accounts=r.detached.email_accounts,
            detached_calendar_accounts=r.detached.calendar_accounts,
            message=r.message,
        )


class OAuthClientIn(Strict):
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str = Field(
        min_length=1,
        max_length=2000,
        json_schema_extra={"writeOnly": True},
        description="Stored encrypted; never returned.",
    )


class OAuthClientOut(BaseModel):
    provider: ProviderKey
    source: str = Field(description="organization, configuration or none.")
    client_id: str | None
    has_secret: bool

    @classmethod
    def of(cls, c: ClientStatus) -> OAuthClientOut:
        return cls(
            provider=c.provider,
            source=c.source,
            client_id=c.client_id,
            has_secret=c.has_secret,
        )


# ------------------------------------------------------------------ routes


@router.get("/integrations", response_model=list[IntegrationOut])
async def list_integrations(
    ctx: TenantDep, integrations: IntegrationsDep
) -> list[IntegrationOut]:
    """Your integrations, each with its features (on, or off with what is missing)."""
    return [IntegrationOut.of(v) for v in await integrations.list_integrations(ctx)]


@router.get("/integrations/events", response_model=list[EventOut])
async def integration_events(
    ctx: TenantDep,
    integrations: IntegrationsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[EventOut]:
    """Your integrations' audit trail (connected, refreshed, refresh_failed,
    needs_reauth, reconnected, disconnected), newest first."""
    events = await integrations.events(ctx, limit=limit)
    return [
        EventOut(
            id=e.id,
            integration_id=e.integration_id,
            provider=e.provider,
            kind=e.kind,
            event=e.event,
            detail=e.detail,
            created_at=e.created_at,
        )
        for e in events
    ]


@router.post("/integrations/callback/{provider}", response_model=ConnectedOut)
async def complete_connect(
    provider: ProviderKey,
    body: CallbackIn,
    ctx: TenantDep,
    integrations: IntegrationsDep,
) -> ConnectedOut:
    """Finish a connect with the ``state`` and ``code`` the provider sent to the
    redirect URI (for front ends that receive the redirect themselves; the
    browser route ``/oauth/callback/{provider}`` does the same for crmflow's
    own pages). The state must belong to the token's user."""
    result = await integrations.complete_connect(
        ctx, provider, state=body.state, code=body.code, error=body.error
    )
    return ConnectedOut.of(result)


@router.get("/integrations/{kind}", response_model=IntegrationOut)
async def get_integration(
    kind: IntegrationKind,
    ctx: TenantDep,
    integrations: IntegrationsDep,
    provider: ProviderQuery = None,
) -> IntegrationOut:
    """One of your integrations."""
    return IntegrationOut.of(await integrations.get_integration(ctx, kind, provider))


@router.post("/integrations/{kind}/connect", response_model=ConnectOut)
async def start_connect(
    kind: IntegrationKind,
    ctx: TenantDep,
    integrations: IntegrationsDep,
    provider: ProviderQuery = None,
    body: Annotated[ConnectIn | None, Body()] = None,
) -> ConnectOut:
    """Start connecting (or reconnecting, or granting more access): returns the
    provider's authorization URL. The provider sends the browser back to
    ``/oauth/callback/{provider}``, where the signed-in user must be the one who
    started the connect."""
    wanted = body or ConnectIn()
    started = await integrations.start_connect(
        ctx,
        kind,
        provider,
        features=wanted.features,
        redirect_uri=wanted.redirect_uri,
        login_hint=wanted.login_hint,
    )
    return ConnectOut(
        authorization_url=started.authorization_url,
        provider=started.provider,
        kind=started.kind,
        scopes=list(started.scopes),
        redirect_uri=started.redirect_uri,
        expires_at=started.expires_at,
        reconnect=started.reconnect,
    )


@router.post("/integrations/{kind}/refresh", response_model=RefreshOut)
async def refresh_integration(
    kind: IntegrationKind,
    ctx: TenantDep,
    integrations: IntegrationsDep,
    provider: ProviderQuery = None,
    force: Annotated[
        bool, Query(description="Refresh even when the token is not due yet.")
    ] = False,
) -> RefreshOut:
    """Refresh the access token server-side when it is due (2 minutes before it
    expires) or ``force``d. The token itself is never returned."""
    await integrations.refresh_if_needed(ctx, kind, provider, force=force)
    view = await integrations.get_integration(ctx, kind, provider)
    return RefreshOut(
        integration=IntegrationOut.of(view),
        message=f"{view.label} has a usable access token.",
    )


class MailProtocolIn(Strict):
    protocol: MailProtocol = Field(
        description="api: the Gmail API; imap: Gmail's IMAP and SMTP servers, "
        "signed in with the connection's OAuth token (needs the optional feature "
        "imap_smtp: full mailbox access)."
    )


@router.put("/integrations/gmail/mail-protocol", response_model=IntegrationOut)
async def set_mail_protocol(
    body: MailProtocolIn, ctx: TenantDep, integrations: IntegrationsDep
) -> IntegrationOut:
    """Switch the Gmail connection between the Gmail API and IMAP + SMTP.

    Switching to ``imap`` signs in to both servers with the connection's
    token first; when either refuses (422, saying why) nothing changes. The
    next mail sync imports the window again through the new protocol, without
    duplicating stored messages.
    """
    view = await integrations.get_integration(
        ctx, IntegrationKind.GMAIL, ProviderKey.GOOGLE
    )
    return IntegrationOut.of(
        await integrations.set_mail_protocol(ctx, view.info.id, body.protocol)
    )


@router.delete("/integrations/{kind}", response_model=DisconnectOut)
async def disconnect(
    kind: IntegrationKind,
    ctx: TenantDep,
    integrations: IntegrationsDep,
    provider: ProviderQuery = None,
) -> DisconnectOut:
    """Disconnect: revoke at the provider where it can, delete the tokens, keep
    dependent mail and calendar accounts detached (their push channels
    stopped first), record an audit event."""
    return DisconnectOut.of(
        await PushChannels(integrations).disconnect(ctx, kind, provider)
    )


@router.get("/organization/oauth-clients", response_model=list[OAuthClientOut])
async def list_oauth_clients(
    ctx: TenantDep, integrations: IntegrationsDep
) -> list[OAuthClientOut]:
    """Which OAuth client each provider uses in your organization (admins only;
    the secret is never shown, only whether one is set)."""
    return [OAuthClientOut.of(c) for c in await integrations.oauth_clients(ctx)]


@router.put("/organization/oauth-clients/{provider}", response_model=OAuthClientOut)
async def set_oauth_client(
    provider: ProviderKey,
    body: OAuthClientIn,
    ctx: TenantDep,
    integrations: IntegrationsDep,
) -> OAuthClientOut:
    """Use your organization's own OAuth client for ``provider`` (admins only).
    Register this deployment's /oauth/callback/{provider} URL with it."""
    status = await integrations.set_oauth_client(
        ctx, provider, body.client_id, Secret(body.client_secret)
    )
    return OAuthClientOut.of(status)


@router.delete("/organization/oauth-clients/{provider}", response_model=OAuthClientOut)
async def clear_oauth_client(
    provider: ProviderKey, ctx: TenantDep, integrations: IntegrationsDep
) -> OAuthClientOut:
    """Stop using your organization's own client; the configured one applies
    (admins only)."""
    return OAuthClientOut.of(await integrations.clear_oauth_client(ctx, provider))
