"""Settings -> Integrations in a real browser (Debian's Chromium via Playwright).

The live server is set up like ``crmflow demo``: the Google/Microsoft sandbox
is mounted inside crmflow at ``/sandbox``, crmflow's Google URLs point at it,
and crmflow's OAuth client is registered there with the live server's own
callback URL. One journey: sign in -> Settings -> Integrations -> Connect Google
Calendar -> the sandbox's consent page (pick the account, keep every scope
ticked, continue) -> back on the integrations page with the success message,
the connected email and the granted permissions in plain words -> Disconnect
-> confirm -> "Not connected", and the grant is gone at Google. Screenshots
(desktop and 390 px wide) go to ``test-artifacts/``.

A second test drives the IMAP form: the server fields (CSS ``:has``) and the
provider's help (``app.js``) follow the chosen provider, and a failed sign-in
keeps the input but never the password.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import ConsoleMessage, Page, expect

from crmflow.config import load_settings
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.state import SandboxConfig, SandboxState
from crmflow.sandbox.vendors import create_vendor_app
from crmflow.store.crypto import generate_key_entry
from crmflow.store.migrate import upgrade
from crmflow.web.app import create_app
from tests.e2e.conftest import (
    STOP_TIMEOUT_S,
    LiveSite,
    PageLog,
    _seed,
    _wait_until_answering,
    run_async,
)
from tests.servers.net import free_port

pytestmark = pytest.mark.browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: a full-page screenshot of a rendered page is far larger than this
MIN_SCREENSHOT_BYTES = 10_000
#: the person's Google account in the sandbox (not their crmflow login)
GOOGLE_ACCOUNT = "ann.archer@gmail.test"
GOOGLE_CLIENT = ("crmflow-e2e.apps.googleusercontent.com", "GOCSPX-e2e-secret")
#: where the sandbox is mounted, as in ``crmflow demo``
SANDBOX_PREFIX = "/sandbox"


@pytest.fixture
def sandbox_state() -> SandboxState:
    state = SandboxState(config=SandboxConfig(allow_http_webhooks=True))
    state.add_user(GOOGLE_ACCOUNT, "Ann Archer")
    return state


@pytest.fixture
def live_site(tmp_path: Path, sandbox_state: SandboxState) -> Iterator[LiveSite]:
    """The e2e live server with the provider sandbox mounted at ``/sandbox``."""
    url = f"sqlite:///{(tmp_path / 'crmflow.db').as_posix()}"
    upgrade(url)
    org_id, user_id = run_async(lambda: _seed(url))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sandbox_root = base_url + SANDBOX_PREFIX
    settings = load_settings(
        database_url=url,
        encryption_keys=generate_key_entry(),
        session_secret="x" * 40,
        data_dir=tmp_path,
        public_base_url=base_url,
        google_client_id=GOOGLE_CLIENT[0],
        google_client_secret=GOOGLE_CLIENT[1],
        google_accounts_url=sandbox_root + "/google",
        google_oauth2_url=sandbox_root + "/google",
        google_api_url=sandbox_root + "/google",
    )
    with sandbox_state.lock:
        sandbox_state.extension(GoogleStore).identity.register_client(
            client_id=GOOGLE_CLIENT[0],
            client_secret=GOOGLE_CLIENT[1],
            redirect_uris=[settings.oauth_redirect_uri("google")],
            name="crmflow e2e",
        )
    sandbox = create_vendor_app(sandbox_state, sandbox_root + "/")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                settings,
                mounts={SANDBOX_PREFIX: sandbox.app},
                on_shutdown=[sandbox.shutdown],
            ),
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
        )
    )
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name="crmflow-live-sandbox",
        daemon=True,
    )
    thread.start()
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


def _screenshot(page: Page, path: Path) -> None:
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > MIN_SCREENSHOT_BYTES


def test_connect_and_disconnect_google_calendar(
    page: Page,
    live_site: LiveSite,
    page_log: PageLog,
    artifacts_dir: Path,
    sandbox_state: SandboxState,
) -> None:
    errors: list[tuple[str, str]] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append((str(message.location.get("url")), message.text))

    page.on("console", on_console)
    # Sign in, then Settings -> Integrations.
    page.goto("/settings")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fsettings$"))
    page.get_by_label("Email address").fill(live_site.email)
    page.get_by_label("Password").fill(live_site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/settings$"))
    sections = page.get_by_role("navigation", name="Settings sections")
    sections.get_by_role("link", name="Integrations").click()
    expect(page).to_have_url(re.compile(r"/settings/integrations$"))
    expect(page.get_by_role("heading", name="Integrations", exact=True)).to_be_visible()
    cards = page.locator("section.integration")
    expect(cards.locator("h2")).to_have_text(
        [
            "Gmail",
            "Google Calendar",
            "Outlook Mail",
            "Outlook Calendar",
            "iCloud / IMAP mail",
            "CalDAV calendar",
        ]
    )
    card = page.locator("#google-calendar")
    expect(card.locator(".status-badge")).to_have_text("Not connected")

    # Connect -> the sandbox's consent page, served by crmflow's own origin.
    card.get_by_role("button", name="Connect Google Calendar").click()
    expect(page).to_have_url(re.compile(r"/sandbox/google/o/oauth2/v2/auth\?"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in with Google")
    expect(page.locator("body")).to_contain_text("crmflow e2e wants access")
    page.get_by_label(re.compile(re.escape(GOOGLE_ACCOUNT))).check()
    scopes = page.locator('input[type="checkbox"][name="scope"]')
    expect(scopes).to_have_count(3)  # calendar, calendar.events, calendar.readonly
    for i in range(3):
        expect(scopes.nth(i)).to_be_checked()
    page.get_by_role("button", name="Continue").click()

    # Back on the integrations page: success message, account, permissions.
    expect(page).to_have_url(
        re.compile(
            r"/settings/integrations\?integration=connected&provider=google"
            r"&kind=calendar$"
        )
    )
    expect(page.locator(".flash-success")).to_have_text(
        f"Connected Google Calendar as {GOOGLE_ACCOUNT}."
    )
    expect(card).to_have_attribute("data-state", "connected")
    expect(card.locator(".status-badge")).to_have_text("Connected")
    expect(card.locator(".connection-email")).to_have_text(GOOGLE_ACCOUNT)
    permissions = card.locator(".perm-list li")
    for words in (
        "See, edit, share and delete all your calendars",
        "View and edit events on all your calendars",
        "See your calendars and their events",
        "See your email address",
    ):
        expect(permissions.filter(has_text=words)).to_have_count(1)
    expect(card.locator(".feature-on")).to_have_count(4)
    expect(card.locator(".feature-off")).to_have_count(0)
    expect(card.locator(".last-refresh")).to_have_text("not yet")
    expect(page.locator(".event").first).to_contain_text("Connected")
    expect(page.locator(".event").first).to_contain_text("Google Calendar")
    grant = sandbox_state.extension(GoogleStore).identity.grant(
        GOOGLE_ACCOUNT, GOOGLE_CLIENT[0]
    )
    assert grant is not None

    _screenshot(page, artifacts_dir / "integrations-connected.png")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(card.locator(".connection-email")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
    _screenshot(page, artifacts_dir / "integrations-connected-390.png")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Disconnect asks first, then disconnects.
    card.get_by_role("link", name="Disconnect Google Calendar").click()
    expect(page).to_have_url(
        re.compile(r"/settings/integrations/[0-9a-f-]{36}/disconnect$")
    )
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Disconnect Google Calendar?"
    )
    expect(page.locator(".what-happens")).to_contain_text(
        f"crmflow asks Google to revoke its access to {GOOGLE_ACCOUNT}."
    )
    _screenshot(page, artifacts_dir / "integrations-disconnect-confirm.png")
    page.get_by_role("button", name="Disconnect").click()

    expect(page).to_have_url(re.compile(r"/settings/integrations$"))
    expect(page.locator(".flash-success")).to_contain_text(
        f"Disconnected Google Calendar ({GOOGLE_ACCOUNT}); crmflow deleted its tokens."
    )
    card = page.locator("#google-calendar")
    expect(card).to_have_attribute("data-state", "not-connected")
    expect(card.locator(".status-badge")).to_have_text("Not connected")
    expect(card.get_by_role("button", name="Connect Google Calendar")).to_be_visible()
    expect(page.locator(".event").first).to_contain_text("Disconnected")
    with sandbox_state.lock:
        grant = sandbox_state.extension(GoogleStore).identity.grant(
            GOOGLE_ACCOUNT, GOOGLE_CLIENT[0]
        )
    assert grant is None  # revoked at Google

    assert page_log.foreign_requests == []
    # The sandbox's consent page declares no icon, so Chromium asks for
    # /favicon.ico, which crmflow does not serve; nothing else may fail.
    favicon = (live_site.base_url + "/favicon.ico", "Failed to load resource")
    assert [e for e in errors if (e[0], e[1][: len(favicon[1])]) != favicon] == []
    assert len(page_log.console_errors) == len(errors)


def test_mail_form_follows_the_chosen_provider(
    page: Page, live_site: LiveSite, page_log: PageLog
) -> None:
    """The server fields (CSS) and the provider's help (JS) follow the choice; a
    failed sign-in keeps the input but not the password."""
    page.goto("/settings/integrations")
    page.get_by_label("Email address").fill(live_site.email)
    page.get_by_label("Password").fill(live_site.password)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#imap-mail").get_by_role(
        "link", name="Connect iCloud / IMAP mail"
    ).click()
    expect(page).to_have_url(re.compile(r"/settings/integrations/imap$"))
    form = page.locator("#mail-form")
    expect(form.get_by_label("Mail provider")).to_have_value("icloud")
    icloud_help = form.locator('[data-preset-help="icloud"]')
    expect(icloud_help).to_be_visible()
    expect(icloud_help).to_contain_text("App-Specific Passwords")
    expect(form.locator("#imap_host")).to_be_hidden()

    form.get_by_label("Mail provider").select_option("fastmail")
    expect(icloud_help).to_be_hidden()
    expect(form.locator('[data-preset-help="fastmail"]')).to_be_visible()
    expect(form.locator("#imap_host")).to_be_hidden()

    form.get_by_label("Mail provider").select_option("custom")
    expect(form.locator('[data-preset-help="custom"]')).to_be_visible()
    port = str(free_port())  # nothing listens there
    form.locator("#email").fill("ann@example.test")
    form.locator("#imap_host").fill("127.0.0.1")
    form.locator("#imap_port").fill(port)
    form.locator("#imap_security").select_option("none")
    form.locator("#smtp_host").fill("127.0.0.1")
    form.locator("#smtp_port").fill(port)
    form.locator("#smtp_security").select_option("none")
    form.locator("#password").fill("typed-Secret-pw-4711")
    form.get_by_role("button", name="Sign in and connect").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"127.0.0.1:{port}")
    expect(alert).to_contain_text("refused")
    expect(form.locator("#password")).to_have_value("")
    expect(form.locator("#imap_host")).to_be_visible()
    expect(form.locator("#imap_port")).to_have_value(port)
    expect(form.locator("#email")).to_have_value("ann@example.test")
    assert "typed-Secret-pw-4711" not in page.content()
    assert page_log.foreign_requests == []
    # Chromium reports the form's 422 answer itself; nothing else may fail.
    assert page_log.console_errors == [
        "Failed to load resource: the server responded with a status of 422 "
        "(Unprocessable Entity)"
    ]
