"""The calendar sync service against the Google sandbox, on SQLite and PostgreSQL.

Every outcome is read back from the database (appointments, mappings, the sync
log, conflicts) and from the sandbox (its calendar, its request log).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from crmflow.bootstrap import Services
from crmflow.domain.appointments import timed_span
from crmflow.domain.calendar_accounts import (
    ConflictStatus,
    DeleteMode,
    Resolution,
    RunStatus,
)
from crmflow.domain.crm import AppointmentDraft
from crmflow.errors import NotFound
from crmflow.services.calendar_sync import CalendarSync, SyncInProgress
from crmflow.store import models
from crmflow.store.repositories import AppointmentRepository
from tests.calendar_sync.conftest import GOOGLE_EMAIL, GoogleAccount
from tests.servers.sandbox import Sandbox


async def _appointments(services: Services, ctx) -> dict[str, models.Appointment]:
    async with services.db.tenant(ctx) as session:
        rows = await session.scalars(select(models.Appointment))
        return {r.ical_uid: r for r in rows}


async def _sandbox_events(sandbox: Sandbox, email: str = GOOGLE_EMAIL) -> list[dict]:
    response = await sandbox.control("google", "GET", f"calendars/{email}/events")
    return list(response.json()["items"])


async def test_first_sync_imports_series_all_day_and_zoned_events(
    google: GoogleAccount, calendar_sync: CalendarSync, services: Services
):
    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.events_imported == 4
    assert (run.events_exported, run.events_updated, run.events_deleted) == (0, 0, 0)
    rows = await _appointments(services, google.ctx)
    assert len(rows) == 4
    by_title = {r.title: r for r in rows.values()}
    standup = next(r for t, r in by_title.items() if "Standup" in t)
    assert standup.recurrence_rule
    assert "FREQ=WEEKLY" in standup.recurrence_rule
    # one moved and one cancelled occurrence came along as exceptions
    statuses = sorted(e["status"] for e in standup.recurrence_exceptions)
    assert statuses == ["cancelled", "confirmed"]
    offsite = next(r for t, r in by_title.items() if "Offsite" in t)
    assert offsite.all_day
    assert offsite.end_at - offsite.start_at == dt.timedelta(days=1)
    zones = {r.timezone for r in rows.values()}
    assert {"America/New_York", "Asia/Tokyo"} <= zones
    # every event is mapped, the log row says what happened
    account = await calendar_sync.account(google.ctx, google.account.id)
    assert account.mapped_events == 4
    assert account.last_sync_status is RunStatus.SUCCESS
    [logged] = await calendar_sync.runs(google.ctx, google.account.id)
    assert logged.id == run.id
    assert logged.events_imported == 4
    assert logged.duration_ms is not None
    assert logged.finished_at is not None


async def test_second_sync_without_changes_writes_nothing_and_sends_one_request(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox
):
    await calendar_sync.sync(google.ctx, google.account.id)
    before = len(await sandbox.requests())

    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.status is RunStatus.SUCCESS
    assert (run.events_imported, run.events_exported, run.events_updated) == (0, 0, 0)
    sent = (await sandbox.requests())[before:]
    assert [e["apiMethod"] for e in sent] == ["calendar.events.list"]


async def test_one_changed_event_costs_exactly_one_provider_request(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    [call_ny, _] = google.demo.client_call_ids
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{GOOGLE_EMAIL}/events/{call_ny}",
        json={"summary": "Renamed in Google"},
    )
    before = len(await sandbox.requests())

    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.events_updated == 1
    assert run.status is RunStatus.SUCCESS
    sent = (await sandbox.requests())[before:]
    assert [e["apiMethod"] for e in sent] == ["calendar.events.list"]
    titles = {r.title for r in (await _appointments(services, google.ctx)).values()}
    assert "Renamed in Google" in titles


async def test_crm_appointment_is_exported_once_without_invitations(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    start = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    async with services.db.tenant(google.ctx) as session:
        created = await AppointmentRepository(session).create(
            AppointmentDraft(
                title="Demo for ACME",
                span=timed_span(start, start + dt.timedelta(hours=1), "Europe/Berlin"),
            )
        )
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.events_exported == 1, run.errors

    rows = await _appointments(services, google.ctx)
    uid = next(u for u, r in rows.items() if r.id == created.id)
    matching = [e for e in await _sandbox_events(sandbox) if e["iCalUID"] == uid]
    assert len(matching) == 1
    assert matching[0]["summary"] == "Demo for ACME"
    inserts = await sandbox.requests("calendar.events.insert")
    assert inserts
    assert all(["sendUpdates", "none"] in e["query"] for e in inserts)
    # the export is not imported back, and a third sync changes nothing
    again = await calendar_sync.sync(google.ctx, google.account.id)
    assert (again.events_imported, again.events_updated, again.events_exported) == (
        0,
        0,
        0,
    )
    assert len(await _appointments(services, google.ctx)) == 5


async def test_calendar_deletion_cancels_or_deletes_the_appointment(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    call_ny, call_tokyo = google.demo.client_call_ids
    await sandbox.control(
        "google", "DELETE", f"calendars/{GOOGLE_EMAIL}/events/{call_ny}"
    )
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.events_deleted == 1
    rows = await _appointments(services, google.ctx)
    assert len(rows) == 4
    cancelled = [r for r in rows.values() if r.status == "cancelled"]
    assert len(cancelled) == 1
    # a cancelled appointment that left the calendar is not exported again
    again = await calendar_sync.sync(google.ctx, google.account.id)
    assert again.events_exported == 0

    await calendar_sync.update_account(
        google.ctx, google.account.id, {"delete_mode": DeleteMode.DELETE.value}
    )
    await sandbox.control(
        "google", "DELETE", f"calendars/{GOOGLE_EMAIL}/events/{call_tokyo}"
    )
    await calendar_sync.sync(google.ctx, google.account.id)
    assert len(await _appointments(services, google.ctx)) == 3


async def test_manual_conflict_waits_then_keep_calendar_wins(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    call_ny, _ = google.demo.client_call_ids
    rows = await _appointments(services, google.ctx)
    row = next(r for r in rows.values() if r.timezone == "America/New_York")
    async with services.db.tenant(google.ctx) as session:
        repo = AppointmentRepository(session)
        current = await repo.get(row.id)
        await repo.update(
            row.id,
            AppointmentDraft(title="CRM title", span=current.span),
            expected_version=current.version,
        )
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{GOOGLE_EMAIL}/events/{call_ny}",
        json={"summary": "Google title"},
    )

    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.conflicts == 1
    assert run.status is RunStatus.SUCCESS
    [conflict] = await calendar_sync.conflicts(google.ctx)
    assert conflict.crm_event.title == "CRM title"
    assert conflict.calendar_event.title == "Google title"
    # nothing was overwritten on either side
    assert (await _appointments(services, google.ctx))[
        row.ical_uid
    ].title == "CRM title"
    google_titles = {e["summary"] for e in await _sandbox_events(sandbox)}
    assert "Google title" in google_titles
    # still a conflict on the next sync, not a silent overwrite
    assert (await calendar_sync.sync(google.ctx, google.account.id)).conflicts == 1

    resolved, applied = await calendar_sync.resolve(
        google.ctx, conflict.id, Resolution.KEEP_CALENDAR
    )

    assert applied.status is RunStatus.SUCCESS
    assert applied.conflicts == 0
    assert resolved.status is ConflictStatus.RESOLVED
    assert (await _appointments(services, google.ctx))[row.ical_uid].title == (
        "Google title"
    )
    assert await calendar_sync.conflicts(google.ctx) == []


async def test_keep_crm_writes_the_crm_version_to_google(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    _, call_tokyo = google.demo.client_call_ids
    rows = await _appointments(services, google.ctx)
    row = next(r for r in rows.values() if r.timezone == "Asia/Tokyo")
    async with services.db.tenant(google.ctx) as session:
        repo = AppointmentRepository(session)
        current = await repo.get(row.id)
        await repo.update(
            row.id,
            AppointmentDraft(title="Kept from CRM", span=current.span),
            expected_version=current.version,
        )
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{GOOGLE_EMAIL}/events/{call_tokyo}",
        json={"location": "Changed in Google"},
    )
    await calendar_sync.sync(google.ctx, google.account.id)
    [conflict] = await calendar_sync.conflicts(google.ctx)

    await calendar_sync.resolve(google.ctx, conflict.id, Resolution.KEEP_CRM)

    event = next(
        e for e in await _sandbox_events(sandbox) if e["iCalUID"] == row.ical_uid
    )
    assert event["summary"] == "Kept from CRM"
    assert "location" not in event or event["location"] != "Changed in Google"


async def test_a_calendar_that_suddenly_lists_nothing_needs_confirmation(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    synced = (await calendar_sync.account(google.ctx, google.account.id)).mapped_events
    assert synced > 0
    for event in await _sandbox_events(sandbox):
        if "recurringEventId" not in event:
            await sandbox.control(
                "google", "DELETE", f"calendars/{GOOGLE_EMAIL}/events/{event['id']}"
            )

    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.status is RunStatus.FAILED
    assert run.errors[0].code == "mass_delete"
    assert "confirm" in run.errors[0].message
    assert f"although {synced} were synced before" in run.errors[0].message
    rows = await _appointments(services, google.ctx)
    assert all(r.status != "cancelled" for r in rows.values())

    confirmed = await calendar_sync.sync(
        google.ctx, google.account.id, confirm_mass_delete=True
    )
    assert confirmed.status is RunStatus.SUCCESS
    assert confirmed.events_deleted == 4
    rows = await _appointments(services, google.ctx)
    assert all(r.status == "cancelled" for r in rows.values())


async def test_one_sync_at_a_time_per_calendar(
    google: GoogleAccount, calendar_sync: CalendarSync, services
):
    results = await asyncio.gather(
        calendar_sync.sync(google.ctx, google.account.id),
        calendar_sync.sync(google.ctx, google.account.id),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, SyncInProgress)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 1
    assert len(done) == 1
    assert "being synced" in str(refused[0])
    assert len(await _appointments(services, google.ctx)) == 4
    # the lease is released: the next sync runs
    assert (await calendar_sync.sync(google.ctx, google.account.id)).status is (
        RunStatus.SUCCESS
    )


async def test_other_users_never_see_or_sync_the_account(
    google: GoogleAccount, calendar_sync: CalendarSync, tenants
):
    await calendar_sync.sync(google.ctx, google.account.id)
    for other in (tenants.amy.ctx, tenants.bob.ctx):
        assert await calendar_sync.accounts(other) == []
        with pytest.raises(NotFound):
            await calendar_sync.sync(other, google.account.id)
        with pytest.raises(NotFound):
            await calendar_sync.account(other, google.account.id)
        assert await calendar_sync.runs(other) == []


async def test_a_revoked_grant_fails_the_run_with_reconnect_advice(
    google: GoogleAccount, calendar_sync: CalendarSync, sandbox: Sandbox, services
):
    await sandbox.control(
        "google", "POST", "grants/revoke", json={"email": GOOGLE_EMAIL}
    )
    await sandbox.control(
        "google", "POST", "tokens/expire", json={"email": GOOGLE_EMAIL}
    )

    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.status is RunStatus.FAILED
    assert run.errors[0].code == "reconnect"
    assert "reconnect" in run.errors[0].message.lower()
    assert await _appointments(services, google.ctx) == {}
    account = await calendar_sync.account(google.ctx, google.account.id)
    assert account.last_sync_status is RunStatus.FAILED
    assert account.last_error


async def test_mappings_are_the_status_rows(
    google: GoogleAccount, calendar_sync: CalendarSync, services
):
    await calendar_sync.sync(google.ctx, google.account.id)
    async with services.db.tenant(google.ctx) as session:
        mappings = list(await session.scalars(select(models.CalendarEventMapping)))
        count = await session.scalar(
            select(func.count()).select_from(models.Appointment)
        )
    assert len(mappings) == count == 4
    for m in mappings:
        assert m.appointment_id is not None
        assert str(m.appointment_id) == m.crm_item_id
        assert m.ical_uid
        assert m.external_event_etag
        assert len(m.crm_hash) == 64
        assert m.crm_hash == m.external_hash
        uuid.UUID(m.crm_item_id)


async def test_a_shared_meeting_takes_each_users_own_response_only(
    flow, sandbox: Sandbox, calendar_sync: CalendarSync, services, tenants
):
    """Case 23, per-user attendee status: alice owns the appointment; amy's
    calendar contributes amy's answer and nothing else."""
    from tests.calendar_sync.conftest import connect_google

    amy_google = "amy@gmail.test"
    start = dt.datetime(2026, 12, 3, 15, tzinfo=dt.UTC)
    event = {
        "iCalUID": "kickoff-acme@example.com",
        "summary": "Kick-off with ACME",
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
        "attendees": [
            {"email": GOOGLE_EMAIL, "responseStatus": "accepted"},
            {"email": amy_google, "responseStatus": "needsAction"},
        ],
    }
    alice = await connect_google(flow, sandbox, calendar_sync, tenants.alice.ctx)
    amy = await connect_google(
        flow, sandbox, calendar_sync, tenants.amy.ctx, amy_google
    )
    await sandbox.control(
        "google", "POST", f"calendars/{GOOGLE_EMAIL}/events", json=event
    )
    copy = (
        await sandbox.control(
            "google", "POST", f"calendars/{amy_google}/events", json=event
        )
    ).json()
    await calendar_sync.sync(alice.ctx, alice.account.id)
    await calendar_sync.sync(amy.ctx, amy.account.id)

    # amy accepts in her calendar and, carelessly, renames her copy
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{amy_google}/events/{copy['id']}",
        json={
            "summary": "Kick-off (Amy's copy)",
            "attendees": [
                {"email": GOOGLE_EMAIL, "responseStatus": "accepted"},
                {"email": amy_google, "responseStatus": "accepted"},
            ],
        },
    )
    run = await calendar_sync.sync(amy.ctx, amy.account.id)

    assert run.status is RunStatus.SUCCESS, run.errors
    row = (await _appointments(services, alice.ctx))["kickoff-acme@example.com"]
    assert row.user_id == alice.ctx.user_id
    assert row.title == "Kick-off with ACME"
    responses = {a["email"]: a["response_status"] for a in row.attendees}
    assert responses == {GOOGLE_EMAIL: "accepted", amy_google: "accepted"}
    # recording the answer changed the appointment, so amy's next sync brings
    # her copy back to the owner's version (her answer kept); then all is quiet
    back = await calendar_sync.sync(amy.ctx, amy.account.id)
    assert (back.events_updated, back.errors) == (1, ())
    [mine] = [
        e
        for e in (await _sandbox_events(sandbox, amy_google))
        if e["iCalUID"] == "kickoff-acme@example.com"
    ]
    assert mine["summary"] == "Kick-off with ACME"
    assert {a["email"]: a["responseStatus"] for a in mine["attendees"]}[
        amy_google
    ] == "accepted"
    quiet = await calendar_sync.sync(amy.ctx, amy.account.id)
    assert (quiet.events_updated, quiet.errors) == (0, ())


async def _log(services: Services, ctx) -> list[tuple[str, str | None]]:
    async with services.db.tenant(ctx) as session:
        log = models.CalendarSyncLog
        rows = await session.execute(
            select(log.status, log.errors).order_by(log.started_at, log.id)
        )
        return [(status, (errors or [{}])[0].get("code")) for status, errors in rows]


async def _lease(services: Services, google: GoogleAccount) -> dt.datetime | None:
    async with services.db.tenant(google.ctx) as session:
        row = await session.get_one(models.CalendarAccount, google.account.id)
        return row.sync_lease_until


async def _rename_in_google(
    sandbox: Sandbox, google: GoogleAccount, title: str
) -> None:
    """Retitle one of the demo calendar's events, as its owner would in Google."""
    [call_ny, _] = google.demo.client_call_ids
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{GOOGLE_EMAIL}/events/{call_ny}",
        json={"summary": title},
    )


async def test_a_run_whose_first_transaction_is_lost_is_logged_and_leaves_no_lease(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    services: Services,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the first transaction takes the lease, writes the log row and goes on
    # with the status load; a cancellation in the middle of a statement takes
    # the connection (and the transaction) with it
    from crmflow.store import appointment_sync

    real = appointment_sync.load_mappings

    async def cancelled_mid_statement(session, account_id):  # type: ignore[no-untyped-def]
        await (await session.connection()).invalidate()
        raise asyncio.CancelledError

    monkeypatch.setattr(appointment_sync, "load_mappings", cancelled_mid_statement)
    with pytest.raises(asyncio.CancelledError):
        await calendar_sync.sync(google.ctx, google.account.id)
    # the cancellation is what the caller sees, the run is in the log as
    # failed (not "running" for ever), and no lease blocks the next run
    assert await _log(services, google.ctx) == [("failed", None)]
    assert await _lease(services, google) is None

    monkeypatch.setattr(appointment_sync, "load_mappings", real)
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.status is RunStatus.SUCCESS
    uids = {e["iCalUID"] for e in await _sandbox_events(sandbox)}
    assert run.events_imported == len(uids) > 0


async def test_a_run_that_cannot_record_its_outcome_keeps_nothing_half_written(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    services: Services,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a successful run's last CRM writes and status commit with its outcome:
    # when the outcome cannot be written, none of them is kept, and the next
    # run (once the lease ran out) does the work again, once
    from crmflow.store.calendar_accounts import CalendarAccountStore

    real = CalendarAccountStore.finish_run

    async def broken(self, run, now, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("the database went away")

    monkeypatch.setattr(CalendarAccountStore, "finish_run", broken)
    with pytest.raises(RuntimeError, match="went away"):
        await calendar_sync.sync(google.ctx, google.account.id)
    assert await _appointments(services, google.ctx) == {}
    async with services.db.tenant(google.ctx) as session:
        mappings = await session.scalar(
            select(func.count()).select_from(models.CalendarEventMapping)
        )
    assert mappings == 0
    assert await _log(services, google.ctx) == [("running", None)]

    monkeypatch.setattr(CalendarAccountStore, "finish_run", real)
    async with services.db.tenant(google.ctx) as session:
        row = await session.get_one(models.CalendarAccount, google.account.id)
        row.sync_lease_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.status is RunStatus.SUCCESS
    uids = {e["iCalUID"] for e in await _sandbox_events(sandbox)}
    assert run.events_imported == len(uids) > 0
    assert set(await _appointments(services, google.ctx)) == uids
    assert await _log(services, google.ctx) == [
        ("failed", "interrupted"),
        ("success", None),
    ]


async def test_tokens_the_keys_cannot_open_fail_the_run_with_a_message(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    services: Services,
    sandbox: Sandbox,
) -> None:
    # the stored access token was encrypted with a key that is gone
    async with services.db.tenant(google.ctx) as session:
        row = await session.get_one(
            models.UserIntegration, google.account.integration_id
        )
        row.access_token = "v1:gone:" + "A" * 40
    before = len(await sandbox.requests())
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.status is RunStatus.FAILED
    assert "CRMFLOW_ENCRYPTION_KEYS" in run.errors[0].message or (
        "reconnect" in run.errors[0].message.lower()
    ), run.errors
    assert len(await sandbox.requests()) == before
    assert await _lease(services, google) is None
    assert await _appointments(services, google.ctx) == {}


async def test_the_change_feed_is_requested_while_the_run_reads_its_status(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    services: Services,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an incremental run asks Google for its changes before it reads its
    # status: the status load below waits until the sandbox has received that
    # request, which it only can if the request went out first
    from crmflow.store import appointment_sync

    await calendar_sync.sync(google.ctx, google.account.id)
    await _rename_in_google(sandbox, google, "Renamed while loading")
    before = len(await sandbox.requests())
    real = appointment_sync.load_mappings
    seen: list[list[str]] = []

    async def load_once_the_feed_is_asked(session, account_id):  # type: ignore[no-untyped-def]
        for _ in range(200):
            sent = [e["apiMethod"] for e in (await sandbox.requests())[before:]]
            if sent:
                break
            await asyncio.sleep(0.02)
        seen.append(sent)
        return await real(session, account_id)

    monkeypatch.setattr(appointment_sync, "load_mappings", load_once_the_feed_is_asked)
    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert seen == [["calendar.events.list"]]
    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.events_updated == 1
    # the early answer is the one the run used: no second request for it
    sent = (await sandbox.requests())[before:]
    assert [e["apiMethod"] for e in sent] == ["calendar.events.list"]
    titles = {r.title for r in (await _appointments(services, google.ctx)).values()}
    assert "Renamed while loading" in titles


async def test_a_run_that_stops_before_its_listing_drops_the_early_change_feed(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    services: Services,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the change feed requested ahead is never used when the run stops while
    # reading its status; its cursor is not saved, so the next run finds the
    # same change
    from crmflow.store import appointment_sync

    await calendar_sync.sync(google.ctx, google.account.id)
    await _rename_in_google(sandbox, google, "Renamed before a failed run")
    real = appointment_sync.load_mappings

    async def broken(session, account_id):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.2)  # the early request has its answer by now
        raise RuntimeError("the status could not be read")

    monkeypatch.setattr(appointment_sync, "load_mappings", broken)
    with pytest.raises(RuntimeError, match="could not be read"):
        await calendar_sync.sync(google.ctx, google.account.id)
    assert await _log(services, google.ctx) == [("success", None), ("failed", None)]
    monkeypatch.setattr(appointment_sync, "load_mappings", real)
    run = await calendar_sync.sync(google.ctx, google.account.id)

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.events_updated == 1
    titles = {r.title for r in (await _appointments(services, google.ctx)).values()}
    assert "Renamed before a failed run" in titles
    assert await _lease(services, google) is None


async def test_a_range_lists_the_standup_begun_weeks_ago_with_its_exceptions(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    services: Services,
    sandbox: Sandbox,
):
    """The demo's weekly standup began three weeks ago; next week's is moved
    to Tuesday 10:00, the one after cancelled. Listed for the coming four
    weeks it is there, with the occurrences that happen in them."""
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.status is RunStatus.SUCCESS, run.errors
    tz = ZoneInfo("Europe/Zurich")
    now = sandbox.state.clock.now().astimezone(tz)
    monday = now.date() - dt.timedelta(days=now.weekday())

    def at(weeks: int, days: int, hour: int, minute: int) -> dt.datetime:
        day = monday + dt.timedelta(weeks=weeks, days=days)
        return dt.datetime.combine(day, dt.time(hour, minute), tz)

    async with services.db.tenant(google.ctx) as session:
        page = await AppointmentRepository(session).overlapping(
            start=at(0, 0, 0, 0), end=at(4, 0, 0, 0)
        )
    [standup] = [a for a in page.items if a.title == "Team Standup"]
    assert [(o.start_at, o.end_at) for o in standup.occurrences] == [
        (at(0, 0, 9, 30), at(0, 0, 9, 45)),
        (at(1, 1, 10, 0), at(1, 1, 10, 15)),  # moved to Tuesday
        (at(3, 0, 9, 30), at(3, 0, 9, 45)),  # the week before: cancelled
    ]
    # what a range query passes over is written with every import: a single
    # event ends when it ends, the standup repeats without end
    for row in (await _appointments(services, google.ctx)).values():
        assert row.series_end_at == (None if row.recurrence else row.end_at)
