"""Calendar sync in a real browser (Debian's Chromium via Playwright).

The live server is the one of ``test_integrations_ui.py``: the Google sandbox
mounted inside crmflow at ``/sandbox``, crmflow's Google URLs pointing at it.
The person's Google calendar is seeded with the demo data first (a weekly
series with a moved and a cancelled occurrence, an all-day event, calls in New
York and Tokyo time).

One journey: sign in -> Appointments -> Connect calendar -> Google -> the
sandbox's consent page -> choose the main calendar -> the success screen ->
Sync now -> the toast, and the seeded events in the Appointments list -> edit
one appointment in the UI and the same event at Google -> Sync -> the toast
counts one conflict -> the Conflicts page shows both versions -> "Keep
calendar" -> the appointment has the calendar's title, in the list and in the
database. Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, expect

from crmflow.domain import crm
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.sandbox.state import SandboxState
from crmflow.store.db import Database
from crmflow.store.repositories import AppointmentRepository
from tests.e2e import test_integrations_ui as with_sandbox
from tests.e2e.conftest import LiveSite, PageLog, run_async

pytestmark = pytest.mark.browser

# The live server with the sandbox mounted, and its sandbox state.
live_site = with_sandbox.live_site
sandbox_state = with_sandbox.sandbox_state

GOOGLE_ACCOUNT = with_sandbox.GOOGLE_ACCOUNT
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: a full-page screenshot of a rendered page is far larger than this
MIN_SCREENSHOT_BYTES = 10_000
CRM_TITLE = "ACME renewal call (edited in the CRM)"
GOOGLE_TITLE = "ACME renewal call (edited in Google)"


def _stored(site: LiveSite) -> list[crm.Appointment]:
    async def load() -> list[crm.Appointment]:
        db = Database(site.database_url)
        ctx = TenantContext(site.user_id, site.organization_id, Role.ADMIN)
        try:
            async with db.tenant(ctx) as session:
                page = await AppointmentRepository(session).list(limit=100)
        finally:
            await db.dispose()
        return list(page.items)

    return run_async(load)


def _screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > MIN_SCREENSHOT_BYTES


def _listed(page: Page, title: str) -> Locator:
    """The list item of ``title`` under Upcoming, else under Past (which one
    depends on the weekday the test runs on; the page decides, not a clock)."""
    page.goto("/appointments")
    item = page.locator(".appt", has_text=title)
    if item.count() == 0:
        page.goto("/appointments?show=past")
        item = page.locator(".appt", has_text=title)
    expect(item).to_have_count(1)
    return item


def test_connect_google_sync_and_settle_a_conflict(
    page: Page,
    live_site: LiveSite,
    page_log: PageLog,
    sandbox_state: SandboxState,
    tmp_path: Path,
) -> None:
    demo = seed_demo_google(sandbox_state, GOOGLE_ACCOUNT)
    call_ny, _ = demo.client_call_ids
    errors: list[tuple[str, str]] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append((str(message.location.get("url")), message.text))

    page.on("console", on_console)

    # Sign in -> Appointments -> Connect calendar.
    page.goto("/appointments")
    page.get_by_label("Email address").fill(live_site.email)
    page.get_by_label("Password").fill(live_site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/appointments$"))
    page.get_by_role("link", name="Connect calendar").click()
    expect(page).to_have_url(re.compile(r"/calendars/connect$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect a calendar")
    _screenshot(page, tmp_path / "calendar-connect.png")

    # Google -> the sandbox's consent page -> back on the calendar choice.
    page.locator("#connect-google").get_by_role(
        "button", name="Connect Google Calendar"
    ).click()
    expect(page).to_have_url(re.compile(r"/sandbox/google/o/oauth2/v2/auth\?"))
    page.get_by_label(re.compile(re.escape(GOOGLE_ACCOUNT))).check()
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/calendars/choose/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Choose the calendars to sync"
    )
    expect(page.locator(".flash-success")).to_have_text(
        f"Connected Google Calendar as {GOOGLE_ACCOUNT}."
    )
    main = page.locator(".choice-row", has_text="Main calendar")
    expect(main).to_have_count(1)
    expect(main.get_by_role("checkbox")).to_be_checked()
    expect(page.get_by_label("Direction")).to_have_value("two_way")
    expect(page.get_by_label("When both sides changed an event")).to_have_value(
        "manual"
    )
    page.get_by_role("button", name="Start syncing").click()

    # The success screen explains the sync in plain words.
    expect(page).to_have_url(re.compile(r"/calendars/welcome\?account=[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Your calendar is connected"
    )
    explained = page.locator(".explain")
    expect(explained).to_contain_text("From the calendar to the CRM")
    expect(explained).to_contain_text("From the CRM to the calendar")
    expect(explained).to_contain_text("Nothing is overwritten silently")
    expect(explained).to_contain_text("import only or export only")
    _screenshot(page, tmp_path / "calendar-connected.png")
    page.get_by_role("button", name="Sync now").click()

    # The toast, and the seeded events in the list.
    expect(page).to_have_url(re.compile(r"/appointments$"))
    expect(page.locator(".flash-success")).to_have_text(
        "Synced 1 calendar account: 4 imported, 0 exported, 0 conflicts."
    )
    series = page.locator(".appt", has_text="Team Standup")
    expect(series).to_have_count(1)  # a running series is always upcoming
    expect(series).to_contain_text("Repeats weekly on Monday")
    _screenshot(page, tmp_path / "appointments-synced.png")
    offsite = _listed(page, "Company Offsite")
    expect(offsite).to_contain_text("all day")
    expect(offsite.locator(".badge", has_text="All day")).to_have_count(1)
    expect(_listed(page, "Client Call — ACME Corp (New York)")).to_contain_text(
        "America/New York"
    )
    expect(_listed(page, "Client Call — Sakura Trading (Tokyo)")).to_contain_text(
        "Asia/Tokyo"
    )
    stored = {a.title: a for a in _stored(live_site)}
    assert len(stored) == 4
    assert stored["Company Offsite"].span.all_day
    assert "FREQ=WEEKLY" in (stored["Team Standup"].recurrence_rule or "")
    ny = stored["Client Call — ACME Corp (New York)"]
    assert ny.span.timezone == "America/New_York"

    # Edit it in the CRM ...
    _listed(page, ny.title).get_by_role("link", name="Edit").click()
    expect(page).to_have_url(re.compile(rf"/appointments/{ny.id}/edit$"))
    page.get_by_label("Title").fill(CRM_TITLE)
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".flash-success")).to_contain_text(CRM_TITLE)
    # ... and at Google (the sandbox's control API).
    patched = httpx.patch(
        f"{live_site.base_url}/sandbox/google/_sandbox/calendars/"
        f"{GOOGLE_ACCOUNT}/events/{call_ny}",
        json={"summary": GOOGLE_TITLE},
    )
    assert patched.status_code == 200, patched.text

    # Sync: one conflict, nothing overwritten.
    page.goto("/appointments")
    page.get_by_role("button", name="Sync", exact=True).click()
    expect(page.locator(".flash-success")).to_contain_text(
        "Synced 1 calendar account: 0 imported, 0 exported, 1 conflict."
    )
    assert {a.title for a in _stored(live_site)} >= {CRM_TITLE}
    page.locator(".flash-success").get_by_role(
        "link", name="Review the conflicts"
    ).click()

    # The Conflicts page shows both versions, the title marked as differing.
    expect(page).to_have_url(re.compile(r"/calendars/conflicts$"))
    conflict = page.locator(".conflict")
    expect(conflict).to_have_count(1)
    title_row = conflict.locator('tr[data-field="Title"]')
    expect(title_row).to_have_class(re.compile(r"\bdiffers\b"))
    expect(title_row.locator(".crm-version")).to_have_text(CRM_TITLE)
    expect(title_row.locator(".calendar-version")).to_have_text(GOOGLE_TITLE)
    when_row = conflict.locator('tr[data-field="When"]')
    expect(when_row).to_have_class(re.compile(r"\bsame\b"))
    expect(when_row.locator(".crm-version")).to_contain_text("(America/New York)")
    expect(page.get_by_role("link", name=re.compile(r"^Conflicts"))).to_contain_text(
        "1"
    )
    _screenshot(page, tmp_path / "calendar-conflicts.png")
    conflict.get_by_role("button", name=re.compile(r"^Keep calendar")).click()

    # The calendar's version won: in the toast, the list and the database.
    expect(page.locator(".flash-success")).to_have_text(
        f"Kept the calendar's version of “{CRM_TITLE}”: the appointment has it now."
    )
    expect(page.get_by_text("No conflicts")).to_be_visible()
    expect(_listed(page, GOOGLE_TITLE)).to_contain_text("America/New York")
    after = {a.id: a for a in _stored(live_site)}
    assert after[ny.id].title == GOOGLE_TITLE
    events = httpx.get(
        f"{live_site.base_url}/sandbox/google/_sandbox/calendars/"
        f"{GOOGLE_ACCOUNT}/events"
    ).json()["items"]
    assert GOOGLE_TITLE in {e.get("summary") for e in events}
    assert CRM_TITLE not in {e.get("summary") for e in events}

    # The sync log lists the three runs, newest first.
    page.goto("/calendars/log")
    runs = page.locator("tr.run")
    expect(runs).to_have_count(3)
    expect(runs.first.locator("td").nth(3)).to_have_text("Synced")
    uuid.UUID(str(runs.first.get_attribute("data-run-id")))
    expect(runs.last.locator("td").nth(4)).to_have_text("4")  # imported
    _screenshot(page, tmp_path / "calendar-log.png")

    # Manage calendars: badges and settings; usable 390 px wide.
    page.get_by_role("navigation", name="Calendar sync").get_by_role(
        "link", name="Calendars"
    ).click()
    account = page.locator(".calendar-account")
    expect(account).to_have_count(1)
    expect(account.locator(".provider-chip")).to_have_text("Google")
    expect(account.locator(".state-badge")).to_have_text("Syncing")
    expect(account.locator(".run-badge")).to_have_text("Last run: Synced")
    expect(account.locator(".conflict-badge")).to_have_text("No conflicts")
    expect(account.get_by_label("Direction")).to_have_value("two_way")
    _screenshot(page, tmp_path / "calendars-manage.png")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(account.get_by_role("button", name=re.compile("^Sync now"))).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
    _screenshot(page, tmp_path / "calendars-manage-390.png")

    assert page_log.foreign_requests == []
    # The sandbox's consent page declares no icon, so Chromium asks for
    # /favicon.ico, which crmflow does not serve; nothing else may fail.
    favicon = (live_site.base_url + "/favicon.ico", "Failed to load resource")
    assert [e for e in errors if (e[0], e[1][: len(favicon[1])]) != favicon] == []
