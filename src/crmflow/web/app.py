"""``create_app(settings)``: the FastAPI application (API, UI, OpenAPI at /docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp

from crmflow import __version__
from crmflow.bootstrap import Services, start_services
from crmflow.config import Settings
from crmflow.services.push import KnownChannels
from crmflow.web import errors, health, webhooks
from crmflow.web import oauth as oauth_routes
from crmflow.web.api import account, appointments, contacts
from crmflow.web.api import calendar_accounts as calendar_api
from crmflow.web.api import credentials as credential_api
from crmflow.web.api import email as email_api
from crmflow.web.api import integrations as integration_api
from crmflow.web.ui import calendars as ui_calendars
from crmflow.web.ui import contacts as ui_contacts
from crmflow.web.ui import email as ui_email
from crmflow.web.ui import integrations as ui_integrations
from crmflow.web.ui import routes as ui_routes
from crmflow.web.ui.throttle import LoginThrottle

SESSION_MAX_AGE_S = 14 * 24 * 60 * 60  # 14 days


def create_app(
    settings: Settings,
    services: Services | None = None,
    *,
    mounts: Mapping[str, ASGIApp] | None = None,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> FastAPI:
    """Build the application.

    ``services`` lets tests and ``crmflow demo`` share already-started services;
    otherwise they are started (and keys verified) in the lifespan, and a bad
    configuration stops start-up there. ``mounts`` adds further ASGI apps by
    path prefix (the demo mounts the provider sandbox at ``/sandbox``), and
    ``on_shutdown`` hooks run when the app stops.
    """
    settings.require("session_secret")
    assert settings.session_secret is not None  # noqa: S101 - checked by require()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or await start_services(settings)
        try:
            yield
        finally:
            for hook in on_shutdown:
                await hook()
            if own:
                await app.state.services.close()

    app = FastAPI(
        title="crmflow",
        version=__version__,
        description="Per-user mailbox and calendar integrations for a CRM.",
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    app.state.login_throttle = LoginThrottle()
    # the webhook receivers' first check of a channel, from memory
    app.state.known_channels = KnownChannels()
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret.reveal(),
        session_cookie="crmflow_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=settings.public_base_url.scheme == "https",
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(webhooks.router)
    app.include_router(appointments.router)
    app.include_router(contacts.router)
    app.include_router(account.router)
    app.include_router(credential_api.router)
    app.include_router(integration_api.router)
    app.include_router(calendar_api.router)
    app.include_router(email_api.router)
    app.include_router(oauth_routes.router)
    app.include_router(ui_routes.router)
    app.include_router(ui_integrations.router)
    app.include_router(ui_calendars.router)
    app.include_router(ui_email.router)
    app.include_router(ui_contacts.router)
    for prefix, sub_app in (mounts or {}).items():
        app.mount(prefix, sub_app)
    app.mount(
        "/static",
        StaticFiles(directory=str(files("crmflow.web.ui") / "static")),
        name="static",
    )
    return app
