"""Microsoft Graph push, end to end, on SQLite and PostgreSQL.

crmflow is served on a real port. The sandbox's Graph checks the webhook
with the validation handshake before it creates a subscription, then POSTs
change and lifecycle notifications there over HTTP, as Graph does. A change
made through the sandbox's control API (an event edited in Outlook, a
message delivered) reaches the CRM through the webhook; forged, malformed
and replayed notifications trigger nothing; lifecycle events renew,
recreate or resync; subscriptions are renewed before they end and deleted
with their account.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from crmflow.domain.calendar_accounts import CalendarAccountInfo, SyncType
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.tenancy import TenantContext
from crmflow.jobs.runner import InProcessRunner
from crmflow.jobs.tasks import Outcome
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from crmflow.services.push import MICROSOFT_PATH
from crmflow.store import models
from crmflow.store.db import Database
from crmflow.store.schedule import ScheduleStore, SyncKind
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import INTERVAL, Clock
from tests.jobs.served import port, push, runner, served, settings, until
from tests.servers.sandbox import Sandbox

ALICE = "alice@contoso.test"

__all__ = ["port", "push", "runner", "served", "settings"]


async def _connect_calendar(
    flow: Flow, calendar_sync: CalendarSync, ctx: TenantContext
) -> CalendarAccountInfo:
    connected = await flow.connect(
        ctx, ProviderKey.MICROSOFT, IntegrationKind.CALENDAR, ALICE
    )
    choices = await calendar_sync.calendars(ctx, connected.integration.id)
    primary = next(c for c in choices if c.primary)
    return await calendar_sync.add_account(ctx, connected.integration.id, primary.id)


async def _subscriptions(sandbox: Sandbox) -> list[dict[str, Any]]:
    body = (await sandbox.control("microsoft", "GET", "subscriptions")).json()
    return list(body["subscriptions"])


async def _subscription(sandbox: Sandbox, kind: str) -> dict[str, Any]:
    (found,) = [s for s in await _subscriptions(sandbox) if s["kind"] == kind]
    return found


async def _next_sync(
    admin_db: Database, kind: SyncKind, account_id: uuid.UUID
) -> dt.datetime | None:
    async with admin_db.admin() as session:
        rows = await ScheduleStore(session).overview()
    (entry,) = [a for a in rows if a.kind is kind and a.account_id == account_id]
    return entry.next_sync_at


async def _becomes_due(
    admin_db: Database,
    kind: SyncKind,
    account_id: uuid.UUID,
    clock: Clock,
    scheduled: dt.datetime | None,
) -> None:
    """Wait until a notification has made the account due sooner than the
    schedule had it (``scheduled``), and move the runner's clock there."""
    assert scheduled is not None
    assert scheduled > clock.now

    async def check() -> bool:
        due = await _next_sync(admin_db, kind, account_id)
        return due is not None and due < scheduled

    await until(check)
    due = await _next_sync(admin_db, kind, account_id)
    assert due is not None
    clock.now = max(clock.now, due)


async def _outlook_event(sandbox: Sandbox, subject: str) -> dict[str, Any]:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    response = await sandbox.control(
        "microsoft",
        "POST",
        f"users/{ALICE}/events",
        json={
            "subject": subject,
            "start": {
                "dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
            "end": {
                "dateTime": (start + dt.timedelta(hours=1)).strftime(
                    "%Y-%m-%dT%H:%M:%S"
                ),
                "timeZone": "UTC",
            },
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_an_outlook_change_reaches_the_crm_through_the_webhook(
    served: str,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    account = await _connect_calendar(flow, calendar_sync, ctx)
    assert await runner.tick() == {Outcome.OK: 1}
    # Graph validated the URL before creating the subscription
    assert len(await sandbox.requests("graph.subscriptions.create")) == 1
    sub = await _subscription(sandbox, "events")
    assert sub["notification_url"] == served + MICROSOFT_PATH
    assert sub["lifecycle_url"] == served + MICROSOFT_PATH
    assert sub["container"] is not None  # this calendar's events, not all
    assert await _next_sync(admin_db, SyncKind.CALENDAR, account.id) == (
        clock.now + INTERVAL
    )

    scheduled = await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
    await _outlook_event(sandbox, "Pushed from Outlook")
    await _becomes_due(admin_db, SyncKind.CALENDAR, account.id, clock, scheduled)
    assert await runner.tick() == {Outcome.OK: 1}
    (latest, *_older) = await calendar_sync.runs(ctx, account.id)
    assert (latest.sync_type, latest.events_imported) == (SyncType.WEBHOOK, 1)
    # the subscription was live: no second one
    assert len(await sandbox.requests("graph.subscriptions.create")) == 1
    # the next run, without a notification, is a scheduled one again
    clock.advance(INTERVAL)
    assert await runner.tick() == {Outcome.OK: 1}
    (latest, *_older) = await calendar_sync.runs(ctx, account.id)
    assert latest.sync_type is SyncType.SCHEDULED


async def test_a_message_delivered_in_outlook_reaches_the_crm_through_the_webhook(
    served: str,
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    account = await connect_mailbox(flow, mail, ctx, ALICE, ProviderKey.MICROSOFT)
    assert await runner.tick() == {Outcome.OK: 1}
    sub = await _subscription(sandbox, "messages")
    assert (sub["resource"], sub["container"]) == ("me/messages", None)

    scheduled = await _next_sync(admin_db, SyncKind.MAIL, account.id)
    delivered = await sandbox.control(
        "microsoft",
        "POST",
        f"users/{ALICE}/messages",
        json={"message": {"subject": "Quote request", "body": {"content": "Hi"}}},
    )
    assert delivered.status_code == 201, delivered.text
    await _becomes_due(admin_db, SyncKind.MAIL, account.id, clock, scheduled)
    assert await runner.tick() == {Outcome.OK: 1}
    page, total = await mail.messages(ctx)
    assert total == 1
    assert page[0].subject == "Quote request"


async def _post(url: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body)


async def test_forged_malformed_and_replayed_notifications_do_nothing(
    served: str,
    services,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    account = await _connect_calendar(flow, calendar_sync, tenants.alice.ctx)
    await runner.tick()
    sub = await _subscription(sandbox, "events")
    before = await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
    url = served + MICROSOFT_PATH
    announced: list[bool] = []
    services.push_listeners.append(lambda: announced.append(True))
    genuine = {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": sub["expiration"],
        "changeType": "updated",
        "resource": "Users/x/Events/AAMk1",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": "Users/x/Events/AAMk1",
            "@odata.etag": 'W/"DwAAABYAAAA1"',
            "id": "AAMk1",
        },
        "clientState": sub["client_state"],
        "tenantId": str(uuid.uuid4()),
    }

    # the validation handshake: the URL-decoded token back as text/plain
    async with httpx.AsyncClient() as http:
        token = "Validation: Testing client application reachability 1+1=2"
        echoed = await http.post(url, params={"validationToken": token})
    assert echoed.status_code == 200
    assert echoed.headers["content-type"].startswith("text/plain")
    assert echoed.text == token

    for forged in (
        genuine | {"clientState": "guessed"},
        genuine | {"subscriptionId": str(uuid.uuid4())},
        {k: v for k, v in genuine.items() if k != "clientState"},
        genuine | {"clientState": sub["client_state"] + "x"},
    ):
        response = await _post(url, {"value": [forged]})
        assert (response.status_code, response.content) == (403, b""), forged
    for malformed in ({"value": []}, {"value": "x"}, [genuine], {"value": [1]}):
        assert (await _post(url, malformed)).status_code == 400, malformed
    async with httpx.AsyncClient() as http:
        not_json = await http.post(url, content=b"\xff{")

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(40):
                yield b" " * 50_000

        # chunked, no Content-Length: read up to the cap only
        too_big = await http.post(url, content=chunks())
    assert not_json.status_code == 400
    assert too_big.status_code == 413
    assert (await _post(url, {"value": [genuine] * 1001})).status_code == 400
    assert await _next_sync(admin_db, SyncKind.CALENDAR, account.id) == before
    assert announced == []  # no runner was woken

    # genuine, in a batch with a forged item: 202, the calendar is due
    mixed = await _post(url, {"value": [genuine | {"clientState": "x"}, genuine]})
    assert mixed.status_code == 202
    assert announced == [True]
    await _becomes_due(admin_db, SyncKind.CALENDAR, account.id, clock, before)
    assert await runner.tick() == {Outcome.OK: 1}
    after_run = await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
    # the same change again is a replay: accepted, nothing due
    replayed = await _post(url, {"value": [genuine]})
    assert replayed.status_code == 202
    assert announced == [True]
    assert await _next_sync(admin_db, SyncKind.CALENDAR, account.id) == after_run
    # a new version of the item is a new change
    newer = genuine | {
        "resourceData": genuine["resourceData"] | {"@odata.etag": 'W/"DwAAABYAAAA2"'}
    }
    assert (await _post(url, {"value": [newer]})).status_code == 202
    assert await _next_sync(admin_db, SyncKind.CALENDAR, account.id) != after_run
    # a change without a version cannot be told from the next one: never a
    # replay
    clock.now = max(
        clock.now, await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
    )
    assert await runner.tick() == {Outcome.OK: 1}
    unversioned = genuine | {"resourceData": {"id": "AAMk1"}}
    for _ in range(2):
        settled = await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
        assert (await _post(url, {"value": [unversioned]})).status_code == 202
        assert await _next_sync(admin_db, SyncKind.CALENDAR, account.id) != settled
        clock.now = max(
            clock.now, await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
        )
        assert await runner.tick() == {Outcome.OK: 1}


async def test_lifecycle_events_renew_recreate_and_resync(
    served: str,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    account = await _connect_calendar(flow, calendar_sync, ctx)
    await runner.tick()
    first = await _subscription(sandbox, "events")

    async def lifecycle(event: str, subscription: dict[str, Any]) -> None:
        scheduled = await _next_sync(admin_db, SyncKind.CALENDAR, account.id)
        response = await sandbox.control(
            "microsoft",
            "POST",
            f"subscriptions/{subscription['id']}/lifecycle",
            json={"event": event},
        )
        assert response.status_code == 200, response.text
        await _becomes_due(admin_db, SyncKind.CALENDAR, account.id, clock, scheduled)
        assert await runner.tick() == {Outcome.OK: 1}
        (latest, *_older) = await calendar_sync.runs(ctx, account.id)
        assert latest.sync_type is SyncType.WEBHOOK

    # reauthorizationRequired: renewed in place (PATCH), same subscription,
    # a later end (a minute on: not due by the schedule yet)
    await sandbox.advance_clock(60)
    clock.advance(dt.timedelta(minutes=1))
    await lifecycle("reauthorizationRequired", first)
    (patch,) = await sandbox.requests("graph.subscriptions.update")
    assert first["id"] in patch["path"]
    renewed = await _subscription(sandbox, "events")
    assert renewed["id"] == first["id"]
    assert renewed["expiration"] > first["expiration"]

    # missed: a resync, the subscription stays
    await lifecycle("missed", renewed)
    assert (await _subscription(sandbox, "events"))["id"] == first["id"]
    assert len(await sandbox.requests("graph.subscriptions.create")) == 1

    # subscriptionRemoved: a new subscription, then the resync
    await lifecycle("subscriptionRemoved", renewed)
    again = await _subscription(sandbox, "events")
    assert again["id"] != first["id"]
    assert again["client_state"] != first["client_state"]
    assert len(await sandbox.requests("graph.subscriptions.create")) == 2


async def test_a_subscription_near_its_end_is_renewed_and_deleted_with_its_account(
    served: str,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    account = await _connect_calendar(flow, calendar_sync, ctx)
    await runner.tick()
    first = await _subscription(sandbox, "events")
    ends = dt.datetime.fromisoformat(first["expiration"])
    # Graph allows under seven days: crmflow asks for nearly all of it
    assert dt.timedelta(days=6, hours=23) < ends - sandbox.state.clock.now()
    await sandbox.advance_clock(6.5 * 24 * 3600)
    clock.advance(dt.timedelta(days=6, hours=12))
    assert await runner.tick() == {Outcome.OK: 1}
    assert len(await sandbox.requests("graph.subscriptions.update")) == 1
    renewed = await _subscription(sandbox, "events")
    assert renewed["id"] == first["id"]
    assert dt.datetime.fromisoformat(renewed["expiration"]) > ends

    await calendar_sync.remove_account(ctx, account.id)
    assert await _subscriptions(sandbox) == []
    assert len(await sandbox.requests("graph.subscriptions.delete")) == 1


async def test_disconnecting_deletes_the_subscriptions_before_the_grant_goes(
    served: str,
    web: httpx.AsyncClient,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    tenants,
) -> None:
    """Once the grant is revoked crmflow cannot delete a subscription, and
    Graph would keep notifying for days: disconnecting deletes them first,
    the mail integration's only its mailbox's."""
    ctx = tenants.alice.ctx
    await _connect_calendar(flow, calendar_sync, ctx)
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE, ProviderKey.MICROSOFT)
    assert await runner.tick() == {Outcome.OK: 2}
    events = await _subscription(sandbox, "events")
    assert (await _subscription(sandbox, "messages"))["id"] != events["id"]

    gone = await web.delete(
        "/api/integrations/mail",
        params={"provider": "microsoft"},
        headers=tenants.alice.headers,
    )
    assert gone.status_code == 200, gone.text
    assert [s["id"] for s in await _subscriptions(sandbox)] == [events["id"]]
    (deleted,) = await sandbox.requests("graph.subscriptions.delete")
    assert deleted["status"] == 204
    async with admin_db.admin() as session:
        left = await session.scalars(
            select(models.PushChannel.email_account_id).where(
                models.PushChannel.email_account_id.is_not(None)
            )
        )
        assert list(left) == []
    # the mailbox is kept, detached, as before
    assert (await mail.account(ctx, mailbox.id)).integration_id is None
