"""Pytest fixtures for a real Google + Microsoft sandbox server on 127.0.0.1.

* ``sandbox_server`` (session): one :class:`~crmflow.sandbox.serve.SandboxServer`
  (uvicorn on a thread, free loopback port) serving both vendors, with
  plain-HTTP webhooks allowed.
* ``sandbox`` (function): resets the sandbox (users, grants, tokens, faults,
  request log; the clock only moves forward), registers crmflow's OAuth clients
  (:data:`GOOGLE_CLIENT`, :data:`MICROSOFT_CLIENT`) with the test app's
  callback URLs (:data:`PUBLIC_BASE_URL` and the development URL
  :data:`DEV_BASE_URL`), fixes Microsoft's access-token lifetime at
  :data:`MICROSOFT_TOKEN_LIFETIME_S` so expiry arithmetic is exact, and yields
  a :class:`Sandbox` helper that talks to the control API over HTTP.

:class:`ConsentPage` drives the consent pages as a person would: it GETs the
authorization URL, fills the HTML form (pick an account, untick scopes) and
submits it, returning the redirect to crmflow's callback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from crmflow.sandbox.microsoft.store import MicrosoftStore
from crmflow.sandbox.serve import SandboxServer
from crmflow.sandbox.state import SandboxConfig, SandboxState

#: the test app's public URL (crmflow's default): its callbacks are registered
PUBLIC_BASE_URL = "http://127.0.0.1:8000"
#: a development front end's URL, registered too and allowed by configuration
DEV_BASE_URL = "http://localhost:5173"
GOOGLE_CLIENT = ("crmflow-tests.apps.googleusercontent.com", "GOCSPX-test-secret-1")
MICROSOFT_CLIENT = ("5b0f7d3e-0c1a-4f6e-9a55-6d2b8c1e4f70", "abc8Q~test-secret-1")
#: fixed Microsoft access-token lifetime (it is random 60-90 min otherwise)
MICROSOFT_TOKEN_LIFETIME_S = 3600
#: Google's fixed access-token lifetime
GOOGLE_TOKEN_LIFETIME_S = 3599


def callback_uri(base: str, provider: str) -> str:
    return f"{base}/oauth/callback/{provider}"


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """The sandbox on a uvicorn thread for the whole session."""
    state = SandboxState(config=SandboxConfig(allow_http_webhooks=True))
    server = SandboxServer(state).start()
    yield server
    server.stop()


class _Form(HTMLParser):
    """The first form of a page: action, inputs, selects, buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.inputs: list[dict[str, str | None]] = []
        self.selects: dict[str, list[str]] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        elif tag in ("input", "button"):
            self.inputs.append({"tag": tag, **a})
        elif tag == "select":
            self._select = a.get("name") or ""
            self.selects[self._select] = []
        elif tag == "option" and self._select is not None:
            self.selects[self._select].append(a.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


@dataclass
class ConsentPage:
    """A provider's consent page, as fetched from an authorization URL."""

    url: str
    response: httpx.Response
    form: _Form

    @property
    def scopes(self) -> list[str]:
        """The scopes the page asks for (ticked boxes and fixed identity scopes)."""
        return [
            str(i["value"])
            for i in self.form.inputs
            if i.get("name") == "scope" and i.get("value")
        ]


@dataclass
class Sandbox:
    """Test-side handle on the running sandbox (control API over HTTP)."""

    state: SandboxState
    server: SandboxServer
    http: httpx.AsyncClient

    @property
    def google_url(self) -> str:
        return self.server.google_url

    @property
    def microsoft_url(self) -> str:
        return self.server.microsoft_url.rstrip("/")

    def _base(self, vendor: str) -> str:
        return self.google_url if vendor == "google" else self.microsoft_url + "/"

    async def control(
        self, vendor: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        response = await self.http.request(
            method, self._base(vendor) + "_sandbox/" + path.lstrip("/"), **kwargs
        )
        assert response.status_code < 400, response.text
        return response

    async def add_user(self, vendor: str, email: str) -> None:
        await self.control(vendor, "POST", "users", json={"email": email})

    async def advance_clock(self, seconds: float) -> None:
        await self.control("google", "POST", "clock", json={"advance_s": seconds})

    async def requests(self, api_method: str | None = None) -> list[dict[str, Any]]:
        """What crmflow sent (control calls excluded), optionally one API method."""
        response = await self.control("google", "GET", "requests")
        entries = list(response.json()["requests"])
        if api_method is not None:
            entries = [e for e in entries if e["apiMethod"] == api_method]
        return entries

    async def add_fault(self, vendor: str, **fault: Any) -> None:
        await self.control(vendor, "POST", "faults", json=fault)

    # -- the consent page, as a person uses it ---------------------------------------

    async def open_consent(self, authorization_url: str) -> ConsentPage:
        response = await self.http.get(authorization_url)
        assert response.status_code == 200, response.text
        form = _Form()
        form.feed(response.text)
        return ConsentPage(authorization_url, response, form)

    async def consent(
        self,
        authorization_url: str,
        email: str,
        *,
        untick: tuple[str, ...] = (),
        deny: bool = False,
    ) -> str:
        """Open the consent page, choose ``email``, untick ``untick``, submit.

        Returns the redirect URL back to crmflow (with ``code`` and ``state``, or
        ``error``).
        """
        page = await self.open_consent(authorization_url)
        form = page.form
        assert form.action, "the consent page has no form"
        data: dict[str, list[str]] = {}
        is_google = "signin/oauth/consent" in form.action
        for field in form.inputs:
            name, value = field.get("name"), field.get("value") or ""
            if not name or field.get("tag") == "button":
                continue
            kind = field.get("type")
            if kind == "checkbox" and (value in untick or "checked" not in field):
                continue
            if kind == "radio" or name == "new_email":
                continue  # the account is chosen below
            data.setdefault(name, []).append(value)
        if is_google:
            data["new_email"] = [email]
            data["action"] = ["deny" if deny else "allow"]
        else:
            assert email in form.selects.get("login", []), "unknown sandbox user"
            data["login"] = [email]
            data["action"] = ["cancel" if deny else "accept"]
        response = await self.http.post(urljoin(page.url, form.action), data=data)
        assert response.status_code == 302, response.text
        return response.headers["location"]


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL, one value each."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def path_of(url: str) -> str:
    """``/path?query`` of an absolute URL (to send it to the in-process app)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _register_clients(state: SandboxState) -> None:
    from crmflow.sandbox.google.store import GoogleStore

    with state.lock:
        state.extension(GoogleStore).identity.register_client(
            client_id=GOOGLE_CLIENT[0],
            client_secret=GOOGLE_CLIENT[1],
            redirect_uris=[
                callback_uri(PUBLIC_BASE_URL, "google"),
                callback_uri(DEV_BASE_URL, "google"),
            ],
            name="crmflow tests",
        )
        microsoft = state.extension(MicrosoftStore)
        microsoft.identity.register_app(
            client_id=MICROSOFT_CLIENT[0],
            client_secret=MICROSOFT_CLIENT[1],
            redirect_uris=[
                callback_uri(PUBLIC_BASE_URL, "microsoft"),
                callback_uri(DEV_BASE_URL, "microsoft"),
            ],
            name="crmflow tests",
        )
        microsoft.settings.access_token_lifetime_s = MICROSOFT_TOKEN_LIFETIME_S


@pytest.fixture
async def sandbox(sandbox_server: SandboxServer) -> AsyncIterator[Sandbox]:
    """A clean sandbox with crmflow's OAuth clients registered."""
    state = sandbox_server.state
    state.reset()
    # the demo data is placed relative to the sandbox's now, the CRM's pages
    # to the real one: days advanced by an earlier test must not shift it
    state.clock.back_to_real_time()
    _register_clients(state)
    async with httpx.AsyncClient(timeout=30) as http:
        yield Sandbox(state, sandbox_server, http)
    state.faults.clear()
