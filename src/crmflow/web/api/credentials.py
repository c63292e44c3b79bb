"""``/api/integrations/{imap,caldav,presets}``: connect mail and calendar
accounts that sign in with a password (iCloud, Fastmail, Yahoo, Nextcloud, any
IMAP/SMTP or CalDAV server).

The password is checked by a real sign-in before anything is stored; a failed
check answers **422** with ``{"detail": <what happened and what to do>,
"error": <WrongCredentials | TlsFailure | HostUnreachable | NotAServer |
ConnectionCheckFailed | ValidationFailed>}``. Passwords are never echoed: not in
responses, not in validation errors (the route class below drops the submitted
values from them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, SecretStr

from crmflow.connections import credentials
from crmflow.domain.secret import Secret
from crmflow.providers.base import ConnectionCheckFailed
from crmflow.providers.caldav import CalendarPreset, DiscoveredCalendar
from crmflow.providers.imap import MailPreset, MailServer, Security
from crmflow.store.integrations import IntegrationInfo
from crmflow.web.api.schemas import EmailStr, Strict
from crmflow.web.deps import ServicesDep, TenantDep


class _NoEchoRoute(APIRoute):
    """Validation errors without the submitted values (``input``): the bodies
    of these endpoints carry passwords, and FastAPI's default 422 repeats the
    offending input, which for a missing field is the whole body."""

    def get_route_handler(
        self,
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [
                    {k: v for k, v in err.items() if k != "input"}
                    for err in exc.errors()
                ]
                raise RequestValidationError(errors) from None

        return route


router = APIRouter(
    prefix="/api/integrations", tags=["integrations"], route_class=_NoEchoRoute
)

Password = Annotated[
    SecretStr,
    Field(
        min_length=1,
        max_length=credentials.MAX_PASSWORD_LENGTH,
        description="The (app-specific) password; never returned.",
    ),
]


class ServerIn(Strict):
    host: str = Field(min_length=1, max_length=253, examples=["mail.example.com"])
    port: int = Field(ge=1, le=65535, examples=[993])
    security: Security = Field(
        description="`tls` (implicit TLS), `starttls`, or `none` (loopback hosts only)."
    )

    def to_server(self) -> MailServer:
        return MailServer(self.host.strip(), self.port, self.security)


class ImapConnectIn(Strict):
    """Either ``preset`` or both ``imap`` and ``smtp``."""

    preset: str | None = Field(default=None, examples=["icloud"])
    imap: ServerIn | None = None
    smtp: ServerIn | None = None
    email: EmailStr
    username: str | None = Field(
        default=None, max_length=320, description="Defaults to `email`."
    )
    password: Password


class CalDAVConnectIn(Strict):
    """Either a ``preset`` with a fixed address, or ``url`` (Nextcloud: both)."""

    preset: str | None = Field(default=None, examples=["fastmail"])
    url: str | None = Field(
        default=None, max_length=2000, examples=["https://cloud.example.com"]
    )
    username: str = Field(min_length=1, max_length=320)
    password: Password
    email: EmailStr | None = Field(
        default=None, description="Defaults to what the server reports."
    )


class ServerOut(BaseModel):
    host: str
    port: int
    security: Security

    @classmethod
    def of(cls, server: MailServer) -> ServerOut:
        return cls(host=server.host, port=server.port, security=server.security)


class MailPresetOut(BaseModel):
    key: str
    name: str
    provider: str
    imap: ServerOut
    smtp: ServerOut
    smtp_alternatives: list[ServerOut]
    app_password_required: bool
    username_help: str
    sign_in_help: str
    notes: str

    @classmethod
    def of(cls, p: MailPreset) -> MailPresetOut:
        return cls(
            key=p.key,
            name=p.name,
            provider=p.provider.value,
            imap=ServerOut.of(p.imap),
            smtp=ServerOut.of(p.smtp),
            smtp_alternatives=[ServerOut.of(s) for s in p.smtp_alternatives],
            app_password_required=p.app_password_required,
            username_help=p.username_help,
            sign_in_help=p.sign_in_help,
            notes=p.notes,
        )


class CalendarPresetOut(BaseModel):
    key: str
    name: str
    provider: str
    url: str | None = Field(description="null: the user enters their server's address.")
    app_password_required: bool
    username_help: str
    sign_in_help: str

    @classmethod
    def of(cls, p: CalendarPreset) -> CalendarPresetOut:
        return cls(
            key=p.key,
            name=p.name,
            provider=p.provider.value,
            url=p.url,
            app_password_required=p.app_password_required,
            username_help=p.username_help,
            sign_in_help=p.sign_in_help,
        )


class PresetsOut(BaseModel):
    mail: list[MailPresetOut]
    calendar: list[CalendarPresetOut]


class CredentialIntegrationOut(BaseModel):
    """A password integration; the password itself is never part of it."""

    id: uuid.UUID
    provider: str
    kind: str
    email: str | None
    username: str | None
    status: str
    last_error: str | None
    #: non-secret connection parameters (servers, URLs, calendars)
    settings: dict[str, Any]
    connected_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def fields_of(cls, info: IntegrationInfo) -> dict[str, Any]:
        settings: Mapping[str, Any] = info.settings
        return {
            "id": info.id,
            "provider": info.provider.value,
            "kind": info.kind.value,
            "email": info.email,
            "username": settings.get("username", info.account_id),
            "status": info.status.value,
            "last_error": info.last_error,
            "settings": dict(settings),
            "connected_at": info.connected_at,
            "updated_at": info.updated_at,
        }

    @classmethod
    def of(cls, info: IntegrationInfo) -> CredentialIntegrationOut:
        return cls(**cls.fields_of(info))


class CalendarOut(BaseModel):
    url: str
    name: str | None
    components: list[str]
    ctag: str | None
    sync_token: str | None
    color: str | None

    @classmethod
    def of(cls, c: DiscoveredCalendar) -> CalendarOut:
        return cls(
            url=c.url,
            name=c.name,
            components=list(c.components),
            ctag=c.ctag,
            sync_token=c.sync_token,
            color=c.color,
        )


class CalDAVIntegrationOut(CredentialIntegrationOut):
    #: the event calendars discovery found (possibly none)
    calendars: list[CalendarOut]


class CheckFailedOut(BaseModel):
    detail: str = Field(description="What happened and what to do.")
    error: str = Field(
        description="WrongCredentials, TlsFailure, HostUnreachable, NotAServer, "
        "ConnectionCheckFailed or ValidationFailed."
    )


_FAILED: dict[int | str, dict[str, Any]] = {
    422: {"model": CheckFailedOut, "description": "The sign-in check failed."}
}


def _check_failed(exc: ConnectionCheckFailed) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.message, "error": type(exc).__name__},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


@router.get("/presets", response_model=PresetsOut)
async def get_presets(ctx: TenantDep) -> PresetsOut:
    """Known providers for password sign-in: their servers and what password
    they need."""
    presets = credentials.list_presets()
    return PresetsOut(
        mail=[MailPresetOut.of(p) for p in presets.mail],
        calendar=[CalendarPresetOut.of(p) for p in presets.calendar],
    )


@router.post(
    "/imap",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialIntegrationOut,
    responses=_FAILED,
)
async def connect_imap(
    body: ImapConnectIn, ctx: TenantDep, services: ServicesDep
) -> CredentialIntegrationOut | JSONResponse:
    """Connect a mailbox over IMAP + SMTP; both sign-ins must succeed first."""
    try:
        info = await credentials.connect_imap(
            services,
            ctx,
            email=body.email,
            username=body.username,
            password=Secret(body.password.get_secret_value()),
            preset=body.preset,
            imap_server=body.imap.to_server() if body.imap else None,
            smtp_server=body.smtp.to_server() if body.smtp else None,
        )
    except ConnectionCheckFailed as exc:
        return _check_failed(exc)
    return CredentialIntegrationOut.of(info)


@router.post(
    "/caldav",
    status_code=status.HTTP_201_CREATED,
    response_model=CalDAVIntegrationOut,
    responses=_FAILED,
)
async def connect_caldav(
    body: CalDAVConnectIn, ctx: TenantDep, services: ServicesDep
) -> CalDAVIntegrationOut | JSONResponse:
    """Connect a CalDAV account: discovery signs in and finds the calendars."""
    try:
        connected = await credentials.connect_caldav(
            services,
            ctx,
            username=body.username,
            password=Secret(body.password.get_secret_value()),
            preset=body.preset,
            url=body.url,
            email=body.email,
        )
    except ConnectionCheckFailed as exc:
        return _check_failed(exc)
    return CalDAVIntegrationOut(
        **CredentialIntegrationOut.fields_of(connected.integration),
        calendars=[CalendarOut.of(c) for c in connected.calendars],
    )
