"""Disconnecting: revocation at the provider (and what happens for Microsoft),
secrets deleted, dependent mail and calendar accounts kept detached, the audit
entry kept."""

from __future__ import annotations

import socket
import uuid

from sqlalchemy import func, select

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.store import models
from crmflow.store.integrations import IntegrationStore
from crmflow.store.linked_accounts import DISCONNECTED
from tests.servers.sandbox import GOOGLE_CLIENT

G, M = ProviderKey.GOOGLE, ProviderKey.MICROSOFT
GMAIL, CAL, MAIL = IntegrationKind.GMAIL, IntegrationKind.CALENDAR, IntegrationKind.MAIL


async def _attach_accounts(services, ctx, integration_id: uuid.UUID) -> None:
    """A mail account with one stored message and a synced calendar account."""
    async with services.db.tenant(ctx) as session:
        email = models.EmailAccount(
            organization_id=ctx.organization_id,
            user_id=ctx.user_id,
            integration_id=integration_id,
            provider="google",
            email_address="alice@gmail.test",
            sync_state={"historyId": "1234"},
        )
        calendar = models.CalendarAccount(
            organization_id=ctx.organization_id,
            user_id=ctx.user_id,
            integration_id=integration_id,
            provider="google",
            external_calendar_id="alice@gmail.test",
            name="Alice",
            sync_cursor="sync-token-1",
        )
        session.add_all([email, calendar])
        await session.flush()
        session.add(
            models.EmailMessage(
                organization_id=ctx.organization_id,
                user_id=ctx.user_id,
                email_account_id=email.id,
                provider_message_id="m1",
                subject="Quote",
            )
        )


async def test_disconnect_google_revokes_deletes_secrets_and_keeps_accounts(
    flow, sandbox, tenants, services, admin_db
):
    ctx = tenants.alice.ctx
    result = await flow.connect(ctx, G, GMAIL, "alice@gmail.test")
    integration_id = result.integration.id
    await _attach_accounts(services, ctx, integration_id)
    async with services.db.tenant(ctx) as session:
        tokens = await IntegrationStore(session, services.vault).load(G, GMAIL)

    done = await flow.integrations.disconnect(ctx, GMAIL)
    assert done.revocation == "revoked"
    assert done.detached.email_accounts == 1
    assert done.detached.calendar_accounts == 1
    assert len(await sandbox.requests("oauth.revoke")) == 1
    # Google agrees: the refresh token is dead
    dead = await sandbox.http.post(
        sandbox.google_url + "token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token.reveal(),
            "client_id": GOOGLE_CLIENT[0],
            "client_secret": GOOGLE_CLIENT[1],
        },
    )
    assert dead.status_code == 400
    assert dead.json()["error"] == "invalid_grant"

    async with admin_db.admin() as session:
        assert await session.get(models.UserIntegration, integration_id) is None
        email = (await session.scalars(select(models.EmailAccount))).one()
        calendar = (await session.scalars(select(models.CalendarAccount))).one()
        messages = await session.scalar(
            select(func.count()).select_from(models.EmailMessage)
        )
        events = list(
            await session.scalars(
                select(models.IntegrationEvent).order_by(
                    models.IntegrationEvent.created_at
                )
            )
        )
    assert (email.integration_id, email.status, email.sync_state) == (
        None,
        DISCONNECTED,
        {},
    )
    assert (calendar.integration_id, calendar.is_enabled, calendar.sync_cursor) == (
        None,
        False,
        None,
    )
    assert messages == 1  # what the account brought into the CRM stays
    assert [e.event for e in events] == ["connected", "disconnected"]
    # the audit entry outlives the row and says what happened
    assert events[-1].integration_id is None
    assert "revoked at Google" in events[-1].detail
    assert "kept, detached" in events[-1].detail
    listed = await flow.integrations.events(ctx)
    assert listed[0].detail == done.message


async def test_google_grant_shared_by_two_kinds_is_revoked_with_the_last(
    flow, sandbox, tenants
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, GMAIL, "alice@gmail.test")
    await flow.connect(ctx, G, CAL, "alice@gmail.test")
    first = await flow.integrations.disconnect(ctx, GMAIL)
    assert first.revocation == "kept"
    assert "same Google account" in first.message
    assert await sandbox.requests("oauth.revoke") == []
    # the calendar connection still works at Google
    assert await flow.integrations.refresh_if_needed(ctx, CAL, G, force=True)
    last = await flow.integrations.disconnect(ctx, CAL, G)
    assert last.revocation == "revoked"
    assert len(await sandbox.requests("oauth.revoke")) == 1


async def test_disconnect_microsoft_deletes_tokens_and_explains(
    flow, sandbox, tenants, admin_db
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, M, MAIL, "alice@contoso.test")
    seen = len(await sandbox.requests())
    done = await flow.integrations.disconnect(ctx, MAIL)
    assert done.revocation == "unsupported"
    assert "90 minutes" in done.message
    assert "account.live.com/consent/Manage" in done.message
    assert len(await sandbox.requests()) == seen  # nothing to call at Microsoft
    async with admin_db.admin() as session:
        rows = await session.scalar(
            select(func.count()).select_from(models.UserIntegration)
        )
    assert rows == 0


async def test_unreachable_google_does_not_stop_the_disconnect(
    flow, sandbox, tenants, admin_db, services, settings, pauses
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, GMAIL, "alice@gmail.test")
    # Google's token host stops answering (nothing listens on that port now)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    offline = Integrations(
        services.db,
        services.vault,
        settings.model_copy(update={"google_oauth2_url": dead}),
        clock=sandbox.state.clock.now,
        sleep=pauses,
    )
    done = await offline.disconnect(ctx, GMAIL)
    assert done.revocation == "failed"
    assert "Google could not be reached" in done.message
    assert "myaccount.google.com/permissions" in done.message
    async with admin_db.admin() as session:
        rows = await session.scalar(
            select(func.count()).select_from(models.UserIntegration)
        )
    assert rows == 0


async def test_disconnect_over_http(web, flow, tenants):
    alice = tenants.alice
    await flow.connect(alice.ctx, G, GMAIL, "alice@gmail.test")
    response = await web.delete("/api/integrations/gmail", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["revocation"] == "revoked"
    assert body["email"] == "alice@gmail.test"
    again = await web.delete("/api/integrations/gmail", headers=alice.headers)
    assert again.status_code == 404
    assert "revoked at Google" in body["message"]
