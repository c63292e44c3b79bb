"""Prometheus metrics on SQLite and PostgreSQL: syncs counted by kind,
provider and status with their items and durations, token refresh failures,
and the schedule's gauges read at scrape time; nothing personal in them."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from tests.calendar_sync.conftest import connect_google
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _scraped(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the scrape")


async def test_syncs_and_the_schedule_are_measured(
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    calendar_sync: CalendarSync,
    web: httpx.AsyncClient,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    google = await connect_google(flow, sandbox, calendar_sync, ctx, ALICE)
    mail_ok = {"kind": "mail", "provider": "google", "status": "success"}
    runs = _value("crmflow_sync_runs_total", **mail_ok)
    items = _value(
        "crmflow_sync_items_total", kind="mail", provider="google", change="imported"
    )
    timed = _value(
        "crmflow_sync_duration_seconds_count", kind="mail", provider="google"
    )

    result = await mail.sync(ctx, mailbox.id)
    assert result.imported > 0
    assert _value("crmflow_sync_runs_total", **mail_ok) == runs + 1
    assert (
        _value(
            "crmflow_sync_items_total",
            kind="mail",
            provider="google",
            change="imported",
        )
        == items + result.imported
    )
    assert (
        _value("crmflow_sync_duration_seconds_count", kind="mail", provider="google")
        == timed + 1
    )

    calendar_runs = _value(
        "crmflow_sync_runs_total", kind="calendar", provider="google", status="success"
    )
    run = await calendar_sync.sync(ctx, google.account.id)
    assert run.events_imported > 0
    assert (
        _value(
            "crmflow_sync_runs_total",
            kind="calendar",
            provider="google",
            status="success",
        )
        == calendar_runs + 1
    )

    scrape = await web.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    # neither account has had its scheduled sync yet: both are due
    assert _scraped(scrape.text, "crmflow_sync_due_accounts") == 2
    assert _scraped(scrape.text, "crmflow_sync_lag_seconds") >= 0
    assert _scraped(scrape.text, "crmflow_sync_failing_accounts") == 0
    assert ALICE not in scrape.text
    assert str(mailbox.id) not in scrape.text

    # a grant revoked at Google: the refresh fails and is counted
    failures = _value(
        "crmflow_token_refresh_failures_total", provider="google", reason="reconnect"
    )
    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.advance_clock(2 * 3600)  # the access token is due for refresh
    failed = await mail.sync(ctx, mailbox.id)
    assert failed.error is not None
    assert (
        _value(
            "crmflow_token_refresh_failures_total",
            provider="google",
            reason="reconnect",
        )
        == failures + 1
    )
    assert (
        _value(
            "crmflow_sync_runs_total", kind="mail", provider="google", status="failed"
        )
        >= 1
    )
