"""Core conformance cases (sync-peers.md section 8.1, plus 20 and 22 of 8.2)
through the calendar sync service against real providers: Google (sandbox),
Microsoft Graph (sandbox) and CalDAV (a real Radicale), on SQLite and
PostgreSQL.

The engine-level versions with in-memory sides are in
``tests/sync/test_engine.py``; here each case is written once against
:class:`~tests.calendar_sync.drivers.Driver` (the person in the provider's own
app) and the CRM side in the database. Outcomes are read from appointment
rows, the status rows (``calendar_event_mappings``), the sync log, what the
provider holds and the provider writes crmflow made (``writes_since``).

Case 10 runs for CalDAV only (Google and Graph never change an event's id
within a calendar). Case 11 runs for Graph only (Google and CalDAV keep UIDs unique within a
calendar). Case 15 runs for CalDAV only (Google and Graph always return the new
version). Case 19 is not repeated here; the engine tests cover
them with in-memory sides.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.domain.appointments import AppointmentStatus, timed_span
from crmflow.domain.calendar_accounts import DeleteMode, RunStatus, SyncRunInfo
from crmflow.domain.crm import AppointmentDraft
from crmflow.services.calendar_sync import CalendarSync
from crmflow.store import models
from crmflow.store.repositories import AppointmentRepository
from tests.calendar_sync import test_provider_conformance as conformance
from tests.calendar_sync.drivers import (
    CalDAVDriver,
    Driver,
    GoogleDriver,
    GraphDriver,
    Mailbox,
    Spec,
)
from tests.calendar_sync.test_provider_conformance import (
    appointments,
    create_appointment,
    export_one,
    mappings,
    next_monday,
    quiet_sync,
    sync,
    wall,
)
from tests.connections.conftest import Pauses, new_integrations
from tests.servers.sandbox import Sandbox

#: the conformance tests' per-provider driver (Google, Graph, CalDAV)
driver = conformance.driver

# ------------------------------------------------------------------ helpers


def spec(title: str, days: int = 0, hour: int = 10) -> Spec:
    """A one-hour meeting ``days`` after a Monday a few weeks ahead."""
    day = next_monday() + dt.timedelta(days=days)
    return Spec(title, wall(day, hour), wall(day, hour + 1))


async def crm_meeting(
    services: Services, mb: Mailbox, title: str, days: int = 0, hour: int = 10
) -> None:
    """A one-hour appointment made in the CRM ``days`` after a Monday ahead."""
    start = wall(next_monday() + dt.timedelta(days=days), hour).replace(tzinfo=dt.UTC)
    await create_appointment(
        services,
        mb.ctx,
        AppointmentDraft(
            title=title, span=timed_span(start, start + dt.timedelta(hours=1), "UTC")
        ),
    )


async def delete_event(driver: Driver, mb: Mailbox, uid: str) -> None:
    """Delete an event in the provider's own app."""
    if isinstance(driver, GoogleDriver):
        master = await driver._master(mb, uid)
        response = await driver._control(
            "DELETE", f"{driver._events(mb)}/{master['id']}"
        )
    elif isinstance(driver, GraphDriver):
        response = await driver._outlook(
            mb, "DELETE", f"/{await driver._event_id(mb, uid)}"
        )
        # an event crmflow makes under this UID later has another id
        driver._ids.pop(uid + "\n" + mb.login, None)
    else:
        assert isinstance(driver, CalDAVDriver)
        response = await driver._request(
            mb.login, "DELETE", await driver._href(mb, uid)
        )
        driver._hrefs.pop(uid + "\n" + mb.calendar, None)
    assert response.status_code in (200, 204), response.text


async def expire_cursor(services: Services, driver: Driver, mb: Mailbox) -> None:
    """Make the provider reject the account's change-feed cursor."""
    if isinstance(driver, GoogleDriver):
        response = await driver._control(
            "POST", f"calendars/{mb.calendar}/expire-sync-tokens"
        )
        assert response.status_code == 204, response.text
    elif isinstance(driver, GraphDriver):
        response = await driver.c.sandbox.control(
            "microsoft", "POST", "delta/expire", json={"email": mb.login}
        )
        assert response.json()["expired"] >= 1, response.text
    else:
        # a token the server never issued: Radicale answers DAV:valid-sync-token
        row = await account_row(services, mb)
        assert row.sync_cursor
        head, _, _ = row.sync_cursor.rpartition("/")
        await set_cursor(services, mb, f"{head}/{'0' * 64}")


async def account_row(services: Services, mb: Mailbox) -> models.CalendarAccount:
    async with services.db.tenant(mb.ctx) as session:
        return await session.get_one(models.CalendarAccount, mb.account.id)


async def set_cursor(services: Services, mb: Mailbox, cursor: str) -> None:
    async with services.db.tenant(mb.ctx) as session:
        row = await session.get_one(models.CalendarAccount, mb.account.id)
        row.sync_cursor = cursor


async def edit_in_crm(
    services: Services,
    mb: Mailbox,
    uid: str,
    title: str | None = None,
    *,
    status: AppointmentStatus | None = None,
) -> None:
    """Retitle an appointment, or change its status, as a CRM user does."""
    row = (await appointments(services, mb.ctx))[uid]
    async with services.db.tenant(mb.ctx) as session:
        repo = AppointmentRepository(session)
        current = await repo.get(row.id)
        await repo.update(
            row.id,
            AppointmentDraft(
                title=current.title if title is None else title,
                span=current.span,
                description=current.description,
                location=current.location,
                attendees=current.attendees,
                status=current.status if status is None else status,
                recurrence_rule=current.recurrence_rule,
            ),
            expected_version=current.version,
        )


async def delete_in_crm(services: Services, mb: Mailbox, uid: str) -> None:
    row = (await appointments(services, mb.ctx))[uid]
    async with services.db.tenant(mb.ctx) as session:
        await AppointmentRepository(session).delete(row.id)


async def writes(driver: Driver, mark: Any) -> int:
    """How many events crmflow wrote at the provider since ``mark`` (CalDAV's
    listing shows a changed resource with its old and its new ETag)."""
    changed = await driver.writes_since(mark)
    if isinstance(driver, CalDAVDriver):
        return len({entry.split(" ", 1)[0] for entry in changed})
    return len(changed)


async def titles(driver: Driver, mb: Mailbox) -> dict[str, str]:
    """``{UID: title}`` of the events the provider holds."""
    return {uid: (await driver.held(mb, uid)).title for uid in await driver.uids(mb)}


def status_of(row: models.CalendarEventMapping) -> tuple[Any, ...]:
    return (
        row.external_event_id,
        row.external_event_etag,
        row.crm_item_id,
        row.crm_version,
        row.crm_hash,
        row.external_hash,
    )


async def run(calendar_sync: CalendarSync, mb: Mailbox, **kwargs: Any) -> SyncRunInfo:
    return await calendar_sync.sync(mb.ctx, mb.account.id, **kwargs)


def changed_nothing(done: SyncRunInfo) -> None:
    """A successful run that imported, exported, updated and deleted nothing."""
    assert done.status is RunStatus.SUCCESS, done.errors
    assert (
        done.events_imported,
        done.events_exported,
        done.events_updated,
        done.events_deleted,
        done.conflicts,
    ) == (0, 0, 0, 0, 0)


def creates_event(request: httpx.Request) -> bool:
    """Whether ``request`` creates an event: Google's and Graph's POST to an
    events collection, CalDAV's ``PUT`` with ``If-None-Match: *``."""
    path = request.url.path
    return (request.method == "POST" and path.endswith("/events")) or (
        request.method == "PUT"
        and path.endswith(".ics")
        and request.headers.get("if-none-match") == "*"
    )


async def synced_events(
    driver: Driver, calendar_sync: CalendarSync, mb: Mailbox, *titles_: str
) -> list[str]:
    """Events made at the provider and imported by one sync; their UIDs."""
    uids = [
        await driver.create(mb, spec(title, days=k)) for k, title in enumerate(titles_)
    ]
    await sync(calendar_sync, mb)
    return uids


# ------------------------------------------------------------------ case 1


async def test_case1_creation_flows_both_ways(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)

    # provider -> CRM
    uid = await driver.create(mb, spec("Intro call"))
    mark = await driver.mark()
    imported = await run(calendar_sync, mb)
    assert imported.status is RunStatus.SUCCESS, imported.errors
    assert (imported.events_imported, imported.events_exported) == (1, 0)
    assert await driver.writes_since(mark) == []
    row = (await appointments(services, mb.ctx))[uid]
    assert (row.title, row.status) == ("Intro call", "confirmed")
    status = (await mappings(services, mb))[uid]
    assert status.appointment_id == row.id
    assert status.crm_hash == status.external_hash

    # CRM -> provider, once
    start = wall(next_monday() + dt.timedelta(days=1), 15).replace(tzinfo=dt.UTC)
    await create_appointment(
        services,
        mb.ctx,
        AppointmentDraft(
            title="Demo for ACME",
            span=timed_span(start, start + dt.timedelta(hours=1), "UTC"),
        ),
    )
    mark = await driver.mark()
    exported = await run(calendar_sync, mb)
    assert exported.status is RunStatus.SUCCESS, exported.errors
    assert (exported.events_imported, exported.events_exported) == (0, 1)
    assert await writes(driver, mark) == 1
    rows = await appointments(services, mb.ctx)
    [new_uid] = set(rows) - {uid}
    assert sorted(await driver.uids(mb)) == sorted([uid, new_uid])
    held = await driver.held(mb, new_uid)
    assert (held.title, held.start, held.end) == (
        "Demo for ACME",
        start,
        start + dt.timedelta(hours=1),
    )
    status = (await mappings(services, mb))[new_uid]
    assert status.appointment_id == rows[new_uid].id
    assert status.crm_hash == status.external_hash
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 2


async def test_case2_one_sided_update_propagates_each_way(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(driver, calendar_sync, mb, "Pipeline review")

    # edited at the provider: the CRM takes it, the provider gets no write
    await driver.retitle(mb, uid, "Pipeline review (Q3)")
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert done.events_updated == 1
    assert await driver.writes_since(mark) == []
    assert (await appointments(services, mb.ctx))[uid].title == "Pipeline review (Q3)"

    # edited in the CRM: one write to the provider, none to the CRM
    await edit_in_crm(services, mb, uid, "Pipeline review (Q4)")
    version = (await appointments(services, mb.ctx))[uid].version
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert done.events_updated == 1
    assert await writes(driver, mark) == 1
    assert (await driver.held(mb, uid)).title == "Pipeline review (Q4)"
    row = (await appointments(services, mb.ctx))[uid]
    assert (row.title, row.version) == ("Pipeline review (Q4)", version)
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 3


async def test_case3_one_sided_deletion_propagates_each_way(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    # a third event keeps both sides non-empty (an empty side is case 12)
    gone_there, gone_here, stays = await synced_events(
        driver,
        calendar_sync,
        mb,
        "Deleted in the calendar",
        "Deleted in the CRM",
        "Stays",
    )

    # deleted in the calendar: the appointment is cancelled (the default)
    await delete_event(driver, mb, gone_there)
    mark = await driver.mark()
    await sync(calendar_sync, mb)
    assert await driver.writes_since(mark) == []
    rows = await appointments(services, mb.ctx)
    assert rows[gone_there].status == "cancelled"
    assert rows[gone_here].status == rows[stays].status == "confirmed"
    assert sorted(await mappings(services, mb)) == sorted([gone_here, stays])

    # deleted in the CRM: the event is deleted at the provider
    await delete_in_crm(services, mb, gone_here)
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert done.events_deleted == 1
    assert await writes(driver, mark) == 1
    assert await driver.uids(mb) == [stays]
    assert list(await mappings(services, mb)) == [stays]
    assert sorted(await appointments(services, mb.ctx)) == sorted([gone_there, stays])
    await quiet_sync(driver, calendar_sync, services, mb)

    # a re-created event under the same UID syncs as a fresh create; Google
    # keeps a deleted event (cancelled) with its iCalUID and answers 409
    # "duplicate" to a new event carrying it, so no app can re-create it there
    if isinstance(driver, GoogleDriver):
        return
    await driver.create(mb, spec("Deleted in the CRM", days=3), same_as=gone_here)
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert done.events_imported == 1
    row = (await appointments(services, mb.ctx))[gone_here]
    assert (row.title, row.status) == ("Deleted in the CRM", "confirmed")


async def test_case12_cancelling_every_synced_appointment_is_no_sudden_emptiness(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """Where a cancellation deletes the event (Google, Outlook), cancelling
    the only synced appointment leaves the CRM listing nothing for the
    calendar: that is the person's doing, not a CRM that lost its data, so the
    run deletes the event instead of stopping at the mass-delete guard."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    (only,) = await synced_events(driver, calendar_sync, mb, "The only one")

    await edit_in_crm(services, mb, only, status=AppointmentStatus.CANCELLED)
    done = await run(calendar_sync, mb)

    assert done.status is RunStatus.SUCCESS, done.errors
    if isinstance(driver, CalDAVDriver):  # kept, as STATUS:CANCELLED
        assert (done.events_updated, done.events_deleted) == (1, 0)
        assert await driver.uids(mb) == [only]
    else:
        assert (done.events_updated, done.events_deleted) == (0, 1)
        assert await driver.uids(mb) == []
    rows = await appointments(services, mb.ctx)
    assert rows[only].status == "cancelled"
    await quiet_sync(driver, calendar_sync, services, mb)


async def test_case3_an_appointment_cancelled_in_the_crm_stays_in_the_crm(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """Google keeps a cancelled event only as a deletion, and Outlook's
    ``isCancelled`` cannot be written: there the cancellation deletes the event
    and ends the mapping, while the appointment stays, cancelled, even where
    deletions in the calendar delete appointments. CalDAV writes
    ``STATUS:CANCELLED`` and keeps syncing the event."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    await calendar_sync.update_account(
        mb.ctx, mb.account.id, {"delete_mode": DeleteMode.DELETE.value}
    )
    called_off, stays = await synced_events(
        driver, calendar_sync, mb, "Called off", "Stays"
    )

    await edit_in_crm(services, mb, called_off, status=AppointmentStatus.CANCELLED)
    mark = await driver.mark()
    done = await run(calendar_sync, mb)

    assert done.status is RunStatus.SUCCESS, done.errors
    assert await writes(driver, mark) == 1
    if isinstance(driver, CalDAVDriver):
        assert (done.events_updated, done.events_deleted) == (1, 0)
        assert sorted(await driver.uids(mb)) == sorted([called_off, stays])
        response = await driver._request(
            mb.login, "GET", await driver._href(mb, called_off)
        )
        assert "STATUS:CANCELLED" in response.text
        assert sorted(await mappings(services, mb)) == sorted([called_off, stays])
    else:
        assert (done.events_updated, done.events_deleted) == (0, 1)
        assert await driver.uids(mb) == [stays]
        assert list(await mappings(services, mb)) == [stays]
    for _ in range(2):  # the next syncs neither delete it nor export it again
        await quiet_sync(driver, calendar_sync, services, mb)
    rows = await appointments(services, mb.ctx)
    assert sorted(rows) == sorted([called_off, stays])
    assert (rows[called_off].status, rows[stays].status) == ("cancelled", "confirmed")

    # called on again: back in the calendar under its UID (Google restores its
    # deleted event, which keeps that iCalUID), once
    if isinstance(driver, GraphDriver):  # Outlook gives the new event a new id
        driver._ids.pop(called_off + "\n" + mb.login, None)
    await edit_in_crm(services, mb, called_off, status=AppointmentStatus.CONFIRMED)
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert sorted(await driver.uids(mb)) == sorted([called_off, stays])
    assert (await driver.held(mb, called_off)).title == "Called off"
    assert sorted(await mappings(services, mb)) == sorted([called_off, stays])
    await quiet_sync(driver, calendar_sync, services, mb)


@pytest.mark.parametrize("driver", ["microsoft"], indirect=True)
async def test_case3_a_meeting_cancelled_by_its_organizer_stays_in_outlook(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """Outlook shows a meeting its organizer called off as ``isCancelled``
    until the user removes it: imported as a cancelled appointment, it is not
    taken for one cancelled in the CRM, so crmflow never deletes it."""
    assert isinstance(driver, GraphDriver)
    mb = await driver.connect(tenants.alice.ctx, 0)
    called_off = await driver.create(mb, spec("Called off by the organizer"))
    stays = await driver.create(mb, spec("Stays", days=1))
    driver._set(mb, driver._ids[called_off + "\n" + mb.login], is_cancelled=True)

    await sync(calendar_sync, mb)
    rows = await appointments(services, mb.ctx)
    assert (rows[called_off].status, rows[stays].status) == ("cancelled", "confirmed")
    for _ in range(2):
        await quiet_sync(driver, calendar_sync, services, mb)
    assert sorted(await driver.uids(mb)) == sorted([called_off, stays])
    assert sorted(await mappings(services, mb)) == sorted([called_off, stays])


# ------------------------------------------------------------------ case 4


async def test_case4_deleted_in_the_calendar_changed_in_the_crm_comes_back(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    uid, stays = await synced_events(driver, calendar_sync, mb, "Call A", "Stays")

    await delete_event(driver, mb, uid)
    await edit_in_crm(services, mb, uid, "Call A (new agenda)")
    await sync(calendar_sync, mb)

    assert await titles(driver, mb) == {uid: "Call A (new agenda)", stays: "Stays"}
    row = (await appointments(services, mb.ctx))[uid]
    assert (row.title, row.status) == ("Call A (new agenda)", "confirmed")
    assert sorted(await mappings(services, mb)) == sorted([uid, stays])
    await quiet_sync(driver, calendar_sync, services, mb)


async def test_case4_deleted_in_the_crm_changed_in_the_calendar_comes_back(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    uid, stays = await synced_events(driver, calendar_sync, mb, "Call B", "Stays")

    await delete_in_crm(services, mb, uid)
    await driver.retitle(mb, uid, "Call B (new dial-in)")
    mark = await driver.mark()
    await sync(calendar_sync, mb)

    assert await driver.writes_since(mark) == []
    assert await titles(driver, mb) == {uid: "Call B (new dial-in)", stays: "Stays"}
    row = (await appointments(services, mb.ctx))[uid]
    assert (row.title, row.status) == ("Call B (new dial-in)", "confirmed")
    assert sorted(await mappings(services, mb)) == sorted([uid, stays])
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 5


async def test_case5_both_changed_differently_per_strategy(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    uids = await synced_events(
        driver, calendar_sync, mb, "Offer", "Contract", "Kick-off"
    )

    async def both_changed(uid: str, strategy: str) -> tuple[SyncRunInfo, int]:
        """Change ``uid`` on both sides, sync with ``strategy``; the run and
        the number of provider writes it made."""
        await calendar_sync.update_account(
            mb.ctx, mb.account.id, {"strategy": strategy}
        )
        await edit_in_crm(services, mb, uid, f"{strategy}: the CRM's")
        await driver.retitle(mb, uid, f"{strategy}: the calendar's")
        mark = await driver.mark()
        done = await run(calendar_sync, mb)
        assert done.status is RunStatus.SUCCESS, done.errors
        return done, await writes(driver, mark)

    # the winner's content on both sides; only the loser's side is written
    for uid, strategy, winner, provider_writes in (
        (uids[0], "crm_wins", "crm_wins: the CRM's", 1),
        (uids[1], "calendar_wins", "calendar_wins: the calendar's", 0),
    ):
        version = (await appointments(services, mb.ctx))[uid].version
        done, written = await both_changed(uid, strategy)
        assert (done.conflicts, written) == (0, provider_writes), strategy
        row = (await appointments(services, mb.ctx))[uid]
        assert row.title == (await driver.held(mb, uid)).title == winner
        if strategy == "crm_wins":
            assert row.version == version + 1  # our edit only
        status = (await mappings(services, mb))[uid]
        assert status.crm_hash == status.external_hash

    # manual: a conflict waiting for a person, nothing overwritten
    manual = uids[2]
    status = status_of((await mappings(services, mb))[manual])
    done, written = await both_changed(manual, "manual")
    assert (done.conflicts, written) == (1, 0)
    row = (await appointments(services, mb.ctx))[manual]
    assert row.title == "manual: the CRM's"
    assert (await driver.held(mb, manual)).title == "manual: the calendar's"
    assert status_of((await mappings(services, mb))[manual]) == status
    [conflict] = await calendar_sync.conflicts(mb.ctx, account_id=mb.account.id)
    assert conflict.ical_uid == manual
    assert conflict.crm_event.title == "manual: the CRM's"
    assert conflict.calendar_event.title == "manual: the calendar's"


# ------------------------------------------------------------------ case 7


async def forget_status(services: Services, mb: Mailbox) -> None:
    """Lose the account's status, as a restored backup would: its status
    rows (mappings) and its change-feed cursor."""
    m = models.CalendarEventMapping
    async with services.db.tenant(mb.ctx) as session:
        await session.execute(delete(m).where(m.calendar_account_id == mb.account.id))
        row = await session.get_one(models.CalendarAccount, mb.account.id)
        row.sync_cursor = None


async def test_case7_a_lost_status_is_rebuilt_without_writes_or_duplicates(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    await synced_events(driver, calendar_sync, mb, "Pipeline review", "Site visit")
    await crm_meeting(services, mb, "Demo for ACME", days=2, hour=15)
    exported = await run(calendar_sync, mb)
    assert exported.events_exported == 1
    before = {
        u: (r.id, r.version) for u, r in (await appointments(services, mb.ctx)).items()
    }
    held = sorted(await driver.uids(mb))
    assert sorted(before) == held

    await forget_status(services, mb)
    assert await mappings(services, mb) == {}
    mark = await driver.mark()
    changed_nothing(await run(calendar_sync, mb))
    # identical on both sides: adopted, nothing written, nothing duplicated
    assert await writes(driver, mark) == 0
    after = {
        u: (r.id, r.version) for u, r in (await appointments(services, mb.ctx)).items()
    }
    assert after == before
    assert sorted(await driver.uids(mb)) == held
    rebuilt = await mappings(services, mb)
    assert sorted(rebuilt) == held
    assert all(r.crm_hash == r.external_hash for r in rebuilt.values())
    await quiet_sync(driver, calendar_sync, services, mb)


async def test_case7_a_lost_status_with_different_versions_is_a_conflict(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """Without a status neither side can be said to have changed: the two
    versions wait for a person (the account's strategy is manual)."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(driver, calendar_sync, mb, "Contract call")
    await forget_status(services, mb)
    await driver.retitle(mb, uid, "Contract call (moved)")

    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.conflicts == 1
    assert await writes(driver, mark) == 0
    assert (await appointments(services, mb.ctx))[uid].title == "Contract call"
    assert (await driver.held(mb, uid)).title == "Contract call (moved)"
    [conflict] = await calendar_sync.conflicts(mb.ctx, account_id=mb.account.id)
    assert conflict.ical_uid == uid
    assert conflict.crm_event.title == "Contract call"
    assert conflict.calendar_event.title == "Contract call (moved)"


# ------------------------------------------------------------------ case 9


async def test_case9_a_new_version_with_the_same_content_is_not_a_change(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """The event saved again unchanged in the provider's app: a new ETag or
    changeKey, the same synced content. The run writes nothing on either
    side and records the new version, so the next run does not look again."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(driver, calendar_sync, mb, "Board meeting")
    before = (await mappings(services, mb))[uid]
    version = (await appointments(services, mb.ctx))[uid].version
    await driver.retitle(mb, uid, "Board meeting")

    mark = await driver.mark()
    changed_nothing(await run(calendar_sync, mb))
    assert await writes(driver, mark) == 0
    assert (await appointments(services, mb.ctx))[uid].version == version
    after = (await mappings(services, mb))[uid]
    assert after.external_event_etag != before.external_event_etag
    assert after.external_hash == before.external_hash == after.crm_hash
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 10


@pytest.mark.parametrize(
    "driver", [pytest.param("caldav", marks=pytest.mark.servers)], indirect=True
)
async def test_case10_a_renamed_caldav_resource_updates_the_status_only(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """A CalDAV client may rename an event's resource (``MOVE``), keeping its
    UID: the event's id changes, nothing else. (Google and Graph never change
    an event's id within a calendar.)"""
    dav = driver
    assert isinstance(dav, CalDAVDriver)
    mb = await dav.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(dav, calendar_sync, mb, "Renewal call")
    before = (await mappings(services, mb))[uid]
    row = (await appointments(services, mb.ctx))[uid]
    name = f"renamed-{uuid.uuid4().hex}.ics"
    moved = await dav._request(
        mb.login,
        "MOVE",
        await dav._href(mb, uid),
        headers={"Destination": mb.calendar + name},
    )
    assert moved.status_code in (201, 204), moved.text
    dav._hrefs[uid + "\n" + mb.calendar] = mb.calendar + name

    mark = await dav.mark()
    changed_nothing(await run(calendar_sync, mb))
    assert await writes(dav, mark) == 0
    after = (await mappings(services, mb))[uid]
    assert after.external_event_id != before.external_event_id
    assert name in after.external_event_id
    assert after.appointment_id == row.id
    again = (await appointments(services, mb.ctx))[uid]
    assert (again.id, again.version) == (row.id, row.version)
    await quiet_sync(dav, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 11


@pytest.mark.parametrize("driver", ["microsoft"], indirect=True)
async def test_case11_two_outlook_events_with_one_uid_stop_that_uid_only(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """Outlook can hold two events with one iCalUId (a meeting request
    accepted twice); Google and CalDAV servers keep UIDs unique within a
    calendar. The UID is left alone with an error naming it; the rest syncs."""
    outlook = driver
    mb = await outlook.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(outlook, calendar_sync, mb, "Steering committee")
    await outlook.create(mb, spec("Steering committee (copy)", days=2), same_as=uid)
    other = await outlook.create(mb, spec("Roadmap", days=3))
    await edit_in_crm(services, mb, uid, "Steering committee (CRM)")

    mark = await outlook.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.PARTIAL
    assert done.events_imported == 1
    [error] = done.errors
    assert error.ical_uid == uid
    assert await outlook.writes_since(mark) == []
    rows = await appointments(services, mb.ctx)
    assert (rows[uid].title, rows[other].title) == (
        "Steering committee (CRM)",
        "Roadmap",
    )


# ------------------------------------------------------------------ case 13


async def test_case13_one_way_accounts_leave_the_receiving_side_alone(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    """A one-way account treats its source as the only writable side: the
    other side's changes are neither sent nor reverted."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(driver, calendar_sync, mb, "Weekly sync")

    # import-only: the calendar's changes come in, the CRM's stay in the CRM
    await calendar_sync.update_account(
        mb.ctx, mb.account.id, {"direction": "import_only"}
    )
    await edit_in_crm(services, mb, uid, "Weekly sync (CRM note)")
    other = await driver.create(mb, spec("Planning", days=1))
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert (done.events_imported, done.events_exported, done.conflicts) == (1, 0, 0)
    assert await writes(driver, mark) == 0
    assert await titles(driver, mb) == {uid: "Weekly sync", other: "Planning"}
    rows = await appointments(services, mb.ctx)
    assert (rows[uid].title, rows[other].title) == (
        "Weekly sync (CRM note)",
        "Planning",
    )

    # export-only: the CRM's changes go out, the calendar's stay there
    await calendar_sync.update_account(
        mb.ctx, mb.account.id, {"direction": "export_only"}
    )
    await driver.retitle(mb, other, "Planning (calendar)")
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert (done.events_imported, done.conflicts) == (0, 0)
    assert await writes(driver, mark) == 1
    assert await titles(driver, mb) == {
        uid: "Weekly sync (CRM note)",
        other: "Planning (calendar)",
    }
    assert (await appointments(services, mb.ctx))[other].title == "Planning"


# ------------------------------------------------------------------ case 14


class OverNetwork(httpx.AsyncBaseTransport):
    """crmflow's provider traffic, sent over the network; the subclasses
    look at it or change it on the way."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


Through = Callable[[httpx.AsyncBaseTransport], CalendarSync]


@pytest.fixture
def through(
    services: Services, settings: Settings, sandbox: Sandbox, pauses: Pauses
) -> Through:
    """The calendar sync service with its provider calls through a transport."""

    def service(transport: httpx.AsyncBaseTransport) -> CalendarSync:
        return CalendarSync(
            new_integrations(services, settings, sandbox, pauses, transport),
            clock=sandbox.state.clock.now,
        )

    return service


class RefuseFirstCreate(OverNetwork):
    """crmflow's provider traffic, over the network, except that the first
    request creating an event is refused with a 400 (as a provider refuses
    one malformed or policy-blocked event)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if creates_event(request) and not self.refused:
            self.refused.append(request.url.path)
            return httpx.Response(
                400,
                json={"error": {"code": 400, "message": "Bad Request"}},
                request=request,
            )
        return await self.real.handle_async_request(request)


async def test_case14_a_refused_write_fails_its_event_only_and_is_retried(
    driver: Driver,
    tenants,
    services: Services,
    through: Through,
    calendar_sync: CalendarSync,
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    for k, title in enumerate(("Offer walkthrough", "Reference call")):
        await crm_meeting(services, mb, title, days=k, hour=9)
    refusing = RefuseFirstCreate()
    try:
        done = await run(through(refusing), mb)
    finally:
        await refusing.aclose()
    assert len(refusing.refused) == 1
    assert done.status is RunStatus.PARTIAL
    assert done.events_exported == 1
    [error] = done.errors
    rows = await appointments(services, mb.ctx)
    assert error.ical_uid in rows
    # the other event went through, and is the only one the provider holds
    [held] = await driver.uids(mb)
    assert held != error.ical_uid
    assert set(await mappings(services, mb)) == {held}

    # the next run sends the refused one, once
    again = await run(calendar_sync, mb)
    assert again.status is RunStatus.SUCCESS, again.errors
    assert again.events_exported == 1
    assert sorted(await driver.uids(mb)) == sorted(rows)
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 21


class LoseCreateReply(RefuseFirstCreate):
    """The first create reaches the provider and is carried out, but its
    reply is lost on the way back (a dropped connection)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.real.handle_async_request(request)
        if creates_event(request) and not self.refused:
            await response.aread()
            self.refused.append(f"{request.url.path} -> {response.status_code}")
            raise httpx.ReadError("connection reset", request=request)
        return response


async def test_case21_a_create_whose_reply_was_lost_is_not_made_twice(
    driver: Driver,
    tenants,
    services: Services,
    through: Through,
    calendar_sync: CalendarSync,
):
    """Google (client-generated ids), Graph (transactionId and an extended
    property looked up before creating) and CalDAV (UID-named resources with
    If-None-Match) let the next run find the event instead of creating it
    again."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    await crm_meeting(services, mb, "Pricing call", days=1, hour=11)
    losing = LoseCreateReply()
    try:
        lost = await run(through(losing), mb)
    finally:
        await losing.aclose()
    [made] = losing.refused
    assert made.endswith(("-> 200", "-> 201"))
    [uid] = await appointments(services, mb.ctx)
    assert await driver.uids(mb) == [uid]  # it was made, once
    if isinstance(driver, CalDAVDriver):
        # PUT may be sent again: the retry meets If-None-Match (412) and the
        # run adopts the resource it made
        assert lost.status is RunStatus.SUCCESS, lost.errors
        assert set(await mappings(services, mb)) == {uid}
    else:
        # a POST is not sent again: the run fails for that event and
        # crmflow does not know the event exists
        assert lost.status in (RunStatus.PARTIAL, RunStatus.FAILED)
        assert await mappings(services, mb) == {}

    again = await run(calendar_sync, mb)
    assert again.status is RunStatus.SUCCESS, again.errors
    assert await driver.uids(mb) == [uid]
    assert list(await appointments(services, mb.ctx)) == [uid]
    assert (await driver.held(mb, uid)).title == "Pricing call"
    assert set(await mappings(services, mb)) == {uid}
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 16


class Counting(OverNetwork):
    """crmflow's provider traffic, over the network, counted."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.method)
        return await self.real.handle_async_request(request)

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


async def test_case16_changed_events_are_fetched_in_bulk(
    driver: Driver,
    tenants,
    services: Services,
    through: Through,
    calendar_sync: CalendarSync,
):
    """Five changed events cost as many requests as one: the change feed
    carries their content (Google), or one request reads them all (Graph's
    ``$batch``, CalDAV's ``calendar-multiget``), never one per event."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    uids = await synced_events(
        driver, calendar_sync, mb, *(f"Item {k}" for k in range(6))
    )
    await quiet_sync(driver, calendar_sync, services, mb)
    counting = Counting()
    service = through(counting)
    try:
        await driver.retitle(mb, uids[0], "Item 0 (changed)")
        one = await run(service, mb)
        for_one = counting.take()
        for k in range(1, 6):
            await driver.retitle(mb, uids[k], f"Item {k} (changed)")
        five = await run(service, mb)
        for_five = counting.take()
    finally:
        await counting.aclose()
    assert (one.events_updated, five.events_updated) == (1, 5)
    # Graph reads one changed event with a GET and several with one $batch
    assert len(for_five) == len(for_one) <= 2


# ------------------------------------------------------------------ case 15


class NoETagOnPut(Counting):
    """A CalDAV server that answers a PUT without an ``ETag`` (RFC 4791
    section 5.3.4: it changed the data as it stored it)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method == "PUT":
            del response.headers["ETag"]
        return response


@pytest.mark.parametrize(
    "driver", [pytest.param("caldav", marks=pytest.mark.servers)], indirect=True
)
async def test_case15_a_write_answered_without_a_version_is_read_back_once(
    driver: Driver,
    tenants,
    services: Services,
    through: Through,
    calendar_sync: CalendarSync,
):
    """Google and Graph always return the new version; a CalDAV server may
    not. The status then holds no version, the next run reads the event back
    once (no write, no import; from the data its change feed brings), and the
    run after that reads nothing."""
    dav = driver
    assert isinstance(dav, CalDAVDriver)
    mb = await dav.connect(tenants.alice.ctx, 0)
    await crm_meeting(services, mb, "Kick-off", days=1)
    stripping = NoETagOnPut()
    try:
        done = await run(through(stripping), mb)
        assert stripping.take().count("PUT") == 1
    finally:
        await stripping.aclose()
    assert done.status is RunStatus.SUCCESS, done.errors
    assert done.events_exported == 1
    [uid] = await appointments(services, mb.ctx)
    assert (await mappings(services, mb))[uid].external_event_etag is None

    counting = Counting()
    service = through(counting)
    try:
        changed_nothing(await run(service, mb))
        reading_back = counting.take()
        changed_nothing(await run(service, mb))
        settled = counting.take()
    finally:
        await counting.aclose()
    assert "PUT" not in reading_back
    assert (await mappings(services, mb))[uid].external_event_etag
    # the change feed that reports crmflow's own PUT carries the event's
    # data (asked for with it): the read-back costs no request of its own
    assert reading_back == settled


# ------------------------------------------------------------------ case 17


class EditBeforeWrite(OverNetwork):
    """crmflow's provider traffic, over the network; when armed, the person
    edits the event in the provider's app just before crmflow's first
    write (PUT/PATCH) reaches the provider, and the write's answer is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.edit: Callable[[], Awaitable[None]] | None = None
        self.answers: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method not in ("PUT", "PATCH") or self.edit is None:
            return await self.real.handle_async_request(request)
        edit, self.edit = self.edit, None
        await edit()
        response = await self.real.handle_async_request(request)
        self.answers.append(response.status_code)
        return response


async def test_case17_an_edit_between_listing_and_write_becomes_a_conflict(
    driver: Driver,
    tenants,
    services: Services,
    through: Through,
    calendar_sync: CalendarSync,
):
    """crmflow listed the event, then the person edited it in the provider's
    app before crmflow's update arrived: the conditional write is refused
    (412), the run plans again and finds both sides changed, and (manual
    strategy) keeps both versions as a conflict; nothing is overwritten."""
    mb = await driver.connect(tenants.alice.ctx, 0)
    [uid] = await synced_events(driver, calendar_sync, mb, "Budget review")
    hooked = EditBeforeWrite()
    racing = through(hooked)
    try:
        await edit_in_crm(services, mb, uid, "Budget review (CRM)")

        async def edit() -> None:
            await driver.retitle(mb, uid, "Budget review (calendar)")

        hooked.edit = edit
        done = await run(racing, mb)
    finally:
        await hooked.aclose()
    assert hooked.answers == [412]
    assert done.conflicts == 1, done.errors
    assert (await appointments(services, mb.ctx))[uid].title == "Budget review (CRM)"
    assert (await driver.held(mb, uid)).title == "Budget review (calendar)"
    [conflict] = await calendar_sync.conflicts(mb.ctx, account_id=mb.account.id)
    assert conflict.crm_event.title == "Budget review (CRM)"
    assert conflict.calendar_event.title == "Budget review (calendar)"


# ------------------------------------------------------------------ case 18

#: UIDs other clients write: spaces, URL delimiters, non-ASCII, case, length
ODD_UIDS = (
    "uid with spaces@conformance.test",
    "slash/and?query#hash&amp;@conformance.test",
    "Ümlaut-\u2603-\U0001f600@conformance.test",
    "UPPER-lower@Conformance.TEST",
    "x" * 200,
)


async def test_case18_odd_uids_round_trip(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    for k, uid in enumerate(ODD_UIDS):
        made = await driver.create(mb, spec(f"Odd {k}", days=k), same_as=uid)
        assert made == uid
    await sync(calendar_sync, mb)
    rows = await appointments(services, mb.ctx)
    assert set(rows) == set(ODD_UIDS)
    assert set(await mappings(services, mb)) == set(ODD_UIDS)

    # each CRM edit reaches its own event, and only it
    for k, uid in enumerate(ODD_UIDS):
        await edit_in_crm(services, mb, uid, f"Odd {k} (edited)")
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert (done.events_updated, done.conflicts) == (len(ODD_UIDS), 0)
    assert await writes(driver, mark) == len(ODD_UIDS)
    assert await titles(driver, mb) == {
        uid: f"Odd {k} (edited)" for k, uid in enumerate(ODD_UIDS)
    }
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ cases 6, 8


async def test_case6_and_8_identical_changes_and_no_changes_write_nothing(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    [uid, other] = await synced_events(
        driver, calendar_sync, mb, "Quarterly review", "Standup"
    )

    # already in sync (case 8): no writes, nothing updated, status as it was
    before = {u: status_of(r) for u, r in (await mappings(services, mb)).items()}
    await quiet_sync(driver, calendar_sync, services, mb)
    after = {u: status_of(r) for u, r in (await mappings(services, mb)).items()}
    assert after == before

    # the same change on both sides (case 6): no conflict, no writes
    await edit_in_crm(services, mb, uid, "Quarterly review (room 2)")
    await driver.retitle(mb, uid, "Quarterly review (room 2)")
    version = (await appointments(services, mb.ctx))[uid].version
    mark = await driver.mark()
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert (done.conflicts, done.events_updated) == (0, 0)
    assert await driver.writes_since(mark) == []
    assert (await appointments(services, mb.ctx))[uid].version == version
    refreshed = status_of((await mappings(services, mb))[uid])
    assert refreshed != before[uid]  # the status holds the new versions
    assert status_of((await mappings(services, mb))[other]) == before[other]
    await quiet_sync(driver, calendar_sync, services, mb)


# ------------------------------------------------------------------ case 12


async def test_case12_a_suddenly_empty_calendar_needs_confirmation(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    uids = await synced_events(driver, calendar_sync, mb, "One", "Two", "Three")
    for uid in uids:
        await delete_event(driver, mb, uid)

    failed = await run(calendar_sync, mb)
    assert failed.status is RunStatus.FAILED
    assert [e.code for e in failed.errors] == ["mass_delete"]
    rows = await appointments(services, mb.ctx)
    assert {u: r.status for u, r in rows.items()} == dict.fromkeys(uids, "confirmed")
    assert set(await mappings(services, mb)) == set(uids)

    mark = await driver.mark()
    confirmed = await run(calendar_sync, mb, confirm_mass_delete=True)
    assert confirmed.status is RunStatus.SUCCESS, confirmed.errors
    assert await driver.writes_since(mark) == []
    rows = await appointments(services, mb.ctx)
    assert {u: r.status for u, r in rows.items()} == dict.fromkeys(uids, "cancelled")
    assert await mappings(services, mb) == {}


# ------------------------------------------------------------------ case 20


async def test_case20_our_own_writes_do_not_come_back(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    start = wall(next_monday(), 9).replace(tzinfo=dt.UTC)
    await create_appointment(
        services,
        mb.ctx,
        AppointmentDraft(
            title="Renewal talk",
            span=timed_span(start, start + dt.timedelta(hours=1), "UTC"),
        ),
    )
    uid = await export_one(calendar_sync, services, mb)
    # the export is in the provider's change feed: reading it back writes nothing
    await quiet_sync(driver, calendar_sync, services, mb)

    # an update sent out is not taken back in either
    await edit_in_crm(services, mb, uid, "Renewal talk (with legal)")
    done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, done.errors
    assert done.events_updated == 1
    await quiet_sync(driver, calendar_sync, services, mb)

    # and an imported change is not sent back out
    await driver.retitle(mb, uid, "Renewal talk (moved)")
    done = await run(calendar_sync, mb)
    assert done.events_updated == 1
    await quiet_sync(driver, calendar_sync, services, mb)
    assert (await appointments(services, mb.ctx))[uid].title == "Renewal talk (moved)"


# ------------------------------------------------------------------ case 22


async def test_case22_an_expired_cursor_means_a_full_listing_that_reconciles(
    driver: Driver, tenants, services: Services, calendar_sync: CalendarSync
):
    mb = await driver.connect(tenants.alice.ctx, 0)
    uids = await synced_events(driver, calendar_sync, mb, "Keep 1", "Gone", "Keep 2")
    await sync(calendar_sync, mb)  # the account holds a change-feed cursor now
    stale = (await account_row(services, mb)).sync_cursor
    assert stale
    versions = {u: r.version for u, r in (await appointments(services, mb.ctx)).items()}

    await expire_cursor(services, driver, mb)
    await delete_event(driver, mb, uids[1])
    rejected = (await account_row(services, mb)).sync_cursor
    mark = await driver.mark()
    await sync(calendar_sync, mb)

    assert await driver.writes_since(mark) == []
    rows = await appointments(services, mb.ctx)  # no UID twice
    assert sorted(rows) == sorted(uids)
    assert rows[uids[1]].status == "cancelled"
    for uid in (uids[0], uids[2]):
        assert (rows[uid].status, rows[uid].version) == ("confirmed", versions[uid])
    assert sorted(await mappings(services, mb)) == sorted([uids[0], uids[2]])
    fresh = (await account_row(services, mb)).sync_cursor
    assert fresh
    assert fresh != rejected
    await quiet_sync(driver, calendar_sync, services, mb)
