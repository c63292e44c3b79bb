"""End-to-end fixtures: a live crmflow server and Debian's Chromium via Playwright.

* ``live_site`` (function): a fresh SQLite database in ``tmp_path``, migrated
  with :func:`crmflow.store.migrate.upgrade`, one organization with one admin,
  and ``create_app(settings)`` served by ``uvicorn.Server`` in a background
  thread on a loopback socket bound to port 0 (no free-port race). It waits until
  ``/login`` answers and stops the server (lifespan shutdown included) at
  teardown.
* ``browser`` (module): Chromium from ``/usr/bin/chromium`` launched by
  Playwright's sync API with the flags of ``real-servers.md`` section 7 (never
  ``playwright install``). A missing binary skips locally and fails in CI
  (:func:`tests.servers.require.missing_server`).
* ``page`` (function): a fresh browser context on the live site with a fixed
  viewport, locale and time zone; it records every request that leaves the site
  and every console error, so tests can assert that nothing loads from the
  internet and the Content-Security-Policy blocks nothing of ours.

Playwright's sync API runs its own event loop in the test's thread (it counts
as running there), so the tests using it are plain (sync) functions, and async
crmflow code they need (seeding, reading rows back) runs through
:func:`run_async`, in a thread of its own with its own loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    sync_playwright,
)
from playwright.sync_api import (
    Error as PlaywrightError,
)

from crmflow.config import load_settings
from crmflow.domain.tenancy import Role
from crmflow.store.crypto import generate_key_entry
from crmflow.store.db import Database
from crmflow.store.identity import provision_organization, provision_user
from crmflow.store.migrate import upgrade
from crmflow.web.app import create_app
from tests.servers.require import missing_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: the repository's (gitignored) folder for screenshots
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05


T = TypeVar("T")


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` to completion on a fresh loop in another thread.

    ``asyncio.run`` refuses to start in a thread where Playwright's loop exists.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@dataclass(frozen=True, slots=True)
class LiveSite:
    """A running crmflow and the account to sign in with."""

    base_url: str
    database_url: str
    organization_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    password: str


async def _seed(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    admin = Database(url)
    try:
        org = await provision_organization(admin, "Acme Sales")
        user = await provision_user(
            admin,
            "ann@acme.test",
            "correct horse battery",
            display_name="Ann Archer",
            organization_id=org,
            role=Role.ADMIN,
        )
    finally:
        await admin.dispose()
    return org, user


def _wait_until_answering(base_url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                pytest.fail("the crmflow server stopped during start-up (see log)")
            try:
                if client.get("/login").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_INTERVAL_S)
    pytest.fail(f"crmflow did not answer at {base_url} within {START_TIMEOUT_S} s")


@pytest.fixture
def live_site(tmp_path: Path) -> Iterator[LiveSite]:
    url = f"sqlite:///{(tmp_path / 'crmflow.db').as_posix()}"
    upgrade(url)
    org_id, user_id = run_async(lambda: _seed(url))
    settings = load_settings(
        database_url=url,
        encryption_keys=generate_key_entry(),
        session_secret="x" * 40,
        data_dir=tmp_path,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="crmflow-live", daemon=True
    )
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(base_url, thread)
        yield LiveSite(
            base_url=base_url,
            database_url=url,
            organization_id=org_id,
            user_id=user_id,
            email="ann@acme.test",
            password="correct horse battery",
        )
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        sock.close()
        if thread.is_alive():
            pytest.fail(f"the crmflow server did not stop within {STOP_TIMEOUT_S} s")


class _Chromium:
    """One Chromium per module, launched again if it crashed."""

    def __init__(self, playwright: Playwright) -> None:
        self._playwright = playwright
        self._browser: Browser | None = None

    def get(self) -> Browser:
        if self._browser is not None and not self._alive(self._browser):
            self._browser = None
        if self._browser is None:
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        return self._browser

    @staticmethod
    def _alive(browser: Browser) -> bool:
        # is_connected() learns of a crash only at the next call: make one
        try:
            browser.new_context().close()
        except PlaywrightError:
            return False
        return True

    def close(self) -> None:
        if self._browser is not None and self._browser.is_connected():
            self._browser.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[_Chromium]:
    if not CHROMIUM.exists():
        missing_server(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        launcher = _Chromium(playwright)
        try:
            yield launcher
        finally:
            launcher.close()


@pytest.fixture
def browser(chromium: _Chromium) -> Browser:
    """The module's Chromium; a test after one whose browser crashed gets a
    new one, so a crash fails that test only, not the rest of the module."""
    return chromium.get()


@dataclass
class PageLog:
    """What a page did besides rendering: foreign requests and console errors."""

    foreign_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(browser: Browser, live_site: LiveSite, page_log: PageLog) -> Iterator[Page]:
    context = browser.new_context(
        base_url=live_site.base_url,
        viewport={"width": 1280, "height": 860},
        locale="en-GB",
        timezone_id="Europe/Berlin",
    )

    def on_request(request: Request) -> None:
        url = request.url
        if not url.startswith((live_site.base_url + "/", "data:")):
            page_log.foreign_requests.append(url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            page_log.console_errors.append(message.text)

    context.on("request", on_request)
    opened = context.new_page()
    opened.on("console", on_console)
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
