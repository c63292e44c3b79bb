"""The calendar in ``crmflow demo`` itself, kept in sync without anyone
pressing Sync: the demo login connects its seeded Google calendar, the seeded
events arrive by the scheduled sync, and an event added at "Google" (the
sandbox's control API) arrives by push: the sandbox notifies the demo's
webhook, which marks the calendar due, and the demo's scheduler syncs it. The
scheduled interval is five minutes, so only the push path can bring the event
within the wait below."""

from __future__ import annotations

import datetime as dt
import re
import time

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.test_demo_email import ALICE, PASSWORD, demo, demo_page

__all__ = ["demo", "demo_page"]

#: seconds until a change shows up (the scheduler looks every 5 s)
WAIT_S = 45


def _reload_until(page: Page, path: str, text: str) -> None:
    row = page.get_by_text(text).first
    deadline = time.monotonic() + WAIT_S
    while True:
        page.goto(path)
        if row.count() > 0 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(300)
    expect(row).to_be_visible()


def test_demo_calendar_syncs_by_schedule_and_by_push(
    demo_page: Page, demo: str
) -> None:
    page = demo_page
    page.goto("/login")
    page.get_by_label("Email address").fill(ALICE)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/appointments$"))

    page.get_by_role("link", name="Connect calendar").click()
    page.locator("#connect-google").get_by_role(
        "button", name="Connect Google Calendar"
    ).click()
    expect(page).to_have_url(re.compile(r"/sandbox/google/o/oauth2/v2/auth\?"))
    page.get_by_label(re.compile(re.escape(ALICE))).check()
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/calendars/choose/[0-9a-f-]{36}$"))
    page.get_by_role("button", name="Start syncing").click()
    expect(page).to_have_url(re.compile(r"/calendars/welcome\?account="))

    # no Sync button pressed: the scheduler imports the seeded calendar
    _reload_until(page, "/appointments", "Team Standup")

    # an event added at Google arrives through the webhook
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    added = httpx.post(
        f"{demo}/sandbox/google/_sandbox/calendars/{ALICE}/events",
        json={
            "summary": "Pushed kick-off",
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
        },
    )
    assert added.status_code == 201, added.text
    _reload_until(page, "/appointments", "Pushed kick-off")
    notified = httpx.get(f"{demo}/sandbox/google/_sandbox/notifications").json()
    assert any(
        n["resourceState"] == "exists" and n["outcome"] == "delivered"
        for n in notified["notifications"]
    ), notified
