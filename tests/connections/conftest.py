"""Fixtures for the OAuth connection tests: crmflow in-process, providers over
real HTTP.

* ``settings`` (overrides the root one): the test database of each backend,
  Google and Microsoft pointed at the ``sandbox`` server, crmflow's OAuth
  clients, :data:`~tests.servers.sandbox.PUBLIC_BASE_URL` as public URL and
  the development front end as an extra redirect URI.
* ``integrations``: the connections service on the sandbox's clock (so
  advancing sandbox time expires crmflow's tokens too) with a back-off pause
  that only records (:class:`Pauses`).
* ``app`` / ``web``: the FastAPI app sharing that service; ``web`` is an
  httpx client on it at the public URL (so session cookies match the callback
  URL's host). :func:`sign_in` signs a user in through the login form.
* :class:`Flow` runs whole connects: start (Python API or REST), the consent
  page, the redirect back to crmflow's callback.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from crmflow.bootstrap import Services
from crmflow.config import Settings, load_settings
from crmflow.connections.oauth import ConnectResult
from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.tenancy import TenantContext
from crmflow.sandbox.serve import SandboxServer
from crmflow.web.app import create_app
from tests.conftest import SESSION_SECRET, Actor, DbUrls
from tests.servers.sandbox import (
    DEV_BASE_URL,
    GOOGLE_CLIENT,
    MICROSOFT_CLIENT,
    PUBLIC_BASE_URL,
    Sandbox,
    path_of,
    query_of,
)

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(
    db_urls: DbUrls, key_ring: str, tmp_path: Path, sandbox_server: SandboxServer
) -> Settings:
    google = sandbox_server.google_url
    microsoft = sandbox_server.microsoft_url
    return load_settings(
        database_url=db_urls.app_url,
        admin_database_url=db_urls.admin_url,
        encryption_keys=key_ring,
        session_secret=SESSION_SECRET,
        data_dir=tmp_path / "data",
        public_base_url=PUBLIC_BASE_URL,
        oauth_extra_redirect_uris=DEV_BASE_URL + "/oauth/callback/{provider}",
        google_client_id=GOOGLE_CLIENT[0],
        google_client_secret=GOOGLE_CLIENT[1],
        google_accounts_url=google,
        google_oauth2_url=google,
        google_api_url=google,
        microsoft_client_id=MICROSOFT_CLIENT[0],
        microsoft_client_secret=MICROSOFT_CLIENT[1],
        microsoft_login_url=microsoft,
        microsoft_graph_url=microsoft,
    )


@dataclass
class Pauses:
    """A back-off pause that records instead of sleeping."""

    taken: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


@pytest.fixture
def pauses() -> Pauses:
    return Pauses()


def new_integrations(
    services: Services,
    settings: Settings,
    sandbox: Sandbox,
    pauses: Pauses,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Integrations:
    """The connections service on the sandbox's clock; ``transport`` carries
    its provider calls (tests that look at or change them)."""
    return Integrations(
        services.db,
        services.vault,
        settings,
        clock=sandbox.state.clock.now,
        sleep=pauses,
        transport=transport,
    )


@pytest.fixture
def integrations(
    services: Services, settings: Settings, sandbox: Sandbox, pauses: Pauses
) -> Integrations:
    return new_integrations(services, settings, sandbox, pauses)


@pytest.fixture
def app(settings: Settings, services: Services, integrations: Integrations) -> FastAPI:
    created = create_app(settings, services)
    created.state.integrations = integrations
    return created


def web_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE_URL
    )


@pytest.fixture
async def web(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with web_client(app) as client:
        yield client


def csrf_of(response: httpx.Response) -> str:
    found = _CSRF.search(response.text)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, actor: Actor) -> str:
    """Sign ``actor`` in through the form; returns the session's CSRF token."""
    token = csrf_of(await client.get("/login"))
    response = await client.post(
        "/login",
        data={
            "csrf_token": token,
            "email": actor.email,
            "password": "password-" + actor.email,
        },
    )
    assert response.status_code == 303, response.text
    return csrf_of(await client.get("/settings"))


@dataclass
class Flow:
    """Whole connects against the sandbox."""

    sandbox: Sandbox
    integrations: Integrations

    async def connect(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        email: str,
        *,
        untick: tuple[str, ...] = (),
        features: list[str] | None = None,
    ) -> ConnectResult:
        """Python API: start, consent as ``email``, complete."""
        if provider is ProviderKey.MICROSOFT:
            await self.sandbox.add_user("microsoft", email)
        started = await self.integrations.start_connect(
            ctx, kind, provider, features=features
        )
        back = await self.sandbox.consent(
            started.authorization_url, email, untick=untick
        )
        q = query_of(back)
        return await self.integrations.complete_connect(
            ctx, provider, state=q["state"], code=q.get("code"), error=q.get("error")
        )

    async def connect_over_http(
        self,
        web: httpx.AsyncClient,
        actor: Actor,
        provider: ProviderKey,
        kind: IntegrationKind,
        email: str,
        *,
        untick: tuple[str, ...] = (),
    ) -> httpx.Response:
        """REST start (Bearer), consent page, browser callback (UI session).

        ``web`` must be signed in as ``actor``; returns the callback's response.
        """
        if provider is ProviderKey.MICROSOFT:
            await self.sandbox.add_user("microsoft", email)
        started = await web.post(
            f"/api/integrations/{kind.value}/connect",
            params={"provider": provider.value},
            headers=actor.headers,
        )
        assert started.status_code == 200, started.text
        back = await self.sandbox.consent(
            started.json()["authorization_url"], email, untick=untick
        )
        assert back.startswith(PUBLIC_BASE_URL + "/oauth/callback/" + provider.value)
        return await web.get(path_of(back))


@pytest.fixture
def flow(sandbox: Sandbox, integrations: Integrations) -> Flow:
    return Flow(sandbox, integrations)
