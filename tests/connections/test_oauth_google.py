"""Connecting Google over real HTTP: the REST start, Google's consent page driven
as a person would, the browser's redirect back to crmflow's callback.

Covers the authorization request (PKCE S256, offline access, incremental
authorization, only the enabled features' scopes, prompt=consent when
reconnecting), the stored row, partial consent with "Grant access", and every
rejected callback: state mismatch, another user's state, code replay, PKCE
mismatch, redirect URI mismatch, cancel, and the sign-in detour.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from crmflow.connections import scopes as sc
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.errors import ValidationFailed
from crmflow.providers.base import GrantRejected, ProviderError
from crmflow.sandbox.google.store import GoogleStore
from crmflow.store import models
from crmflow.store.integrations import IntegrationStatus, IntegrationStore
from tests.connections.conftest import csrf_of, sign_in, web_client
from tests.servers.sandbox import (
    DEV_BASE_URL,
    GOOGLE_CLIENT,
    GOOGLE_TOKEN_LIFETIME_S,
    PUBLIC_BASE_URL,
    path_of,
    query_of,
)

G = ProviderKey.GOOGLE
GMAIL = IntegrationKind.GMAIL
CAL = IntegrationKind.CALENDAR


async def _rows(admin_db, model=models.UserIntegration) -> int:
    async with admin_db.admin() as session:
        return int(await session.scalar(select(func.count()).select_from(model)))


async def test_connect_gmail_through_the_browser(
    web, flow, sandbox, tenants, services, integrations
):
    alice = tenants.alice
    await sign_in(web, alice)
    started = await web.post("/api/integrations/gmail/connect", headers=alice.headers)
    assert started.status_code == 200, started.text
    body = started.json()
    params = query_of(body["authorization_url"])
    assert body["authorization_url"].startswith(
        sandbox.google_url + "o/oauth2/v2/auth?"
    )
    assert params["client_id"] == GOOGLE_CLIENT[0]
    assert params["response_type"] == "code"
    assert params["redirect_uri"] == PUBLIC_BASE_URL + "/oauth/callback/google"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url SHA-256, no padding
    assert params["access_type"] == "offline"
    assert params["include_granted_scopes"] == "true"
    assert "prompt" not in params  # first connect
    # only what Gmail's features need, plus who the account is
    assert set(params["scope"].split()) == {
        "openid",
        sc.GOOGLE_EMAIL,
        sc.GMAIL_SEND,
        sc.GMAIL_READONLY,
        sc.GMAIL_MODIFY,
    }

    back = await sandbox.consent(body["authorization_url"], "alice@gmail.test")
    response = await web.get(path_of(back))
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/settings/integrations?integration=connected&provider=google&kind=gmail"
    )
    page = await web.get(response.headers["location"])
    assert "Connected Gmail as alice@gmail.test." in page.text

    async with services.db.tenant(alice.ctx) as session:
        store = IntegrationStore(session, services.vault)
        tokens = await store.load(G, GMAIL)
        info = await store.get(tokens.id)
    assert info.email == "alice@gmail.test"
    assert info.account_id  # Google's "sub"
    assert info.status is IntegrationStatus.CONNECTED
    assert {sc.GMAIL_SEND, sc.GMAIL_READONLY, sc.GMAIL_MODIFY} <= set(info.scopes)
    lifetime = info.expires_at - sandbox.state.clock.now()
    assert dt.timedelta(seconds=GOOGLE_TOKEN_LIFETIME_S - 60) < lifetime
    assert lifetime <= dt.timedelta(seconds=GOOGLE_TOKEN_LIFETIME_S)
    # the stored tokens are the ones Google issued
    identity = sandbox.state.extension(GoogleStore).identity.data
    assert tokens.access_token.reveal() in identity.access_tokens
    assert tokens.refresh_token.reveal() in identity.refresh_tokens
    calls = [e["apiMethod"] for e in await sandbox.requests()]
    assert calls == [
        "oauth.authorize",
        "oauth.consent",
        "oauth.token",
        "oauth.userinfo",
    ]
    events = await integrations.events(alice.ctx)
    assert [e.event.value for e in events] == ["connected"]


async def test_reconnect_updates_in_place_and_forces_consent(flow, tenants, services):
    ctx = tenants.alice.ctx
    first = await flow.connect(ctx, G, GMAIL, "alice@gmail.test")
    started = await flow.integrations.start_connect(ctx, GMAIL)
    params = query_of(started.authorization_url)
    assert started.reconnect
    assert params["prompt"] == "consent"
    assert params["login_hint"] == "alice@gmail.test"
    again = await flow.connect(ctx, G, GMAIL, "alice@gmail.test")
    assert again.reconnected
    assert again.integration.id == first.integration.id
    assert again.integration.connected_at == first.integration.connected_at
    events = [e.event.value for e in await flow.integrations.events(ctx)]
    assert events == ["reconnected", "connected"]


async def test_second_google_kind_asks_only_its_scopes_and_gets_a_refresh_token(
    flow, tenants, services
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, GMAIL, "alice@gmail.test")
    started = await flow.integrations.start_connect(ctx, CAL, G)
    params = query_of(started.authorization_url)
    assert set(params["scope"].split()) == {
        "openid",
        sc.GOOGLE_EMAIL,
        sc.CALENDAR,
        sc.CALENDAR_EVENTS,
        sc.CALENDAR_READONLY,
    }
    # The grant exists already: only a forced consent yields a refresh token.
    assert params["prompt"] == "consent"
    result = await flow.connect(ctx, G, CAL, "alice@gmail.test")
    assert result.integration.has_refresh_token
    assert result.report.complete


async def test_partial_consent_turns_features_off_and_grant_access_adds_them(
    web, flow, sandbox, tenants
):
    alice = tenants.alice
    await sign_in(web, alice)
    response = await flow.connect_over_http(
        web, alice, G, GMAIL, "alice@gmail.test", untick=(sc.GMAIL_SEND,)
    )
    assert response.status_code == 303
    page = await web.get(response.headers["location"])
    assert "some features are off" in page.text
    assert "send email on your behalf" in page.text

    got = (await web.get("/api/integrations/gmail", headers=alice.headers)).json()
    assert got["status"] == "connected"
    assert sc.GMAIL_SEND not in got["scopes"]
    features = {f["key"]: f for f in got["features"]}
    assert features["read_email"]["enabled"]
    assert features["organize_email"]["enabled"]
    assert features["stay_connected"]["enabled"]
    send = features["send_email"]
    assert not send["enabled"]
    assert send["missing_scopes"] == [sc.GMAIL_SEND]
    assert send["missing"] == ["send email on your behalf"]
    assert "Grant access" in send["message"]

    # "Grant access": ask for just the missing feature, incrementally
    more = await web.post(
        "/api/integrations/gmail/connect",
        headers=alice.headers,
        json={"features": ["send_email"]},
    )
    params = query_of(more.json()["authorization_url"])
    assert set(params["scope"].split()) == {"openid", sc.GOOGLE_EMAIL, sc.GMAIL_SEND}
    assert params["include_granted_scopes"] == "true"
    back = await sandbox.consent(more.json()["authorization_url"], "alice@gmail.test")
    assert (await web.get(path_of(back))).status_code == 303
    got = (await web.get("/api/integrations/gmail", headers=alice.headers)).json()
    assert all(f["enabled"] for f in got["features"] if not f["optional"])
    # the optional feature was neither asked for nor granted
    (imap_smtp,) = [f for f in got["features"] if f["key"] == "imap_smtp"]
    assert imap_smtp["optional"]
    assert not imap_smtp["enabled"]
    assert imap_smtp["missing_scopes"] == [sc.GMAIL_FULL]
    assert {sc.GMAIL_SEND, sc.GMAIL_READONLY, sc.GMAIL_MODIFY} <= set(got["scopes"])


async def test_state_mismatch_and_another_users_state_are_refused(
    app, web, flow, sandbox, tenants, admin_db
):
    alice, amy = tenants.alice, tenants.amy
    started = await flow.integrations.start_connect(alice.ctx, GMAIL)
    back = await sandbox.consent(started.authorization_url, "alice@gmail.test")
    q = query_of(back)

    await sign_in(web, alice)
    forged = await web.get(
        "/oauth/callback/google", params={"state": "forged-state", "code": q["code"]}
    )
    assert forged.status_code == 400
    assert "does not belong to you" in forged.text

    # Amy's session cannot use Alice's state (a CSRF'd callback)...
    async with web_client(app) as other:
        await sign_in(other, amy)
        stolen = await other.get(path_of(back))
    assert stolen.status_code == 400
    assert "does not belong to you" in stolen.text
    assert await _rows(admin_db) == 0
    # ...and Alice's own sign-in still completes afterwards.
    ok = await web.get(path_of(back))
    assert ok.status_code == 303
    assert await _rows(admin_db) == 1


async def test_replayed_callback_and_replayed_code_are_refused(
    web, flow, sandbox, tenants, admin_db
):
    alice = tenants.alice
    await sign_in(web, alice)
    started = await flow.integrations.start_connect(alice.ctx, GMAIL)
    back = await sandbox.consent(started.authorization_url, "alice@gmail.test")
    assert (await web.get(path_of(back))).status_code == 303

    replay = await web.get(path_of(back))
    assert replay.status_code == 400
    assert "already used" in replay.text

    # the same code under a fresh state: Google refuses a used code
    fresh = await flow.integrations.start_connect(alice.ctx, GMAIL)
    with pytest.raises(GrantRejected, match="already used"):
        await flow.integrations.complete_connect(
            alice.ctx,
            G,
            state=query_of(fresh.authorization_url)["state"],
            code=query_of(back)["code"],
        )
    assert await _rows(admin_db) == 1
    events = [e.event.value for e in await flow.integrations.events(alice.ctx)]
    assert events == ["connected"]


async def test_pkce_mismatch_is_refused(flow, sandbox, tenants, admin_db):
    """A code obtained in one sign-in, presented with another sign-in's state:
    Google checks the other sign-in's verifier against this code's challenge."""
    ctx = tenants.alice.ctx
    first = await flow.integrations.start_connect(ctx, GMAIL)
    second = await flow.integrations.start_connect(ctx, GMAIL)
    back = await sandbox.consent(first.authorization_url, "alice@gmail.test")
    with pytest.raises(GrantRejected, match="does not belong to this sign-in"):
        await flow.integrations.complete_connect(
            ctx,
            G,
            state=query_of(second.authorization_url)["state"],
            code=query_of(back)["code"],
        )
    assert await _rows(admin_db) == 0


async def test_redirect_uri_mismatches_are_refused(
    web, flow, sandbox, tenants, admin_db
):
    alice = tenants.alice
    unknown = await web.post(
        "/api/integrations/gmail/connect",
        headers=alice.headers,
        json={"redirect_uri": "https://evil.example/oauth/callback/google"},
    )
    assert unknown.status_code == 422
    assert "is not configured" in unknown.json()["detail"]
    assert await _rows(admin_db, models.OAuthFlow) == 0

    # the development URI is configured, so it may be used...
    dev_uri = DEV_BASE_URL + "/oauth/callback/google"
    dev = await flow.integrations.start_connect(alice.ctx, GMAIL, redirect_uri=dev_uri)
    assert query_of(dev.authorization_url)["redirect_uri"] == dev_uri
    # ...but a code issued for the public URI, presented to the dev sign-in, is
    # refused by Google: the redirect URIs differ.
    public = await flow.integrations.start_connect(alice.ctx, GMAIL)
    back = await sandbox.consent(public.authorization_url, "alice@gmail.test")
    with pytest.raises(ProviderError, match="redirect URI does not match"):
        await flow.integrations.complete_connect(
            alice.ctx,
            G,
            state=query_of(dev.authorization_url)["state"],
            code=query_of(back)["code"],
        )
    assert await _rows(admin_db) == 0


async def test_cancel_at_google_changes_nothing(web, flow, sandbox, tenants, admin_db):
    alice = tenants.alice
    await sign_in(web, alice)
    started = await flow.integrations.start_connect(alice.ctx, GMAIL)
    back = await sandbox.consent(
        started.authorization_url, "alice@gmail.test", deny=True
    )
    assert query_of(back)["error"] == "access_denied"
    response = await web.get(path_of(back))
    assert response.status_code == 303
    assert response.headers["location"].startswith(
        "/settings/integrations?integration=cancelled"
    )
    page = await web.get(response.headers["location"])
    assert "You cancelled the sign-in; nothing was changed." in page.text
    assert await _rows(admin_db) == 0
    with pytest.raises(ValidationFailed, match="already used"):
        await flow.integrations.complete_connect(
            alice.ctx, G, state=query_of(back)["state"], code="x"
        )


async def test_signed_out_callback_goes_through_login(app, flow, sandbox, tenants):
    alice = tenants.alice
    started = await flow.integrations.start_connect(alice.ctx, GMAIL)
    back = await sandbox.consent(started.authorization_url, "alice@gmail.test")
    async with web_client(app) as browser:
        response = await browser.get(path_of(back))
        assert response.status_code == 303
        login = response.headers["location"]
        assert login.startswith("/login?next=%2Foauth%2Fcallback%2Fgoogle%3F")
        page = await browser.get(login)
        signed = await browser.post(
            "/login",
            data={
                "csrf_token": csrf_of(page),
                "email": alice.email,
                "password": "password-" + alice.email,
                "next": query_of(login)["next"],
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == path_of(back)
        done = await browser.get(signed.headers["location"])
    assert done.status_code == 303
    assert "integration=connected" in done.headers["location"]
    view = await flow.integrations.get_integration(alice.ctx, GMAIL)
    assert view.info.email == "alice@gmail.test"


async def test_connect_button_starts_from_the_ui_with_csrf(web, sandbox, tenants):
    token = await sign_in(web, tenants.alice)
    refused = await web.post("/oauth/connect/google/gmail", data={})
    assert refused.status_code == 403
    response = await web.post(
        "/oauth/connect/google/gmail",
        data={"csrf_token": token, "feature": "send_email"},
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(sandbox.google_url + "o/oauth2/v2/auth?")
    assert set(query_of(location)["scope"].split()) == {
        "openid",
        sc.GOOGLE_EMAIL,
        sc.GMAIL_SEND,
    }
    unknown = await web.get("/oauth/callback/imap", params={"state": "x"})
    assert unknown.status_code == 404
