"""Settings -> Integrations over HTTP (httpx + ASGI transport; the providers are
real servers: the Google/Microsoft sandbox over HTTP, Dovecot + aiosmtpd for
IMAP/SMTP, Radicale for CalDAV).

Covers: the six cards; connecting each OAuth kind through the sandbox's
consent page and back (success message, connected email, permissions in plain
words); last refresh and "needs reconnect" after the grant is revoked at the
provider; partial consent (a feature off, named, with "Grant access" asking
for exactly the missing scope); CSRF on every POST; another user's integration
is 404 on every action; disconnect only after the confirmation step; the
IMAP/CalDAV forms (errors next to the form, input kept, the password never
written into a page) and successful connects against the real servers; a
provider without an OAuth client; the event log.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crmflow.bootstrap import Services
from crmflow.config import Settings, load_settings
from crmflow.connections import scopes as sc
from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.providers.base import AuthError
from crmflow.sandbox.serve import SandboxServer
from crmflow.store import models
from crmflow.store.db import Database
from crmflow.web.app import create_app
from crmflow.web.ui.pages import instant
from tests.conftest import SESSION_SECRET, DbUrls, Tenants
from tests.connections.conftest import Flow, Pauses, new_integrations, sign_in
from tests.servers.net import free_port
from tests.servers.sandbox import (
    DEV_BASE_URL,
    GOOGLE_CLIENT,
    MICROSOFT_CLIENT,
    PUBLIC_BASE_URL,
    Sandbox,
    path_of,
    query_of,
)
from tests.servers.tls import TestCert

PAGE = "/settings/integrations"
G, MS = ProviderKey.GOOGLE, ProviderKey.MICROSOFT
CALENDAR, GMAIL, MAIL = (
    IntegrationKind.CALENDAR,
    IntegrationKind.GMAIL,
    IntegrationKind.MAIL,
)
CARD_TITLES = {
    "gmail": "Gmail",
    "google-calendar": "Google Calendar",
    "outlook-mail": "Outlook Mail",
    "outlook-calendar": "Outlook Calendar",
    "imap-mail": "iCloud / IMAP mail",
    "caldav-calendar": "CalDAV calendar",
}
#: a password typed into the forms: it must never come back in a page
TYPED_PASSWORD = "typed-Secret-pw-4711"


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def settings(
    db_urls: DbUrls,
    key_ring: str,
    tmp_path: Path,
    sandbox_server: SandboxServer,
    tls_cert: TestCert,
) -> Settings:
    """Google and Microsoft at the sandbox; the test servers' certificate trusted."""
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
        extra_ca_file=tls_cert.cert_file,
    )


@pytest.fixture
def integrations(
    services: Services, settings: Settings, sandbox: Sandbox
) -> Integrations:
    return new_integrations(services, settings, sandbox, Pauses())


@pytest.fixture
def flow(sandbox: Sandbox, integrations: Integrations) -> Flow:
    return Flow(sandbox, integrations)


def _app(settings: Settings, services: Services, integrations: Integrations) -> FastAPI:
    app = create_app(settings, services)
    app.state.integrations = integrations
    return app


@pytest.fixture
async def web(
    settings: Settings, services: Services, integrations: Integrations
) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(settings, services, integrations)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE_URL
    ) as client:
        yield client


# ------------------------------------------------------------------- helpers


def card_html(page: str, key: str) -> str:
    """The HTML of one card of the integrations page."""
    found = re.search(
        rf'<section class="card integration[^"]*" id="{re.escape(key)}"'
        r"[^>]*>.*?</section>",
        page,
        re.S,
    )
    assert found, f"no card {key!r} on the page"
    return found.group(0)


def words(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    without_tags = re.sub(r"<[^>]+>", " ", fragment)
    return " ".join(html.unescape(without_tags).split())


def state_of(page: str, key: str) -> str:
    found = re.search(r'data-state="([^"]+)"', card_html(page, key))
    assert found
    return found.group(1)


def flashes(page: str) -> list[str]:
    return [
        words(m) for m in re.findall(r'<div class="flash[^"]*"[^>]*>(.*?)</div>', page)
    ]


def integration_id(page: str, key: str) -> uuid.UUID:
    found = re.search(r'data-integration-id="([^"]+)"', card_html(page, key))
    assert found, f"card {key!r} shows no connected integration"
    return uuid.UUID(found.group(1))


async def connect_oauth(
    web: httpx.AsyncClient,
    token: str,
    sandbox: Sandbox,
    card: str,
    email: str,
    *,
    untick: tuple[str, ...] = (),
) -> httpx.Response:
    """Click Connect on ``card``, consent as ``email``, follow the callback.

    Returns the callback's redirect (to the integrations page).
    """
    if card.startswith("outlook"):
        await sandbox.add_user("microsoft", email)
    started = await web.post(f"{PAGE}/connect/{card}", data={"csrf_token": token})
    assert started.status_code == 303, started.text
    back = await sandbox.consent(started.headers["location"], email, untick=untick)
    assert back.startswith(PUBLIC_BASE_URL + "/oauth/callback/")
    done = await web.get(path_of(back))
    assert done.status_code == 303, done.text
    return done


async def oauth_flows(admin_db: Database) -> int:
    async with admin_db.admin() as session:
        return int(
            await session.scalar(select(func.count()).select_from(models.OAuthFlow))
            or 0
        )


# --------------------------------------------------------------------- cards


async def test_the_page_lists_six_cards_with_provider_marks(web, tenants: Tenants):
    signed_out = await web.get(PAGE)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/login?next=%2Fsettings%2Fintegrations"

    await sign_in(web, tenants.alice)
    settings_page = await web.get("/settings")
    assert 'href="/settings/integrations"' in settings_page.text
    assert "Integrations" in words(settings_page.text)

    response = await web.get(PAGE)
    assert response.status_code == 200
    page = response.text
    ids = re.findall(r'<section class="card integration[^"]*" id="([^"]+)"', page)
    assert ids == list(CARD_TITLES)
    for key, title in CARD_TITLES.items():
        card = card_html(page, key)
        assert f">{html.escape(title)}</h2>" in card
        assert state_of(page, key) == "not-connected"
        assert "Not connected" in words(card)
    for key in ("gmail", "google-calendar", "outlook-mail", "outlook-calendar"):
        assert f'action="{PAGE}/connect/{key}"' in card_html(page, key)
    assert f'href="{PAGE}/imap"' in card_html(page, "imap-mail")
    assert f'href="{PAGE}/caldav"' in card_html(page, "caldav-calendar")
    for brand in ("google", "microsoft", "imap", "caldav"):
        assert f"brand-badge brand-{brand}" in page
    assert "Nothing yet" in words(page)
    # CSP 'self': no inline scripts or styles, nothing from other origins
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=\"/static/)", page)
    assert " style=" not in page
    assert not re.search(r'(src|href)="https?://', page)


# ------------------------------------------------------------ OAuth connects


@pytest.mark.parametrize(
    ("card", "provider", "kind", "label", "permissions"),
    [
        (
            "gmail",
            "google",
            "gmail",
            "Gmail",
            ["Send email on your behalf", "Read your email", "See your email address"],
        ),
        (
            "google-calendar",
            "google",
            "calendar",
            "Google Calendar",
            [
                "See your calendars and their events",
                "View and edit events on all your calendars",
                "See, edit, share and delete all your calendars",
            ],
        ),
        (
            "outlook-mail",
            "microsoft",
            "mail",
            "Outlook mail",
            ["Send email as you", "Read your email", "Read your profile"],
        ),
        (
            "outlook-calendar",
            "microsoft",
            "calendar",
            "Outlook calendar",
            ["Read and change your calendars", "Read your profile"],
        ),
    ],
)
async def test_connect_through_the_consent_page_shows_the_status(
    web, sandbox, tenants: Tenants, card, provider, kind, label, permissions
):
    token = await sign_in(web, tenants.alice)
    email = f"alice.{card}@example.test"

    done = await connect_oauth(web, token, sandbox, card, email)

    assert done.headers["location"] == (
        f"{PAGE}?integration=connected&provider={provider}&kind={kind}"
    )
    page = (await web.get(done.headers["location"])).text
    assert f"Connected {label} as {email}." in flashes(page)
    shown = card_html(page, card)
    assert "integration-highlight" in shown
    assert state_of(page, card) == "connected"
    text = words(shown)
    assert email in text
    assert "Connected" in text
    assert "Last refresh not yet" in text
    for permission in permissions:
        assert permission in text
    assert "feature-off" not in shown  # everything was granted
    assert "Reconnect" in text
    assert "Disconnect" in text
    # the other cards stay as they were
    others = [k for k in CARD_TITLES if k != card]
    assert all(state_of(page, k) == "not-connected" for k in others)
    assert f"Connected {CARD_TITLES[card]}" in words(page) or label in words(page)
    activity = words(page.split('id="activity-heading"', 1)[1])
    assert "Connected" in activity
    assert f"Connected as {email}." in activity


async def test_last_refresh_then_needs_reconnect_then_reconnect(
    web, sandbox, integrations: Integrations, tenants: Tenants
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    email = "alice.calendar@gmail.test"
    await connect_oauth(web, token, sandbox, "google-calendar", email)

    await integrations.refresh_if_needed(alice.ctx, CALENDAR, G, force=True)
    view = await integrations.get_integration(alice.ctx, CALENDAR, G)
    assert view.info.last_refreshed_at is not None
    page = (await web.get(PAGE)).text
    assert f"Last refresh {instant(view.info.last_refreshed_at)}" in words(
        card_html(page, "google-calendar")
    )
    assert "Access renewed" in words(page)

    # The person removes crmflow's access at Google: the next refresh fails.
    await sandbox.control("google", "POST", "grants/revoke", json={"email": email})
    with pytest.raises(AuthError):
        await integrations.refresh_if_needed(alice.ctx, CALENDAR, G, force=True)
    page = (await web.get(PAGE)).text
    shown = card_html(page, "google-calendar")
    assert state_of(page, "google-calendar") == "needs-reconnect"
    assert "Needs reconnect" in words(shown)
    assert "Google Calendar needs you to reconnect" in words(shown)
    assert re.search(r'class="btn btn-small btn-primary">Reconnect', shown)
    assert "Needs reconnect" in words(page.split('id="activity-heading"', 1)[1])

    started = await web.post(
        f"{PAGE}/{view.info.id}/reconnect", data={"csrf_token": token}
    )
    assert started.status_code == 303
    params = query_of(started.headers["location"])
    assert started.headers["location"].startswith(sandbox.google_url)
    assert params["prompt"] == "consent"
    assert params["login_hint"] == email
    back = await sandbox.consent(started.headers["location"], email)
    done = await web.get(path_of(back))
    page = (await web.get(done.headers["location"])).text
    assert f"Reconnected Google Calendar as {email}." in flashes(page)
    assert state_of(page, "google-calendar") == "connected"
    assert integration_id(page, "google-calendar") == view.info.id


async def test_partial_consent_names_what_is_missing_and_grants_it(
    web, sandbox, tenants: Tenants
):
    token = await sign_in(web, tenants.alice)
    email = "alice@gmail.test"
    done = await connect_oauth(
        web, token, sandbox, "gmail", email, untick=(sc.GMAIL_SEND,)
    )
    page = (await web.get(done.headers["location"])).text
    assert any("some features are off" in f for f in flashes(page))
    shown = card_html(page, "gmail")
    assert state_of(page, "gmail") == "connected"
    off = re.search(
        r'<li class="feature feature-off" data-feature="send_email">.*?</li>',
        shown,
        re.S,
    )
    assert off, "sending is not shown as off"
    assert (
        "Off: 'Send email from the CRM' needs permission to send email on your "
        "behalf. Use 'Grant access' to allow it." in words(off.group(0))
    )
    assert "Grant access" in words(off.group(0))
    assert 'data-feature="read_email"' in shown
    assert 'class="feature feature-on" data-feature="read_email"' in shown
    granted = words(
        shown.split("Permissions granted", 1)[1].split("What crmflow", 1)[0]
    )
    assert "Send email on your behalf" not in granted
    assert "Read your email" in granted

    gmail_id = integration_id(page, "gmail")
    started = await web.post(
        f"{PAGE}/{gmail_id}/grant",
        data={"csrf_token": token, "feature": "send_email"},
    )
    assert started.status_code == 303
    params = query_of(started.headers["location"])
    assert set(params["scope"].split()) == {"openid", sc.GOOGLE_EMAIL, sc.GMAIL_SEND}
    assert params["include_granted_scopes"] == "true"
    back = await sandbox.consent(started.headers["location"], email)
    done = await web.get(path_of(back))
    page = (await web.get(done.headers["location"])).text
    shown = card_html(page, "gmail")
    assert "feature-off" not in shown
    assert "Send email on your behalf" in words(shown)


async def test_a_shared_google_grant_is_told_apart_and_kept_on_disconnect(
    web, sandbox, tenants: Tenants
):
    """Google grants per account: Calendar's token also carries Gmail's scopes."""
    token = await sign_in(web, tenants.alice)
    email = "alice@gmail.test"
    await connect_oauth(web, token, sandbox, "gmail", email)
    await connect_oauth(web, token, sandbox, "google-calendar", email)
    page = (await web.get(PAGE)).text
    shown = card_html(page, "google-calendar")
    granted = re.search(r'<ul class="perm-list">(.*?)</ul>', shown, re.S)
    assert granted
    assert "See your calendars and their events" in words(granted.group(1))
    assert "Read your email" not in words(granted.group(1))
    assert "The same Google grant also allows, for your other connections: " in words(
        shown
    )
    assert "read your email" in words(shown)

    item = integration_id(page, "google-calendar")
    confirm = await web.get(f"{PAGE}/{item}/disconnect")
    assert (
        "Google's access grant stays in place, because your Gmail connection uses "
        "the same Google account" in words(confirm.text)
    )
    done = await web.post(
        f"{PAGE}/{item}/disconnect", data={"csrf_token": token, "confirm": "yes"}
    )
    page = (await web.get(done.headers["location"])).text
    assert any("Google's access grant was not revoked" in f for f in flashes(page))
    assert state_of(page, "gmail") == "connected"
    assert state_of(page, "google-calendar") == "not-connected"


async def test_a_provider_without_an_oauth_client_cannot_be_connected(
    settings: Settings, services: Services, sandbox: Sandbox, tenants: Tenants
):
    unset = settings.model_copy(
        update={"microsoft_client_id": None, "microsoft_client_secret": None}
    )
    app = _app(unset, services, new_integrations(services, unset, sandbox, Pauses()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE_URL
    ) as web:
        token = await sign_in(web, tenants.alice)
        page = (await web.get(PAGE)).text
        for key in ("outlook-mail", "outlook-calendar"):
            shown = card_html(page, key)
            assert (
                "Microsoft is not set up for Org A yet. Register your organization's "
                "Microsoft OAuth client" in words(shown)
            )
            assert "disabled" in shown
            assert f"{PAGE}/connect/{key}" not in shown
        assert "disabled" not in card_html(page, "gmail")
        refused = await web.post(
            f"{PAGE}/connect/outlook-mail", data={"csrf_token": token}
        )
    assert refused.status_code == 409
    assert '<div class="form-alert" role="alert">' in card_html(
        refused.text, "outlook-mail"
    )
    # members are told to ask an administrator
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE_URL
    ) as web:
        await sign_in(web, tenants.amy)
        page = (await web.get(PAGE)).text
    assert (
        "Not available yet: an administrator of Org A must set up Microsoft for "
        "crmflow first." in words(card_html(page, "outlook-calendar"))
    )
    assert "CRMFLOW_MICROSOFT_CLIENT_ID" not in page


# ------------------------------------------------------------------ security


async def test_every_post_needs_the_csrf_token(
    web, flow: Flow, sandbox, tenants: Tenants, admin_db: Database, integrations
):
    alice = tenants.alice
    connected = await flow.connect(alice.ctx, G, CALENDAR, "alice@gmail.test")
    item = connected.integration.id
    token = await sign_in(web, alice)
    flows_before = await oauth_flows(admin_db)
    posts = {
        f"{PAGE}/connect/gmail": {},
        f"{PAGE}/{item}/grant": {"feature": "manage_calendars"},
        f"{PAGE}/{item}/reconnect": {},
        f"{PAGE}/{item}/disconnect": {"confirm": "yes"},
        f"{PAGE}/imap": {
            "preset": "custom",
            "email": "a@example.test",
            "password": TYPED_PASSWORD,
            "imap_host": "127.0.0.1",
            "imap_port": "1",
            "imap_security": "none",
            "smtp_host": "127.0.0.1",
            "smtp_port": "1",
            "smtp_security": "none",
        },
        f"{PAGE}/caldav": {
            "preset": "custom",
            "url": "http://127.0.0.1:1/",
            "username": "a",
            "password": TYPED_PASSWORD,
        },
    }
    for path, data in posts.items():
        for sent in ({}, {"csrf_token": "x" + token}):
            response = await web.post(path, data={**data, **sent})
            assert response.status_code == 403, path
            assert "This form has expired" in response.text
            assert TYPED_PASSWORD not in response.text
    assert await oauth_flows(admin_db) == flows_before
    views = await integrations.list_integrations(alice.ctx)
    assert [v.info.id for v in views] == [item]


async def test_another_users_integration_is_404_on_every_action(
    web, flow: Flow, tenants: Tenants, integrations: Integrations
):
    amy, bob = tenants.amy, tenants.bob  # same organization / another one
    theirs = [
        (await flow.connect(amy.ctx, G, CALENDAR, "amy@gmail.test")).integration.id,
        (await flow.connect(bob.ctx, G, GMAIL, "bob@gmail.test")).integration.id,
        uuid.uuid4(),
    ]
    token = await sign_in(web, tenants.alice)
    for item in theirs:
        for method, path, data in (
            ("GET", f"{PAGE}/{item}/disconnect", None),
            ("POST", f"{PAGE}/{item}/disconnect", {"confirm": "yes"}),
            ("POST", f"{PAGE}/{item}/disconnect", {}),
            ("POST", f"{PAGE}/{item}/grant", {"feature": "manage_calendars"}),
            ("POST", f"{PAGE}/{item}/reconnect", {}),
            ("GET", f"{PAGE}/imap?reconnect={item}", None),
            ("GET", f"{PAGE}/caldav?reconnect={item}", None),
        ):
            if data is None:
                response = await web.get(path)
            else:
                response = await web.post(path, data={**data, "csrf_token": token})
            assert response.status_code == 404, (method, path)
            assert "amy@gmail.test" not in response.text
            assert "bob@gmail.test" not in response.text
    malformed = await web.get(f"{PAGE}/not-an-id/disconnect")
    assert malformed.status_code == 404
    # nothing happened to theirs
    assert (await integrations.get_integration(amy.ctx, CALENDAR, G)).info.email == (
        "amy@gmail.test"
    )
    assert (await integrations.get_integration(bob.ctx, GMAIL, G)).info.email == (
        "bob@gmail.test"
    )
    assert state_of((await web.get(PAGE)).text, "google-calendar") == "not-connected"


async def test_disconnect_needs_the_confirmation(
    web, sandbox, tenants: Tenants, integrations: Integrations
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    email = "alice@gmail.test"
    await connect_oauth(web, token, sandbox, "google-calendar", email)
    page = (await web.get(PAGE)).text
    item = integration_id(page, "google-calendar")
    assert f'href="{PAGE}/{item}/disconnect"' in card_html(page, "google-calendar")

    confirm = await web.get(f"{PAGE}/{item}/disconnect")
    assert confirm.status_code == 200
    text = words(confirm.text)
    assert "Disconnect Google Calendar?" in text
    assert f"crmflow asks Google to revoke its access to {email}." in text
    assert "Appointments already in the CRM stay" in text
    assert 'name="confirm" value="yes"' in confirm.text

    # A POST without the confirmation only asks (again).
    unconfirmed = await web.post(
        f"{PAGE}/{item}/disconnect", data={"csrf_token": token}
    )
    assert unconfirmed.status_code == 200
    assert "Disconnect Google Calendar?" in words(unconfirmed.text)
    assert (await integrations.get_integration(alice.ctx, CALENDAR, G)).info.id == item

    done = await web.post(
        f"{PAGE}/{item}/disconnect", data={"csrf_token": token, "confirm": "yes"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == PAGE
    page = (await web.get(PAGE)).text
    assert (
        f"Disconnected Google Calendar ({email}); crmflow deleted its tokens. "
        "Access was revoked at Google." in flashes(page)
    )
    assert state_of(page, "google-calendar") == "not-connected"
    assert "Not connected" in words(card_html(page, "google-calendar"))
    activity = words(page.split('id="activity-heading"', 1)[1])
    assert activity.index("Disconnected") < activity.index("Connected as")
    assert await integrations.list_integrations(alice.ctx) == []
    revokes = [e for e in await sandbox.requests() if e["path"].endswith("/revoke")]
    assert len(revokes) == 1


# ------------------------------------------------------------ password forms


async def test_mail_form_offers_presets_with_the_app_password_hint(
    web, tenants: Tenants
):
    await sign_in(web, tenants.alice)
    response = await web.get(f"{PAGE}/imap")
    assert response.status_code == 200
    page = response.text
    assert '<option value="icloud" selected>iCloud Mail</option>' in page
    assert '<option value="custom">Other mail server' in page
    icloud = re.search(
        r'<div class="preset-help" data-preset-help="icloud">(.*?)</div>', page, re.S
    )
    assert icloud, "the iCloud help is not shown"
    assert "App-Specific Passwords" in words(icloud.group(1))
    assert 'data-preset-help="fastmail" hidden' in page
    assert '<input id="password" name="password" type="password" value=""' in page
    custom = await web.get(f"{PAGE}/imap?preset=custom")
    assert '<option value="custom" selected>' in custom.text


async def test_mail_form_errors_keep_the_input_but_never_the_password(
    web, tenants: Tenants, integrations: Integrations
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    typed = {
        "csrf_token": token,
        "preset": "custom",
        "email": "alice@example.test",
        "username": "alice-login",
        "imap_host": "127.0.0.1",
        "imap_port": "abc",
        "imap_security": "none",
        "smtp_host": "",
        "smtp_port": "587",
        "smtp_security": "starttls",
        "password": TYPED_PASSWORD,
    }
    invalid = await web.post(f"{PAGE}/imap", data=typed)
    assert invalid.status_code == 422
    page = invalid.text
    assert TYPED_PASSWORD not in page
    assert "Enter the IMAP port as a number from 1 to 65535" in page
    assert "Enter the SMTP server's host name" in words(page)
    assert (
        'id="imap_port" name="imap_port" type="text" inputmode="numeric" value="abc"'
        in page
    )
    assert 'value="alice@example.test"' in page
    assert 'value="alice-login"' in page
    assert '<option value="custom" selected>' in page
    assert "enter it again" in page

    port = free_port()  # nothing listens there
    unreachable = await web.post(
        f"{PAGE}/imap",
        data={**typed, "imap_port": str(port), "smtp_host": "127.0.0.1"},
    )
    assert unreachable.status_code == 422
    alert = re.search(
        r'<div class="form-alert" role="alert">(.*?)</div>', unreachable.text, re.S
    )
    assert alert
    assert f"127.0.0.1:{port}" in words(alert.group(1))
    assert "refused" in words(alert.group(1))
    assert TYPED_PASSWORD not in unreachable.text
    assert f'value="{port}"' in unreachable.text

    no_password = await web.post(f"{PAGE}/imap", data={**typed, "password": ""})
    assert no_password.status_code == 422
    assert 'id="password-error"' in no_password.text
    assert await integrations.list_integrations(alice.ctx) == []


@pytest.mark.servers
async def test_mail_connects_against_dovecot_and_smtp_then_disconnects(
    web, dovecot, smtp_server, tenants: Tenants, integrations: Integrations
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    address = "alice@example.test"
    typed = {
        "csrf_token": token,
        "preset": "custom",
        "email": address,
        "imap_host": dovecot.host,
        "imap_port": str(dovecot.imaps_port),
        "imap_security": "tls",
        "smtp_host": smtp_server.host,
        "smtp_port": str(smtp_server.tls_port),
        "smtp_security": "tls",
    }
    refused = await web.post(f"{PAGE}/imap", data={**typed, "password": TYPED_PASSWORD})
    assert refused.status_code == 422
    assert TYPED_PASSWORD not in refused.text
    assert "refused this user name or password" in refused.text
    assert 'id="password-error"' in refused.text
    assert f'value="{dovecot.imaps_port}"' in refused.text
    assert await integrations.list_integrations(alice.ctx) == []

    password = dovecot.users[address]
    done = await web.post(f"{PAGE}/imap", data={**typed, "password": password})
    assert done.status_code == 303, done.text
    page = (await web.get(done.headers["location"])).text
    assert (
        f"Connected IMAP/SMTP mail as {address}: crmflow signed in to "
        f"{dovecot.host} (IMAP) and {smtp_server.host} (SMTP)." in flashes(page)
    )
    assert password not in page
    shown = words(card_html(page, "imap-mail"))
    assert state_of(page, "imap-mail") == "connected"
    assert f"IMAP server {dovecot.host}:{dovecot.imaps_port} (TLS)" in shown
    assert f"SMTP server {smtp_server.host}:{smtp_server.tls_port} (TLS)" in shown
    assert address in shown

    item = integration_id(page, "imap-mail")
    again = await web.post(f"{PAGE}/{item}/reconnect", data={"csrf_token": token})
    assert again.status_code == 303
    assert again.headers["location"] == f"{PAGE}/imap?reconnect={item}"
    form = (await web.get(again.headers["location"])).text
    assert "Reconnect iCloud or IMAP mail" in form
    assert f'value="{dovecot.imaps_port}"' in form
    assert password not in form

    confirm = await web.get(f"{PAGE}/{item}/disconnect")
    assert "crmflow deletes the stored password" in words(confirm.text)
    gone = await web.post(
        f"{PAGE}/{item}/disconnect", data={"csrf_token": token, "confirm": "yes"}
    )
    assert gone.status_code == 303
    page = (await web.get(PAGE)).text
    assert state_of(page, "imap-mail") == "not-connected"
    assert await integrations.list_integrations(alice.ctx) == []


async def test_calendar_form_errors_keep_the_input_but_never_the_password(
    web, tenants: Tenants, integrations: Integrations
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    form = await web.get(f"{PAGE}/caldav")
    assert '<option value="nextcloud" data-needs-url>Nextcloud</option>' in form.text
    missing = await web.post(
        f"{PAGE}/caldav",
        data={
            "csrf_token": token,
            "preset": "nextcloud",
            "username": "",
            "password": "",
        },
    )
    assert missing.status_code == 422
    assert "Enter your server's address" in words(missing.text)
    assert "Enter the user name you sign in with." in missing.text
    assert 'id="password-error"' in missing.text

    port = free_port()
    unreachable = await web.post(
        f"{PAGE}/caldav",
        data={
            "csrf_token": token,
            "preset": "custom",
            "url": f"http://127.0.0.1:{port}/dav/",
            "username": "alice",
            "password": TYPED_PASSWORD,
        },
    )
    assert unreachable.status_code == 422
    assert TYPED_PASSWORD not in unreachable.text
    assert f'value="http://127.0.0.1:{port}/dav/"' in unreachable.text
    assert 'value="alice"' in unreachable.text
    alert = re.search(
        r'<div class="form-alert" role="alert">(.*?)</div>', unreachable.text, re.S
    )
    assert alert
    assert "Nothing was connected." in words(alert.group(1))
    assert await integrations.list_integrations(alice.ctx) == []


@pytest.mark.servers
async def test_calendar_connects_against_radicale_and_lists_its_calendars(
    web, radicale, tenants: Tenants, integrations: Integrations
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    typed = {
        "csrf_token": token,
        "preset": "custom",
        "url": radicale.url,
        "username": "alice",
        "email": "alice@example.test",
    }
    refused = await web.post(
        f"{PAGE}/caldav", data={**typed, "password": TYPED_PASSWORD}
    )
    assert refused.status_code == 422
    assert TYPED_PASSWORD not in refused.text
    assert 'id="password-error"' in refused.text
    assert f'value="{radicale.url}"' in refused.text

    password = radicale.users["alice"]
    done = await web.post(f"{PAGE}/caldav", data={**typed, "password": password})
    assert done.status_code == 303, done.text
    page = (await web.get(done.headers["location"])).text
    assert (
        "Connected CalDAV calendar as alice@example.test; found 1 calendar: Office."
        in flashes(page)
    )
    assert password not in page
    shown = card_html(page, "caldav-calendar")
    calendars = re.search(
        r'<ul class="chip-list calendar-list">(.*?)</ul>', shown, re.S
    )
    assert calendars
    assert words(calendars.group(1)) == "Office"
    assert f"Server {radicale.url}" in words(shown)
    view = (await integrations.list_integrations(alice.ctx))[0]
    assert view.info.provider is ProviderKey.CALDAV
