"""Google Calendar push, end to end, on SQLite and PostgreSQL.

crmflow is served on a real port; the sandbox's Google creates the watch
channel crmflow asks for and POSTs its notifications there over HTTP, as
Google does. A change made through the sandbox's control API reaches the CRM
through the webhook: the receiver marks the calendar due, the scheduler syncs
it, the appointment appears. Forged and replayed notifications are refused
and trigger nothing; a channel near its end is replaced and the old one
stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import event, select

from crmflow.bootstrap import Services
from crmflow.connections.service import Integrations
from crmflow.jobs.runner import InProcessRunner
from crmflow.jobs.tasks import Outcome
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.push import GOOGLE_CALENDAR_PATH, LIVE_KNOWN_FOR, PushChannels
from crmflow.store import models
from crmflow.store.db import Database
from crmflow.store.push import PushChannelStore
from crmflow.store.schedule import ScheduleStore, SyncKind
from tests.calendar_sync.conftest import GoogleAccount, connect_google
from tests.connections.conftest import Flow
from tests.jobs.conftest import INTERVAL, Clock
from tests.jobs.served import port, push, runner, served, settings, until
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"

__all__ = ["port", "push", "runner", "served", "settings"]


async def _notifications(sandbox: Sandbox) -> list[dict[str, Any]]:
    body = (await sandbox.control("google", "GET", "notifications")).json()
    return list(body["notifications"])


async def _delivered(sandbox: Sandbox, state: str, count: int) -> None:
    async def check() -> bool:
        done = [
            n
            for n in await _notifications(sandbox)
            if n["resourceState"] == state and n["outcome"] == "delivered"
        ]
        return len(done) >= count

    try:
        await until(check)
    except AssertionError:
        raise AssertionError(await _notifications(sandbox)) from None


async def _next_sync(admin_db: Database, account_id: uuid.UUID) -> dt.datetime | None:
    async with admin_db.admin() as session:
        rows = await ScheduleStore(session).overview()
    (entry,) = [
        a for a in rows if a.kind is SyncKind.CALENDAR and a.account_id == account_id
    ]
    return entry.next_sync_at


async def _last_message(admin_db: Database, channel_id: str) -> int:
    async with admin_db.admin() as session:
        found = await session.scalar(
            select(models.PushChannel.last_message).where(
                models.PushChannel.channel_id == channel_id
            )
        )
    assert found is not None
    return found


async def _channel(sandbox: Sandbox) -> dict[str, Any]:
    live = [
        c
        for c in (await sandbox.control("google", "GET", "channels")).json()["channels"]
        if not c.get("stopped")
    ]
    assert len(live) == 1, live
    return dict(live[0])


async def _connected(
    flow: Flow, sandbox: Sandbox, calendar_sync: CalendarSync, tenants
) -> GoogleAccount:
    return await connect_google(flow, sandbox, calendar_sync, tenants.alice.ctx, ALICE)


async def _watched(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    tenants,
) -> tuple[GoogleAccount, dict[str, Any], dict[str, str]]:
    """A connected calendar after its first run, whose channel's handshake
    came in: the account, the channel, and the headers of a genuine change
    notification (without a message number)."""
    google = await _connected(flow, sandbox, calendar_sync, tenants)
    await runner.tick()
    await _delivered(sandbox, "sync", 1)
    channel = await _channel(sandbox)
    genuine = {
        "X-Goog-Channel-ID": channel["id"],
        "X-Goog-Channel-Token": channel["token"],
        "X-Goog-Resource-ID": channel["resource_id"],
        "X-Goog-Resource-State": "exists",
    }
    return google, channel, genuine


async def test_a_change_at_google_reaches_the_crm_through_the_webhook(
    served: str,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    google = await _connected(flow, sandbox, calendar_sync, tenants)
    assert await runner.tick() == {Outcome.OK: 1}
    assert len(await sandbox.requests("calendar.events.watch")) == 1
    channel = await _channel(sandbox)
    assert channel["address"] == served + GOOGLE_CALENDAR_PATH
    await _delivered(sandbox, "sync", 1)  # the handshake: 200, nothing to do
    assert await _next_sync(admin_db, google.account.id) == clock.now + INTERVAL

    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    await sandbox.control(
        "google",
        "POST",
        f"calendars/{ALICE}/events",
        json={
            "summary": "Pushed from Google",
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
        },
    )
    await _delivered(sandbox, "exists", 1)
    due = await _next_sync(admin_db, google.account.id)
    assert due is not None
    assert due < clock.now + INTERVAL  # marked due by the notification
    clock.now = max(clock.now, due)
    assert await runner.tick() == {Outcome.OK: 1}
    (latest, *_older) = await calendar_sync.runs(tenants.alice.ctx, google.account.id)
    assert latest.events_imported == 1
    # the channel was live, so no second watch
    assert len(await sandbox.requests("calendar.events.watch")) == 1


async def test_forged_and_replayed_notifications_do_nothing(
    served: str,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    tenants,
) -> None:
    google, channel, genuine = await _watched(
        flow, sandbox, calendar_sync, runner, tenants
    )
    before = await _next_sync(admin_db, google.account.id)
    # the handshake's number: a replay
    genuine = genuine | {"X-Goog-Message-Number": "1"}
    url = served + GOOGLE_CALENDAR_PATH
    async with httpx.AsyncClient() as http:
        forged = [
            genuine | {"X-Goog-Channel-Token": "guessed"},
            genuine | {"X-Goog-Channel-ID": uuid.uuid4().hex},
            genuine | {"X-Goog-Resource-ID": "another-calendar"},
            {k: v for k, v in genuine.items() if k != "X-Goog-Channel-Token"},
            genuine | {"X-Goog-Message-Number": "not-a-number"},
        ]
        for headers in forged:
            response = await http.post(url, headers=headers)
            assert (response.status_code, response.content) == (404, b""), headers
        replayed = await http.post(url, headers=genuine)
        assert replayed.status_code == 200
    assert await _next_sync(admin_db, google.account.id) == before
    assert await _last_message(admin_db, channel["id"]) == 1
    async with httpx.AsyncClient() as http:
        fresh = await http.post(url, headers=genuine | {"X-Goog-Message-Number": "99"})
        # an older number than the last one acted on is a replay as well
        late = await http.post(url, headers=genuine | {"X-Goog-Message-Number": "50"})
    assert fresh.status_code == late.status_code == 200
    assert await _next_sync(admin_db, google.account.id) != before
    assert await _last_message(admin_db, channel["id"]) == 99


async def test_a_channel_near_its_end_is_replaced_and_the_old_one_stopped(
    served: str,
    services: Services,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    clock: Clock,
    tenants,
) -> None:
    google = await _connected(flow, sandbox, calendar_sync, tenants)
    await runner.tick()
    first = await _channel(sandbox)
    # six and a half days on (channels live a week): the next scheduled sync
    # replaces the channel
    await sandbox.advance_clock(6.5 * 24 * 3600)
    clock.advance(dt.timedelta(days=6, hours=12))
    assert await runner.tick() == {Outcome.OK: 1}
    second = await _channel(sandbox)
    assert second["id"] != first["id"]
    assert second["token"] != first["token"]
    assert len(await sandbox.requests("calendar.channels.stop")) == 1
    async with services.db.tenant(tenants.alice.ctx) as session:
        stored = await PushChannelStore(session).of_account(google.account.id)
    assert [c.channel_id for c in stored] == [second["id"]]
    # the old channel's notifications are refused now
    async with httpx.AsyncClient() as http:
        old = await http.post(
            served + GOOGLE_CALENDAR_PATH,
            headers={
                "X-Goog-Channel-ID": first["id"],
                "X-Goog-Channel-Token": first["token"],
                "X-Goog-Resource-ID": first["resource_id"],
                "X-Goog-Resource-State": "exists",
                "X-Goog-Message-Number": "1000",
            },
        )
    assert old.status_code == 404


async def test_a_live_channel_is_checked_from_memory_for_a_while(
    served: str,
    services: Services,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    push: PushChannels,
    integrations: Integrations,
    runner: InProcessRunner,
    tenants,
) -> None:
    """After each run the scheduler makes sure the calendar has a channel;
    one found live is not read again for LIVE_KNOWN_FOR. A channel stopped
    by another process meanwhile (here: released through a second
    PushChannels) is noticed when that time is up, and made again."""
    google = await _connected(flow, sandbox, calendar_sync, tenants)
    assert await runner.tick() == {Outcome.OK: 1}
    first = await _channel(sandbox)
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM push_channels" in statement:
            reads.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(2):
            assert await push.ensure(tenants.alice.ctx, google.account.id) is not None
        assert reads == []
        # stopped elsewhere: this object still trusts its memory for a while
        other = PushChannels(integrations, clock=sandbox.state.clock.now)
        assert await other.release(tenants.alice.ctx, google.account.id) == 1
        reads.clear()
        remembered = await push.ensure(tenants.alice.ctx, google.account.id)
        assert remembered is not None
        assert remembered.channel_id == first["id"]
        assert reads == []
        await sandbox.advance_clock(LIVE_KNOWN_FOR.total_seconds() + 1)
        made = await push.ensure(tenants.alice.ctx, google.account.id)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert reads  # read again once the time was up
    assert made is not None
    assert made.channel_id != first["id"]
    assert (await _channel(sandbox))["id"] == made.channel_id
    assert len(await sandbox.requests("calendar.events.watch")) == 2


async def test_a_burst_of_notifications_gets_each_its_own_answer(
    served: str,
    services: Services,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    tenants,
) -> None:
    """Notifications that come together while a sync holds the write lock
    queue for it; each gets the answer its own headers call for, and the
    channel ends at the highest number."""
    google, channel, genuine = await _watched(
        flow, sandbox, calendar_sync, runner, tenants
    )
    before = await _next_sync(admin_db, google.account.id)
    burst = [
        genuine
        | {"X-Goog-Message-Number": str(n)}
        # every fourth names another calendar: refused under the lock
        | ({"X-Goog-Resource-ID": "another-calendar"} if n % 4 == 0 else {})
        for n in range(2, 42)
    ]
    limits = httpx.Limits(max_connections=len(burst))
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        async with services.db.admin(write_lock=True) as holder:
            # a sync's writes hold the lock while the burst comes in
            await holder.execute(select(1))
            posts = [
                asyncio.create_task(http.post(served + GOOGLE_CALENDAR_PATH, headers=h))
                for h in burst
            ]
            await asyncio.sleep(0.5)
        answers = [(await post).status_code for post in posts]
    assert answers == [
        404 if h["X-Goog-Resource-ID"] == "another-calendar" else 200 for h in burst
    ]
    assert await _last_message(admin_db, channel["id"]) == 41
    assert await _next_sync(admin_db, google.account.id) != before
