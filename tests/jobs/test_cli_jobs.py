"""``crmflow jobs status`` as a separate process on the test database (SQLite;
the schedule queries run on both databases in test_background_sync.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from crmflow.config import Settings
from crmflow.domain.schedule import MAX_FAILURES
from crmflow.jobs.runner import InProcessRunner
from crmflow.services.mail import MailService
from tests.calendar_sync.test_cli_sync import _crmflow
from tests.conftest import DbUrls, sqlite_db_urls
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import Clock
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"


@pytest.fixture
def db_urls(tmp_path: Path, sqlite_template: Path) -> DbUrls:
    return sqlite_db_urls(tmp_path, sqlite_template)


async def test_jobs_status_lists_the_schedule_and_flags_failing_accounts(
    flow: Flow,
    mail: MailService,
    runner: InProcessRunner,
    clock: Clock,
    settings: Settings,
    sandbox: Sandbox,
    tenants,
) -> None:
    empty = await _crmflow(settings, "jobs", "status")
    assert empty[0] == 0, empty[2]
    assert "No calendar or mailbox is connected." in empty[1]
    assert "run in crmflow serve (in-process)" in empty[1]

    await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)
    code, out, err = await _crmflow(settings, "jobs", "status")
    assert code == 0, err
    assert ALICE in out
    assert "due now" in out

    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.control("google", "POST", "tokens/expire", json={"email": ALICE})
    for _ in range(MAX_FAILURES):
        assert sum((await runner.tick()).values()) == 1
        clock.advance(dt.timedelta(hours=1))  # past any back-off
    code, out, err = await _crmflow(settings, "jobs", "status")
    assert code == 1
    assert "keeps failing" in err
    assert "Connect it again" in " ".join(err.split())


async def test_worker_refuses_sqlite_and_bad_concurrency(settings: Settings) -> None:
    code, _out, err = await _crmflow(settings, "worker")
    assert code == 2
    assert "crmflow worker needs PostgreSQL" in " ".join(err.split())
    assert "crmflow serve runs the scheduled syncs itself" in " ".join(err.split())
