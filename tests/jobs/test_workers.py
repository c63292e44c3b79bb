"""Three ``crmflow worker`` processes on one PostgreSQL database share the job
queue: every connected mailbox is synced once per round, never by two workers
at the same time, and the workers stop gracefully on SIGTERM.

The proof is taken from outside crmflow: the sandbox's request log (which
user each Gmail call acted for) and the accounts' rows; the workers are real
processes started the way an operator starts them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from crmflow.config import Settings
from crmflow.domain.tenancy import Role
from crmflow.services.mail import MailService
from crmflow.store.db import Database
from crmflow.store.identity import provision_organization
from crmflow.store.schedule import ScheduleStore, SyncKind
from tests.calendar_sync.test_cli_sync import _env
from tests.conftest import DbUrls, make_actor
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import notify_mailbox, subscribe_mailbox
from tests.servers.net import free_port
from tests.servers.sandbox import Sandbox

pytestmark = pytest.mark.postgres

WORKERS = 3
MAILBOXES = 6
#: seconds the workers may take to sync every mailbox once
ROUND_TIMEOUT_S = 60.0


@pytest.fixture
def db_urls(request: pytest.FixtureRequest) -> DbUrls:
    """PostgreSQL only: workers are the PostgreSQL deployment's."""
    pg = request.getfixturevalue("pg_database")
    return DbUrls("postgres", pg.admin_url, pg.app_url)


def _runs(scrapes: list[str]) -> float:
    """Successful Gmail syncs counted by the workers' metrics, together."""
    name = 'crmflow_sync_runs_total{kind="mail",provider="google",status="success"}'
    return sum(
        float(line.split()[-1])
        for text in scrapes
        for line in text.splitlines()
        if line.startswith(name)
    )


async def _synced(admin_db: Database) -> dict[uuid.UUID, bool]:
    async with admin_db.admin() as session:
        rows = await ScheduleStore(session).overview()
    return {
        a.account_id: a.last_synced_at is not None
        for a in rows
        if a.kind is SyncKind.MAIL
    }


async def _last_synced(admin_db: Database) -> dict[uuid.UUID, dt.datetime | None]:
    async with admin_db.admin() as session:
        rows = await ScheduleStore(session).overview()
    return {a.account_id: a.last_synced_at for a in rows if a.kind is SyncKind.MAIL}


async def test_three_workers_sync_every_mailbox_once_and_stop_gracefully(
    flow: Flow,
    mail: MailService,
    sandbox: Sandbox,
    settings: Settings,
    services,
    admin_db: Database,
    tmp_path: Path,
) -> None:
    org = await provision_organization(admin_db, "Workers", "workers")
    addresses = [f"user{n}@gmail.test" for n in range(MAILBOXES)]
    actors, accounts = [], []
    for address in addresses:
        actor = await make_actor(admin_db, services, org, address, Role.MEMBER)
        actors.append(actor)
        accounts.append(await connect_mailbox(flow, mail, actor.ctx, address))
    assert set((await _synced(admin_db)).values()) == {False}
    before = len(await sandbox.requests())

    env = _env(settings) | {"CRMFLOW_SYNC_INTERVAL_S": "3600"}
    ports = [free_port() for _ in range(WORKERS)]
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crmflow",
            "worker",
            "--concurrency",
            "2",
            "--name",
            f"worker-{n}",
            "--metrics-port",
            str(ports[n]),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(WORKERS)
    ]
    try:
        # polled: only the worker processes act on the database meanwhile
        for _ in range(int(ROUND_TIMEOUT_S / 0.2)):
            if all((await _synced(admin_db)).values()):
                break
            await asyncio.sleep(0.2)
        first_sync = await _last_synced(admin_db)
        # each worker's own metrics: together they ran each sync once (a
        # sync is counted just after its row says so: scrape until it is)
        async with httpx.AsyncClient() as http:
            for _ in range(50):
                scrapes = [
                    (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    for port in ports
                ]
                if _runs(scrapes) >= MAILBOXES:
                    break
                await asyncio.sleep(0.1)
        # a push notification for one mailbox: the workers hear the
        # receiver's NOTIFY and sync it now, not in an hour
        pushed = accounts[0]
        await subscribe_mailbox(services, actors[0].ctx, pushed.id)
        await notify_mailbox(admin_db, dt.datetime.now(dt.UTC))
        for _ in range(int(ROUND_TIMEOUT_S / 0.2)):
            if (await _last_synced(admin_db))[pushed.id] != first_sync[pushed.id]:
                break
            await asyncio.sleep(0.2)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
        outputs = [await w.communicate() for w in workers]
    logs = [err.decode(errors="replace") for _out, err in outputs]
    assert [w.returncode for w in workers] == [0] * WORKERS, logs
    assert all("Traceback" not in log for log in logs), logs

    # each mailbox's first import asked for its profile once: one sync each,
    # by one worker (the interval is an hour, so no second round started)
    calls = [r for r in (await sandbox.requests())[before:] if not r.get("control")]
    profiles = Counter(
        r["user"] for r in calls if r["apiMethod"] == "gmail.users.getProfile"
    )
    assert profiles == dict.fromkeys(addresses, 1)
    # every job ran once: each worker logs the scheduled syncs it ran (and
    # the pushed mailbox's second sync, queued by a worker's listener)
    ran = [log.count("scheduled mail sync of account") for log in logs]
    assert sum(ran) == MAILBOXES + 1, logs
    assert _runs(scrapes) == MAILBOXES, scrapes
    assert sum(log.count("queued 1 pushed syncs") for log in logs) == 1, logs
