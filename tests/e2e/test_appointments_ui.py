"""The Appointments screen in a real browser (Debian's Chromium via Playwright).

One journey through the live server: sign in -> create an appointment in a time
zone other than the browser's -> see it in the list with its own wall-clock
times -> edit it -> delete it. The stored row is checked in the database after
creating (the UTC instants follow from the chosen zone), and a screenshot of the
list is written to ``test-artifacts/``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from crmflow.domain import crm
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.store.db import Database
from crmflow.store.repositories import AppointmentRepository
from tests.e2e.conftest import LiveSite, PageLog, run_async

pytestmark = pytest.mark.browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: a full-page screenshot of a rendered list is far larger than this
MIN_SCREENSHOT_BYTES = 10_000


def _stored(site: LiveSite) -> list[crm.Appointment]:
    async def load() -> list[crm.Appointment]:
        db = Database(site.database_url)
        ctx = TenantContext(site.user_id, site.organization_id, Role.ADMIN)
        try:
            async with db.tenant(ctx) as session:
                page = await AppointmentRepository(session).list()
        finally:
            await db.dispose()
        return list(page.items)

    return run_async(load)


def test_sign_in_create_edit_delete_appointment(
    page: Page, live_site: LiveSite, page_log: PageLog, artifacts_dir: Path
) -> None:
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=7)

    # Signed out: the list sends us to the sign-in page.
    page.goto("/appointments")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("Email address").fill(live_site.email)
    page.get_by_label("Password").fill(live_site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/appointments$"))
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("Email")
    expect(page.get_by_text("No upcoming appointments")).to_be_visible()

    # Create: the zone defaults to the browser's; pick another one.
    form = page.locator("#new-appointment")
    expect(form.get_by_label("Time zone")).to_have_value("Europe/Berlin")
    form.get_by_label("Title").fill("Quarterly review with ACME")
    form.get_by_label("Starts").fill(f"{day.isoformat()}T09:30")
    form.get_by_label("Ends").fill(f"{day.isoformat()}T10:45")
    form.get_by_label("Time zone").select_option("America/New_York")
    form.get_by_label("Location").fill("ACME HQ, room 4")
    form.get_by_role("button", name="Create appointment").click()

    expect(page.locator(".flash-success")).to_contain_text("Quarterly review with ACME")
    item = page.locator(".appt", has_text="Quarterly review with ACME")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("09:30 – 10:45")
    expect(item).to_contain_text("America/New York")
    expect(item).to_contain_text("Owner: Ann Archer")
    expect(item.locator(".badge")).to_have_text("Confirmed")

    [stored] = _stored(live_site)
    new_york = ZoneInfo("America/New_York")
    assert stored.span.timezone == "America/New_York"
    assert stored.span.start_at == dt.datetime.combine(
        day, dt.time(9, 30), new_york
    ).astimezone(dt.UTC)
    assert stored.location == "ACME HQ, room 4"

    screenshot = artifacts_dir / "appointments-list.png"
    screenshot.unlink(missing_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > MIN_SCREENSHOT_BYTES

    # Edit: the form shows the stored wall-clock times in the appointment's zone.
    item.get_by_role("link", name="Edit").click()
    expect(page).to_have_url(re.compile(rf"/appointments/{stored.id}/edit$"))
    expect(page.get_by_label("Starts")).to_have_value(f"{day.isoformat()}T09:30")
    expect(page.get_by_label("Time zone")).to_have_value("America/New_York")
    page.get_by_label("Title").fill("Quarterly review (moved)")
    page.get_by_label("Ends").fill(f"{day.isoformat()}T11:15")
    page.get_by_label("Status").select_option("tentative")
    page.get_by_role("button", name="Save changes").click()

    expect(page).to_have_url(re.compile(r"/appointments$"))
    moved = page.locator(".appt", has_text="Quarterly review (moved)")
    expect(moved).to_contain_text("09:30 – 11:15")
    expect(moved.locator(".badge")).to_have_text("Tentative")
    expect(page.locator(".appt", has_text="Quarterly review with ACME")).to_have_count(
        0
    )

    # Delete (the page asks for confirmation first).
    page.once("dialog", lambda dialog: dialog.accept())
    moved.get_by_role("button", name=re.compile("^Delete")).click()
    expect(page.locator(".flash-success")).to_contain_text("deleted")
    expect(page.locator(".appt")).to_have_count(0)
    assert _stored(live_site) == []

    assert page_log.foreign_requests == []
    assert page_log.console_errors == []


def test_sign_in_keeps_the_requested_page(page: Page, live_site: LiveSite) -> None:
    page.goto("/settings")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fsettings$"))
    page.get_by_label("Email address").fill(live_site.email)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not correct")
    # The email stays filled in; only the password must be typed again.
    expect(page.get_by_label("Email address")).to_have_value(live_site.email)
    page.get_by_label("Password").fill(live_site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/settings$"))
    expect(page.get_by_role("heading", name="Personal API tokens")).to_be_visible()
