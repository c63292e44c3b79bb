"""The integrations REST API and Python API: listing, ambiguity, refresh,
events, errors in words, isolation between users, and tokens never in
plaintext in the database or the logs."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest

from crmflow.connections.errors import AmbiguousIntegration, ProviderNotConfigured
from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.errors import NotFound
from crmflow.store.integrations import IntegrationStore
from tests.connections.conftest import sign_in
from tests.servers.sandbox import GOOGLE_CLIENT, MICROSOFT_CLIENT, query_of

G, M = ProviderKey.GOOGLE, ProviderKey.MICROSOFT
GMAIL, CAL = IntegrationKind.GMAIL, IntegrationKind.CALENDAR


async def test_list_get_refresh_and_events_over_http(web, flow, sandbox, tenants):
    alice = tenants.alice
    h = alice.headers
    await flow.connect(alice.ctx, G, CAL, "alice@gmail.test")
    await flow.connect(alice.ctx, M, CAL, "alice@contoso.test")

    listed = (await web.get("/api/integrations", headers=h)).json()
    assert [(i["provider"], i["kind"]) for i in listed] == [
        ("google", "calendar"),
        ("microsoft", "calendar"),
    ]
    assert {i["label"] for i in listed} == {"Google Calendar", "Outlook calendar"}
    assert all(i["status"] == "connected" and i["oauth"] for i in listed)

    ambiguous = await web.get("/api/integrations/calendar", headers=h)
    assert ambiguous.status_code == 409
    assert ambiguous.json()["error"] == "AmbiguousIntegration"
    assert "provider=google|microsoft" in ambiguous.json()["detail"]
    one = await web.get("/api/integrations/calendar?provider=microsoft", headers=h)
    assert one.status_code == 200
    assert one.json()["email"] == "alice@contoso.test"
    assert (await web.get("/api/integrations/gmail", headers=h)).status_code == 404
    ambiguous_start = await web.post("/api/integrations/calendar/connect", headers=h)
    assert ambiguous_start.status_code == 409

    # not due: nothing is sent; forced: one refresh, and no token in the answer
    before = len(await sandbox.requests("oauth.token"))
    due = await web.post(
        "/api/integrations/calendar/refresh?provider=google", headers=h
    )
    assert due.status_code == 200, due.text
    assert len(await sandbox.requests("oauth.token")) == before
    forced = await web.post(
        "/api/integrations/calendar/refresh?provider=google&force=true", headers=h
    )
    assert forced.status_code == 200
    assert len(await sandbox.requests("oauth.token")) == before + 1
    assert forced.json()["integration"]["last_refreshed_at"] is not None
    token = await flow.integrations.refresh_if_needed(alice.ctx, CAL, G)
    assert token.reveal() not in forced.text

    events = (await web.get("/api/integrations/events", headers=h)).json()
    assert [e["event"] for e in events] == ["refreshed", "connected", "connected"]
    assert events[1]["detail"] == "Connected as alice@contoso.test."


async def test_needs_reauth_shows_reconnect_and_refresh_is_409(
    web, flow, sandbox, tenants
):
    alice = tenants.alice
    await flow.connect(alice.ctx, G, GMAIL, "alice@gmail.test")
    await sandbox.control(
        "google", "POST", "grants/revoke", json={"email": "alice@gmail.test"}
    )
    refused = await web.post(
        "/api/integrations/gmail/refresh?force=true", headers=alice.headers
    )
    assert refused.status_code == 409
    assert refused.json()["error"] == "GrantRejected"
    assert "Reconnect" in refused.json()["detail"]
    got = (await web.get("/api/integrations/gmail", headers=alice.headers)).json()
    assert got["status"] == "needs_reauth"
    assert got["reconnect_required"] is True
    assert got["message"].startswith("Gmail needs you to reconnect")
    again = await web.post("/api/integrations/gmail/refresh", headers=alice.headers)
    assert again.status_code == 409
    assert again.json()["error"] == "AuthError"


async def test_connect_errors_say_what_to_do(
    web, tenants, services, settings, sandbox, pauses
):
    h = tenants.alice.headers
    wrong = await web.post("/api/integrations/mail/connect?provider=google", headers=h)
    assert wrong.status_code == 422
    assert "google 'mail'" in wrong.json()["detail"]
    feature = await web.post(
        "/api/integrations/gmail/connect", headers=h, json={"features": ["fax"]}
    )
    assert feature.status_code == 422
    assert "send_email" in feature.json()["detail"]

    bare = Integrations(
        services.db,
        services.vault,
        settings.model_copy(
            update={"microsoft_client_id": None, "microsoft_client_secret": None}
        ),
        clock=sandbox.state.clock.now,
        sleep=pauses,
    )
    with pytest.raises(ProviderNotConfigured, match="CRMFLOW_MICROSOFT_CLIENT_ID"):
        await bare.start_connect(tenants.alice.ctx, IntegrationKind.MAIL)
    with pytest.raises(AmbiguousIntegration, match=r"provider=google\|microsoft"):
        await bare.start_connect(tenants.alice.ctx, CAL)


async def test_nobody_else_can_see_refresh_or_disconnect_an_integration(
    web, flow, sandbox, tenants
):
    alice, amy, bob = tenants.alice, tenants.amy, tenants.bob
    await flow.connect(alice.ctx, G, GMAIL, "alice@gmail.test")
    before = await sandbox.requests()
    for other in (amy, bob):  # same organization, another organization
        h = other.headers
        assert (await web.get("/api/integrations", headers=h)).json() == []
        assert (await web.get("/api/integrations/events", headers=h)).json() == []
        assert (await web.get("/api/integrations/gmail", headers=h)).status_code == 404
        refresh = await web.post(
            "/api/integrations/gmail/refresh?force=true", headers=h
        )
        assert refresh.status_code == 404
        gone = await web.delete("/api/integrations/gmail", headers=h)
        assert gone.status_code == 404
        for call in (
            flow.integrations.get_integration(other.ctx, GMAIL),
            flow.integrations.refresh_if_needed(other.ctx, GMAIL, force=True),
            flow.integrations.disconnect(other.ctx, GMAIL),
        ):
            with pytest.raises(NotFound):
                await call
    assert await sandbox.requests() == before  # nothing reached Google
    view = await flow.integrations.get_integration(alice.ctx, GMAIL)
    assert view.info.email == "alice@gmail.test"
    assert [e.event.value for e in await flow.integrations.events(alice.ctx)] == [
        "connected"
    ]


def _database_bytes(db_urls, request) -> bytes:
    if db_urls.backend == "sqlite":
        path = Path(db_urls.app_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    cluster = request.getfixturevalue("pg_cluster")
    with psycopg.connect(cluster.superuser_url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return b"".join(p.read_bytes() for p in cluster.data_dir.rglob("*") if p.is_file())


async def test_tokens_never_in_plaintext_in_the_database_or_logs(
    web, flow, sandbox, tenants, services, db_urls, request, caplog
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL + parameters
    alice = tenants.alice
    await sign_in(web, alice)
    response = await flow.connect_over_http(
        web, alice, M, IntegrationKind.MAIL, "alice@contoso.test"
    )
    assert response.status_code == 303
    await flow.integrations.refresh_if_needed(
        alice.ctx, IntegrationKind.MAIL, force=True
    )
    async with services.db.tenant(alice.ctx) as session:
        tokens = await IntegrationStore(session, services.vault).load(
            M, IntegrationKind.MAIL
        )
    secrets = {
        "access token": tokens.access_token.reveal(),
        "refresh token": tokens.refresh_token.reveal(),
        "client secret": MICROSOFT_CLIENT[1],
        "google client secret": GOOGLE_CLIENT[1],
    }
    assert "INSERT INTO user_integrations" in caplog.text
    assert "alice@contoso.test" in caplog.text
    raw = _database_bytes(db_urls, request)
    assert b"alice@contoso.test" in raw  # the row is there, tokens as ciphertext
    for what, value in secrets.items():
        assert value not in caplog.text, f"{what} in the logs"
        assert value.encode() not in raw, f"{what} in the database"
        assert value not in repr(tokens)


async def test_api_callback_needs_the_user_who_started_the_connect(
    web, flow, sandbox, tenants
):
    alice = tenants.alice
    started = await web.post("/api/integrations/gmail/connect", headers=alice.headers)
    back = query_of(
        await sandbox.consent(started.json()["authorization_url"], "alice@gmail.test")
    )
    body = {"state": back["state"], "code": back["code"]}
    for other in (tenants.amy, tenants.bob):
        refused = await web.post(
            "/api/integrations/callback/google", json=body, headers=other.headers
        )
        assert refused.status_code == 422
        assert "does not belong to you" in refused.json()["detail"]
    assert await sandbox.requests("oauth.token") == []  # the code was never sent
    done = await web.post(
        "/api/integrations/callback/google", json=body, headers=alice.headers
    )
    assert done.status_code == 200, done.text
    assert done.json()["message"] == "Connected Gmail as alice@gmail.test."
    assert done.json()["complete"] is True
    assert done.json()["integration"]["email"] == "alice@gmail.test"
