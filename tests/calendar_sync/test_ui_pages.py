"""The calendar sync pages over HTTP (httpx against the app), on SQLite and
PostgreSQL, with Google reached through the sandbox.

Every page renders for its owner and shows nothing of other users' calendars
(404 or absent); every POST needs the CSRF token; the toast after a sync says
what the run did; "Keep calendar" on the Conflicts page changes the
appointment; the OAuth callback returns to the calendar choice, and only to
paths on this site.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from crmflow.bootstrap import Services
from crmflow.domain.appointments import AppointmentStatus, timed_span
from crmflow.domain.calendar import RecurrenceException
from crmflow.domain.calendar_accounts import (
    ConflictStatus,
    DeleteMode,
    Direction,
    ExportScope,
    RunStatus,
    Strategy,
)
from crmflow.domain.crm import AppointmentDraft
from crmflow.domain.integrations import ProviderKey
from crmflow.services.calendar_sync import CalendarSync
from crmflow.store import models
from crmflow.store.calendar_accounts import CalendarAccountStore
from crmflow.store.calendar_json import exceptions_to_json
from crmflow.store.repositories import AppointmentRepository
from tests.calendar_sync.conftest import GOOGLE_EMAIL, GoogleAccount
from tests.connections.conftest import csrf_of, sign_in, web_client
from tests.servers.sandbox import Sandbox, path_of

_FLASH = re.compile(r'<div class="flash[^"]*"[^>]*>(.*?)</div>')


@pytest.fixture
def app(app: FastAPI, calendar_sync: CalendarSync) -> FastAPI:
    """The app with the tests' calendar sync service (the sandbox's clock)."""
    app.state.calendar_sync = calendar_sync
    return app


def words(fragment: str) -> str:
    """The text of an HTML fragment as a person reads it."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def flashes(page: str) -> list[str]:
    return [words(m) for m in _FLASH.findall(page)]


async def _appointments(services: Services, ctx) -> dict[str, models.Appointment]:
    async with services.db.tenant(ctx) as session:
        rows = await session.scalars(select(models.Appointment))
        return {r.ical_uid: r for r in rows}


async def _conflict(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    sandbox: Sandbox,
    services: Services,
) -> models.Appointment:
    """Sync, then change the New York call differently on both sides and sync
    again: one open conflict. Returns the appointment row."""
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
        json={"summary": "Google <b>title</b>"},
    )
    run = await calendar_sync.sync(google.ctx, google.account.id)
    assert run.conflicts == 1
    return row


# ------------------------------------------------------------------ pages


async def test_every_page_renders_for_the_owner(
    web: httpx.AsyncClient,
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    sandbox: Sandbox,
    services: Services,
    tenants,
):
    await sign_in(web, tenants.alice)
    await _conflict(google, calendar_sync, sandbox, services)
    account = google.account
    pages = {
        "/calendars": "Manage calendars",
        "/calendars/connect": "Connect a calendar",
        f"/calendars/choose/{account.integration_id}": "Choose the calendars to sync",
        f"/calendars/welcome?account={account.id}": "Your calendar is connected",
        "/calendars/log": "Sync log",
        f"/calendars/log?account={account.id}": "Sync log",
        "/calendars/conflicts": "Conflicts",
        f"/calendars/conflicts?account={account.id}": "Conflicts",
        f"/calendars/{account.id}/remove": "Stop syncing",
        "/calendars/connect/caldav": "Connect a CalDAV calendar",
    }
    for path, heading in pages.items():
        page = await web.get(path)
        assert page.status_code == 200, (path, page.text)
        assert heading in page.text, path
        assert 'aria-current="page">Calendars</a>' in page.text, path

    manage = (await web.get("/calendars")).text
    card = words(manage[manage.index(f'id="account-{account.id}"') :])
    assert account.name in card
    assert "Google" in card
    assert "Syncing" in card
    assert "Last run: Synced" in card
    assert "1 open conflict" in card
    assert "Latest change wins" in card
    assert "clocks" in card  # the latest-wins caveat
    # the Conflicts tab counts what waits for a person
    assert '<span class="count-pill">1</span>' in manage

    log = words((await web.get("/calendars/log")).text)
    assert "Manual Synced 4 0 0 0 0" in log  # the first run: 4 imported
    assert "Manual Synced 0 0 0 0 1" in log  # the run that found the conflict

    choose = (await web.get(f"/calendars/choose/{account.integration_id}")).text
    assert "Synced already" in words(choose)
    assert "Main calendar" in words(choose)

    appointments = (await web.get("/appointments")).text
    for action in ("Connect calendar", "Manage calendars"):
        assert action in appointments
    assert 'action="/calendars/sync"' in appointments


async def test_appointments_list_shows_series_and_all_day(
    web, google: GoogleAccount, calendar_sync: CalendarSync, tenants, services
):
    await sign_in(web, tenants.alice)
    await calendar_sync.sync(google.ctx, google.account.id)

    upcoming = (await web.get("/appointments")).text
    past = (await web.get("/appointments?show=past")).text

    # the weekly standup began three weeks ago and still repeats: it is upcoming
    series = re.search(r'<li class="appt appt-series"(.*?)</li>', upcoming, re.S)
    assert series, "the running series is not in the upcoming list"
    shown = words(series.group(1))
    assert "Team Standup" in shown
    assert "Repeats weekly on Monday" in shown
    assert "Since " in shown
    # and when it meets next: the first Monday occurrence after now, on the
    # series' own wall clock
    row = next(
        r
        for r in (await _appointments(services, google.ctx)).values()
        if r.title == "Team Standup"
    )
    async with services.db.tenant(google.ctx) as session:
        standup = await AppointmentRepository(session).get(row.id)
    tz = ZoneInfo(standup.span.timezone)
    first = standup.span.start_at.astimezone(tz)
    now = dt.datetime.now(tz)

    def weekly_after(instant: dt.datetime, skip: set[dt.datetime]) -> dt.datetime:
        """The rule's first Monday after ``instant`` that is not in ``skip``."""
        found = first
        while found <= instant or found in skip:
            local = found.replace(tzinfo=None) + dt.timedelta(weeks=1)
            found = local.replace(tzinfo=tz)
        return found

    # the demo moved next week's meeting and cancelled the one after: the
    # next start is whichever comes first of the rule's and the moved one
    changes = standup.occurrence_changes
    assert len(changes) == 2
    skip = {c.original_start for c in changes}
    moved_to = [c.start for c in changes if isinstance(c.start, dt.datetime)]
    nxt = min([weekly_after(now, skip), *(m for m in moved_to if m > now)])
    nxt = nxt.astimezone(tz)
    assert f"Next: {nxt:%a} {nxt.day} {nxt:%b %Y}, {nxt:%H:%M}" in shown
    # the all-day offsite says so, in either list (it may have passed this week)
    both = words(upcoming) + " " + words(past)
    assert re.search(r"Company Offsite Confirmed All day", both)
    assert re.search(r"\d{4}, all day", both)

    # with only the rule's next meeting cancelled, the one a week later is
    # next; with it moved to the day after instead, it counts there
    nxt = weekly_after(now, set())
    later = weekly_after(nxt, set())
    moved = nxt + dt.timedelta(days=1)
    for change, expected in (
        (
            RecurrenceException(nxt.astimezone(dt.UTC), AppointmentStatus.CANCELLED),
            later,
        ),
        (
            RecurrenceException(
                nxt.astimezone(dt.UTC),
                span=timed_span(moved, moved + dt.timedelta(minutes=15), tz.key),
            ),
            moved,
        ),
    ):
        async with services.db.tenant(google.ctx) as session:
            stored = await session.get(models.Appointment, row.id)
            assert stored is not None
            stored.recurrence_exceptions = exceptions_to_json((change,))
        listed = (await web.get("/appointments")).text
        series = re.search(r'<li class="appt appt-series"(.*?)</li>', listed, re.S)
        assert series
        shown = words(series.group(1))
        assert (
            f"Next: {expected:%a} {expected.day} {expected:%b %Y}, {expected:%H:%M}"
            in shown
        )


async def test_a_series_begun_long_ago_is_upcoming_however_much_came_after_it(
    web, tenants, services
):
    """A weekly meeting begun a year ago, with more than a thousand past
    appointments after it, still shows as running with its next meeting; a
    cancelled series of the same age does not show."""
    await sign_in(web, tenants.alice)
    ctx = tenants.alice.ctx
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    begun = now - dt.timedelta(days=365)
    async with services.db.tenant(ctx) as session:
        repo = AppointmentRepository(session)
        for title, status in (
            ("Weekly pipeline review", AppointmentStatus.CONFIRMED),
            ("Dropped series", AppointmentStatus.CANCELLED),
        ):
            await repo.create(
                AppointmentDraft(
                    title=title,
                    span=timed_span(begun, begun + dt.timedelta(hours=1), "UTC"),
                    status=status,
                    recurrence_rule="FREQ=WEEKLY",
                )
            )
        for n in range(1100):  # single appointments since, all in the past
            start = begun + dt.timedelta(days=1, hours=n * 7)
            session.add(
                models.Appointment(
                    organization_id=ctx.organization_id,
                    user_id=ctx.user_id,
                    title=f"Call {n}",
                    start_at=start,
                    end_at=start + dt.timedelta(minutes=30),
                    series_end_at=start + dt.timedelta(minutes=30),
                    timezone="UTC",
                )
            )
    upcoming = (await web.get("/appointments")).text
    series = re.findall(r'<li class="appt appt-series"(.*?)</li>', upcoming, re.S)
    assert [t for t in map(words, series) if "Weekly pipeline review" in t], upcoming
    shown = words(" ".join(series))
    weeks = (now - begun) // dt.timedelta(weeks=1) + 1
    nxt = begun + dt.timedelta(weeks=weeks)
    assert f"Next: {nxt:%a} {nxt.day} {nxt:%b %Y}, {nxt:%H:%M}" in shown
    assert "Dropped series" not in words(upcoming)


async def test_other_users_never_see_the_accounts_or_conflicts(
    app: FastAPI,
    web: httpx.AsyncClient,
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    sandbox: Sandbox,
    services: Services,
    tenants,
):
    await _conflict(google, calendar_sync, sandbox, services)
    [conflict] = await calendar_sync.conflicts(google.ctx)
    account = google.account
    for other in (tenants.amy, tenants.bob):  # same organization; another one
        async with web_client(app) as browser:
            token = await sign_in(browser, other)
            for path in ("/calendars", "/calendars/log", "/calendars/conflicts"):
                page = await browser.get(path)
                assert page.status_code == 200
                assert str(account.id) not in page.text
                assert str(conflict.id) not in page.text
                assert account.name not in page.text
                assert "CRM title" not in page.text
            connect = await browser.get("/calendars/connect")
            assert str(account.integration_id) not in connect.text
            assert GOOGLE_EMAIL not in connect.text
            welcome = await browser.get(f"/calendars/welcome?account={account.id}")
            assert welcome.status_code == 303  # nothing of theirs to welcome
            for path in (
                f"/calendars/{account.id}/remove",
                f"/calendars/log?account={account.id}",
                f"/calendars/conflicts?account={account.id}",
                f"/calendars/choose/{account.integration_id}",
            ):
                assert (await browser.get(path)).status_code == 404, path
            for path, data in (
                (f"/calendars/{account.id}/sync", {}),
                (f"/calendars/{account.id}/remove", {"confirm": "yes"}),
                (
                    f"/calendars/{account.id}",
                    {
                        "direction": "import_only",
                        "strategy": "crm_wins",
                        "export_scope": "none",
                        "delete_mode": "delete",
                    },
                ),
                (
                    f"/calendars/conflicts/{conflict.id}/resolve",
                    {"keep": "crm", "seen": conflict.created_at.isoformat()},
                ),
                (
                    f"/calendars/choose/{account.integration_id}",
                    {"calendar": GOOGLE_EMAIL, "direction": "two_way"},
                ),
            ):
                response = await browser.post(path, data={"csrf_token": token, **data})
                assert response.status_code == 404, path
    # nothing of alice's changed
    after = await calendar_sync.account(google.ctx, account.id)
    assert (after.direction, after.strategy) == (account.direction, account.strategy)
    [still] = await calendar_sync.conflicts(google.ctx)
    assert still.resolution is None
    assert len(await calendar_sync.runs(google.ctx)) == 2


async def test_every_post_needs_the_csrf_token(
    web, google: GoogleAccount, calendar_sync, sandbox, services, tenants
):
    token = await sign_in(web, tenants.alice)
    await _conflict(google, calendar_sync, sandbox, services)
    [conflict] = await calendar_sync.conflicts(google.ctx)
    account = google.account
    posts = {
        "/calendars/sync": {"next": "/appointments"},
        f"/calendars/{account.id}/sync": {"confirm_mass_delete": "yes"},
        f"/calendars/{account.id}": {
            "direction": "import_only",
            "strategy": "crm_wins",
            "export_scope": "none",
            "delete_mode": "delete",
        },
        f"/calendars/{account.id}/remove": {"confirm": "yes"},
        f"/calendars/conflicts/{conflict.id}/resolve": {
            "keep": "calendar",
            "seen": conflict.created_at.isoformat(),
        },
        f"/calendars/choose/{account.integration_id}": {
            "calendar": GOOGLE_EMAIL,
            "direction": "two_way",
            "strategy": "manual",
        },
        "/calendars/connect/caldav": {
            "preset": "custom",
            "url": "http://127.0.0.1:9/",
            "username": "alice",
            "password": "pw",
        },
        "/oauth/connect/google/calendar": {"next": "/calendars/connect/google/done"},
    }
    for path, data in posts.items():
        for sent in (data, {**data, "csrf_token": "forged-" + token[:10]}):
            response = await web.post(path, data=sent)
            assert response.status_code == 403, path
            assert "This form has expired" in response.text
    # nothing happened
    assert len(await calendar_sync.runs(google.ctx)) == 2
    assert (await calendar_sync.account(google.ctx, account.id)).direction is (
        Direction.TWO_WAY
    )
    [still] = await calendar_sync.conflicts(google.ctx)
    assert still.resolution is None


# ------------------------------------------------------------------ syncing


async def test_sync_toast_says_what_the_run_did(
    web, google: GoogleAccount, calendar_sync: CalendarSync, sandbox, tenants
):
    token = await sign_in(web, tenants.alice)

    response = await web.post(
        "/calendars/sync", data={"csrf_token": token, "next": "/appointments"}
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/appointments"
    [run] = await calendar_sync.runs(google.ctx)
    assert run.status is RunStatus.SUCCESS
    page = (await web.get("/appointments")).text
    assert flashes(page) == [
        f"Synced 1 calendar account: {run.events_imported} imported, "
        f"{run.events_exported} exported, {run.conflicts} conflicts."
    ]
    assert run.events_imported == 4
    assert "Team Standup" in page

    # a change in Google, then "Sync now" of that calendar on Manage calendars
    _, call_tokyo = google.demo.client_call_ids
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{GOOGLE_EMAIL}/events/{call_tokyo}",
        json={"summary": "Moved to Osaka"},
    )
    one = await web.post(
        f"/calendars/{google.account.id}/sync",
        data={"csrf_token": token, "next": "/calendars"},
    )
    assert one.headers["location"] == "/calendars"
    latest = (await calendar_sync.runs(google.ctx))[0]
    assert latest.events_updated == 1
    assert flashes((await web.get("/calendars")).text) == [
        "Synced 1 calendar account: 0 imported, 0 exported, 1 updated, 0 conflicts."
    ]


async def test_sync_without_calendars_and_a_foreign_next(web, tenants, services):
    token = await sign_in(web, tenants.alice)
    response = await web.post(
        "/calendars/sync",
        data={"csrf_token": token, "next": "https://evil.example/steal"},
    )
    assert response.headers["location"] == "/appointments"  # never off-site
    page = (await web.get("/appointments")).text
    assert flashes(page) == [
        "No calendar is synced yet: connect one first. Connect calendar"
    ]
    assert 'class="flash-action" href="/calendars/connect"' in page


async def test_a_sync_already_running_gets_a_friendly_message(
    web, google: GoogleAccount, calendar_sync: CalendarSync, services, sandbox, tenants
):
    token = await sign_in(web, tenants.alice)
    now = sandbox.state.clock.now()
    async with services.db.tenant(google.ctx) as session:
        # another process holds the account's lease, as a running sync does
        assert await CalendarAccountStore(session).acquire_lease(
            google.account.id, now, now.replace(year=now.year + 1)
        )

    await web.post("/calendars/sync", data={"csrf_token": token})

    page = (await web.get("/appointments")).text
    [message] = flashes(page)
    assert "is being synced right now" in message
    assert "sync log" in message
    assert await calendar_sync.runs(google.ctx) == []


async def test_a_calendar_that_lists_nothing_offers_to_confirm(
    web, google: GoogleAccount, calendar_sync: CalendarSync, sandbox, services, tenants
):
    token = await sign_in(web, tenants.alice)
    await calendar_sync.sync(google.ctx, google.account.id)
    events = await sandbox.control("google", "GET", f"calendars/{GOOGLE_EMAIL}/events")
    for event in events.json()["items"]:
        if "recurringEventId" not in event:
            await sandbox.control(
                "google", "DELETE", f"calendars/{GOOGLE_EMAIL}/events/{event['id']}"
            )

    await web.post("/calendars/sync", data={"csrf_token": token, "next": "/calendars"})

    page = (await web.get("/calendars")).text
    [message] = flashes(page)
    assert "suddenly lists no events" in message
    assert "Confirm the deletions and sync" in message
    form = re.search(
        r'<form method="post" action="(/calendars/[^"]+/sync)"[^>]*>(.*?)</form>',
        page,
    )
    assert form
    assert form.group(1) == f"/calendars/{google.account.id}/sync"
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
    assert fields["confirm_mass_delete"] == "yes"
    rows = await _appointments(services, google.ctx)
    assert all(r.status != "cancelled" for r in rows.values())

    confirmed = await web.post(form.group(1), data=fields)

    assert confirmed.headers["location"] == "/calendars"
    rows = await _appointments(services, google.ctx)
    assert all(r.status == "cancelled" for r in rows.values())
    [message] = flashes((await web.get("/calendars")).text)
    assert message.startswith("Synced 1 calendar account:")
    assert "4 deleted" in message


async def test_a_revoked_grant_links_to_the_integrations(
    web, google: GoogleAccount, sandbox, tenants
):
    token = await sign_in(web, tenants.alice)
    await sandbox.control(
        "google", "POST", "grants/revoke", json={"email": GOOGLE_EMAIL}
    )
    await sandbox.control(
        "google", "POST", "tokens/expire", json={"email": GOOGLE_EMAIL}
    )

    await web.post("/calendars/sync", data={"csrf_token": token})

    page = (await web.get("/appointments")).text
    [message] = flashes(page)
    assert "reconnect the account in Settings -> Integrations" in message
    assert 'class="flash-action" href="/settings/integrations"' in page


# ------------------------------------------------------------------ conflicts


async def test_keep_calendar_on_the_conflicts_page_changes_the_appointment(
    web, google: GoogleAccount, calendar_sync: CalendarSync, sandbox, services, tenants
):
    token = await sign_in(web, tenants.alice)
    row = await _conflict(google, calendar_sync, sandbox, services)
    [conflict] = await calendar_sync.conflicts(google.ctx)

    page = (await web.get("/calendars/conflicts")).text

    section = page[page.index(f'id="conflict-{conflict.id}"') :]
    title = re.search(r'<tr class="(\w+)" data-field="Title">(.*?)</tr>', section, re.S)
    assert title
    assert title.group(1) == "differs"
    assert "CRM title" in words(title.group(2))
    # the calendar's text is shown as text, never as markup
    assert "Google &lt;b&gt;title&lt;/b&gt;" in title.group(2)
    assert "<b>title</b>" not in page
    when = re.search(r'<tr class="(\w+)" data-field="When">(.*?)</tr>', section, re.S)
    assert when
    assert when.group(1) == "same"
    assert "(America/New York)" in words(when.group(2))
    seen = re.search(r'name="seen" value="([^"]+)"', section)
    assert seen

    response = await web.post(
        f"/calendars/conflicts/{conflict.id}/resolve",
        data={
            "csrf_token": token,
            "keep": "calendar",
            "seen": html.unescape(seen.group(1)),
        },
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/calendars/conflicts"
    after = (await web.get("/calendars/conflicts")).text
    assert flashes(after) == [
        "Kept the calendar's version of “CRM title”: the appointment has it now."
    ]
    assert "No conflicts" in after
    rows = await _appointments(services, google.ctx)
    assert rows[row.ical_uid].title == "Google <b>title</b>"
    resolved = await calendar_sync.conflict(google.ctx, conflict.id)
    assert resolved.status is ConflictStatus.RESOLVED


async def test_a_conflict_that_changed_since_the_page_was_shown_is_not_chosen(
    web, google: GoogleAccount, calendar_sync: CalendarSync, sandbox, services, tenants
):
    token = await sign_in(web, tenants.alice)
    row = await _conflict(google, calendar_sync, sandbox, services)
    [conflict] = await calendar_sync.conflicts(google.ctx)

    response = await web.post(
        f"/calendars/conflicts/{conflict.id}/resolve",
        data={"csrf_token": token, "keep": "crm", "seen": "2001-01-01T00:00:00+00:00"},
    )

    assert response.status_code == 303
    [message] = flashes((await web.get("/calendars/conflicts")).text)
    assert "changed again since the page was shown, so nothing was chosen" in message
    [still] = await calendar_sync.conflicts(google.ctx)
    assert still.resolution is None
    assert (await _appointments(services, google.ctx))[row.ical_uid].title == (
        "CRM title"
    )


async def test_a_version_changed_while_choosing_keeps_the_conflict_open(
    web, google: GoogleAccount, calendar_sync: CalendarSync, sandbox, services, tenants
):
    token = await sign_in(web, tenants.alice)
    row = await _conflict(google, calendar_sync, sandbox, services)
    [conflict] = await calendar_sync.conflicts(google.ctx)
    call_ny, _ = google.demo.client_call_ids
    # changed in Google after the page was shown, before the click
    await sandbox.control(
        "google",
        "PATCH",
        f"calendars/{GOOGLE_EMAIL}/events/{call_ny}",
        json={"summary": "Changed once more"},
    )

    await web.post(
        f"/calendars/conflicts/{conflict.id}/resolve",
        data={
            "csrf_token": token,
            "keep": "crm",
            "seen": conflict.created_at.isoformat(),
        },
    )

    page = (await web.get("/calendars/conflicts")).text
    [message] = flashes(page)
    assert "while you chose, so nothing was overwritten" in message
    assert "Changed once more" in page  # the new version is shown
    assert (await _appointments(services, google.ctx))[row.ical_uid].title == (
        "CRM title"
    )


# ------------------------------------------------------------------ manage


async def test_settings_pause_and_stop_syncing(
    web, google: GoogleAccount, calendar_sync: CalendarSync, services, tenants
):
    token = await sign_in(web, tenants.alice)
    account = google.account
    await calendar_sync.sync(google.ctx, account.id)

    saved = await web.post(
        f"/calendars/{account.id}",
        data={
            "csrf_token": token,
            "direction": "import_only",
            "strategy": "latest_wins",
            "export_scope": "none",
            "delete_mode": "delete",
            # "enabled" not sent: the checkbox is unticked
        },
    )
    assert saved.headers["location"] == f"/calendars#account-{account.id}"
    after = await calendar_sync.account(google.ctx, account.id)
    assert after.direction is Direction.IMPORT_ONLY
    assert after.strategy is Strategy.LATEST_WINS
    assert after.export_scope is ExportScope.NONE
    assert after.delete_mode is DeleteMode.DELETE
    assert not after.is_enabled
    page = (await web.get("/calendars")).text
    assert "It is paused" in flashes(page)[0]
    assert 'data-state="paused"' in page
    # a paused calendar is not synced by "Sync"
    await web.post("/calendars/sync", data={"csrf_token": token})
    assert "paused or disconnected" in flashes((await web.get("/appointments")).text)[0]

    invalid = await web.post(
        f"/calendars/{account.id}",
        data={"csrf_token": token, "direction": "sideways", "strategy": "manual"},
    )
    assert invalid.status_code == 422

    # Stop syncing asks first, then removes the link only
    asked = await web.post(
        f"/calendars/{account.id}/remove", data={"csrf_token": token}
    )
    assert asked.status_code == 200
    assert "stay in the CRM" in words(asked.text)
    assert "stay in the calendar" in words(asked.text)
    assert await calendar_sync.accounts(google.ctx) != []
    removed = await web.post(
        f"/calendars/{account.id}/remove", data={"csrf_token": token, "confirm": "yes"}
    )
    assert removed.headers["location"] == "/calendars"
    assert await calendar_sync.accounts(google.ctx) == []
    assert len(await _appointments(services, google.ctx)) == 4
    page = (await web.get("/calendars")).text
    assert "Its appointments stay in the CRM" in flashes(page)[0]
    assert "No calendar is synced yet" in page


# ------------------------------------------------------------------ connecting


async def test_connect_google_returns_to_the_calendar_choice(
    web, sandbox: Sandbox, calendar_sync: CalendarSync, tenants
):
    alice = tenants.alice
    token = await sign_in(web, alice)
    connect = (await web.get("/calendars/connect")).text
    assert 'action="/oauth/connect/google/calendar"' in connect
    assert 'value="/calendars/connect/google/done"' in connect

    started = await web.post(
        "/oauth/connect/google/calendar",
        data={"csrf_token": token, "next": "/calendars/connect/google/done"},
    )
    assert started.status_code == 303
    back = await sandbox.consent(started.headers["location"], GOOGLE_EMAIL)
    landed = await web.get(path_of(back))

    assert landed.status_code == 303
    assert landed.headers["location"] == "/calendars/connect/google/done"
    choice = await web.get(landed.headers["location"])
    assert choice.status_code == 303
    assert re.fullmatch(r"/calendars/choose/[0-9a-f-]{36}", choice.headers["location"])
    integration_id = uuid.UUID(choice.headers["location"].rsplit("/", 1)[1])
    page = await web.get(choice.headers["location"])
    assert f"Connected Google Calendar as {GOOGLE_EMAIL}." in flashes(page.text)
    checkbox = re.search(
        r'<input type="checkbox" name="calendar" value="([^"]+)" checked>', page.text
    )
    assert checkbox, "the main calendar is not preselected"
    assert checkbox.group(1) == GOOGLE_EMAIL

    missing = await web.post(
        f"/calendars/choose/{integration_id}",
        data={"csrf_token": token, "direction": "two_way", "strategy": "manual"},
    )
    assert missing.status_code == 422
    assert "Tick at least one calendar" in missing.text
    chosen = await web.post(
        f"/calendars/choose/{integration_id}",
        data={
            "csrf_token": csrf_of(page),
            "calendar": GOOGLE_EMAIL,
            "direction": "two_way",
            "strategy": "manual",
        },
    )
    assert chosen.status_code == 303
    [account] = await calendar_sync.accounts(alice.ctx)
    assert account.integration_id == integration_id
    assert account.external_calendar_id == GOOGLE_EMAIL
    assert chosen.headers["location"] == f"/calendars/welcome?account={account.id}"
    welcome = words((await web.get(chosen.headers["location"])).text)
    assert "Nothing is overwritten silently" in welcome
    assert "Conflicts page" in welcome
    assert "import only or export only" in welcome
    assert "Sync now" in welcome


async def test_the_callback_returns_only_to_paths_on_this_site(
    web, sandbox: Sandbox, tenants
):
    token = await sign_in(web, tenants.alice)
    for unsafe in (
        "https://evil.example/x",
        "//evil.example/x",
        "/\\evil.example",
        "/oauth/callback/google",
        "javascript:alert(1)",
    ):
        started = await web.post(
            "/oauth/connect/google/calendar",
            data={"csrf_token": token, "next": unsafe},
        )
        back = await sandbox.consent(started.headers["location"], GOOGLE_EMAIL)
        landed = await web.get(path_of(back))
        assert landed.status_code == 303
        assert landed.headers["location"].startswith(
            "/settings/integrations?integration=connected&provider=google"
        ), unsafe


async def test_cancelled_consent_returns_to_connect_calendar(
    web, sandbox: Sandbox, tenants
):
    token = await sign_in(web, tenants.alice)
    started = await web.post(
        "/oauth/connect/google/calendar",
        data={"csrf_token": token, "next": "/calendars/connect/google/done"},
    )
    back = await sandbox.consent(started.headers["location"], GOOGLE_EMAIL, deny=True)
    landed = await web.get(path_of(back))
    assert landed.headers["location"] == "/calendars/connect/google/done"
    done = await web.get(landed.headers["location"])
    assert done.headers["location"] == "/calendars/connect"
    page = (await web.get("/calendars/connect")).text
    assert "You cancelled the sign-in" in flashes(page)[0]


async def test_connected_accounts_offer_their_calendars_directly(
    web, google: GoogleAccount, flow, tenants
):
    await sign_in(web, tenants.alice)
    page = (await web.get("/calendars/connect")).text
    offer = page[page.index(f'id="offer-{google.account.integration_id}"') :]
    assert f'action="/calendars/choose/{google.account.integration_id}"' in offer
    assert "Synced already" in words(offer)
    # Google is connected: no second Connect button for it
    google_card = page[
        page.index('id="connect-google"') : page.index('id="connect-microsoft"')
    ]
    assert "/oauth/connect/google/calendar" not in google_card
    assert "choose its calendars below" in words(google_card)


@pytest.mark.servers
async def test_caldav_connects_then_offers_its_calendars(
    web, radicale, tenants, calendar_sync: CalendarSync
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
        "/calendars/connect/caldav", data={**typed, "password": "wrong-Pw-1"}
    )
    assert refused.status_code == 422
    assert "wrong-Pw-1" not in refused.text
    assert 'id="password-error"' in refused.text

    done = await web.post(
        "/calendars/connect/caldav",
        data={**typed, "password": radicale.users["alice"]},
    )
    assert done.status_code == 303, done.text
    assert re.fullmatch(r"/calendars/choose/[0-9a-f-]{36}", done.headers["location"])
    page = (await web.get(done.headers["location"])).text
    assert radicale.users["alice"] not in page
    assert "Connected CalDAV calendar as alice@example.test" in flashes(page)[0]
    names = re.findall(r'<span class="choice-name">([^<]+)</span>', page)
    assert names == ["Office"]
    view_id = uuid.UUID(done.headers["location"].rsplit("/", 1)[1])
    [calendar] = await calendar_sync.calendars(alice.ctx, view_id)
    chosen = await web.post(
        done.headers["location"],
        data={
            "csrf_token": token,
            "calendar": calendar.id,
            "direction": "import_only",
            "strategy": "calendar_wins",
        },
    )
    assert chosen.status_code == 303
    [account] = await calendar_sync.accounts(alice.ctx)
    assert account.provider is ProviderKey.CALDAV
    assert account.direction is Direction.IMPORT_ONLY
    assert account.strategy is Strategy.CALENDAR_WINS
    assert account.integration_id == view_id
