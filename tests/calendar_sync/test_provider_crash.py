"""Conformance case 27's crash points against each adapter: crmflow killed
in the middle of a run.

Between random edits on both sides (``test_provider_random.RandomEdits``),
a sync runs in a process of its own (``crash_run.py``, forked) that dies at a random
provider request, before sending it or after the provider carried it out:
``os._exit``, so nothing after that point runs (no rollback, no lease given
back, no log row finished), as when a worker is killed. The lease then runs
out and the next run takes over. Once the runs are left alone, a sync
completes; both sides hold the same events with the same titles, each UID
once, the next sync writes nothing, and every killed run is in the sync log
as failed with a message saying it was interrupted, none left ``running``.
Google (sandbox), Graph (sandbox) and CalDAV (a real Radicale), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import random
import tempfile
from pathlib import Path
from typing import Any

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.domain.calendar_accounts import RunStatus
from crmflow.services.calendar_sync import CalendarSync
from crmflow.store import models
from crmflow.store.calendar_accounts import INTERRUPTED
from tests.calendar_sync import test_provider_conformance as conformance
from tests.calendar_sync.crash_run import CRASHED, run_in_child
from tests.calendar_sync.drivers import Driver, Mailbox
from tests.calendar_sync.test_provider_conformance import quiet_sync
from tests.calendar_sync.test_provider_core_cases import crm_meeting, run, titles
from tests.calendar_sync.test_provider_random import RandomEdits, crm_titles

driver = conformance.driver

#: runs that may be killed, each after two random edits
ROUNDS = 6
#: the request a run dies at is drawn from 1..LAST_REQUEST (a run making
#: fewer requests, or writes, ends normally)
LAST_REQUEST = 4
#: or from 1..LAST_WRITE of its writes (runs between two edits write little)
LAST_WRITE = 2


def _settings_for_child(settings: Settings) -> dict[str, Any]:
    """``settings`` as keyword arguments another process can load."""
    values: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "reveal"):
            value = value.reveal()
        elif isinstance(value, Path) or not isinstance(
            value, str | int | float | bool | list | dict
        ):
            value = str(value)
        values[name] = value
    return values


#: the runs' processes are forked from a server that imported crmflow once,
#: so a run starts in milliseconds rather than the seconds an interpreter
#: takes to import it
_processes = multiprocessing.get_context("forkserver")
_processes.set_forkserver_preload(["tests.calendar_sync.crash_run"])


async def killed_run(
    settings: Settings, mb: Mailbox, at: int, *, after: bool, writes_only: bool
) -> tuple[int, str]:
    """A sync of ``mb`` in another process that dies at request ``at`` (of
    its writes, with ``writes_only``); its exit code and what it printed."""
    spec = {
        "settings": _settings_for_child(settings),
        "user_id": str(mb.ctx.user_id),
        "organization_id": str(mb.ctx.organization_id),
        "role": mb.ctx.role.value,
        "account_id": str(mb.account.id),
        "at": at,
        "after": after,
        "writes_only": writes_only,
    }
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "output"
        process = _processes.Process(target=run_in_child, args=(spec, str(output)))
        process.start()
        await asyncio.to_thread(process.join)
        assert process.exitcode is not None
        return process.exitcode, output.read_text() if output.exists() else ""


async def lease_runs_out(services: Services, mb: Mailbox) -> None:
    """The killed run's lease expires (as it does ``LEASE`` later)."""
    async with services.db.tenant(mb.ctx) as session:
        row = await session.get_one(models.CalendarAccount, mb.account.id)
        assert row.sync_lease_until is not None, "a killed run gave its lease back"
        row.sync_lease_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)


async def test_case27_runs_killed_mid_way_converge(
    driver: Driver,
    tenants: Any,
    services: Services,
    settings: Settings,
    calendar_sync: CalendarSync,
) -> None:
    rand = random.Random(27)
    mb = await driver.connect(tenants.alice.ctx, 0)
    await calendar_sync.update_account(mb.ctx, mb.account.id, {"strategy": "crm_wins"})
    for k in range(3):
        await crm_meeting(services, mb, f"Seed {k}", days=k)
    await run(calendar_sync, mb)
    edits = RandomEdits(rand, services, driver, mb)
    log = edits.log
    killed = 0
    for round_ in range(ROUNDS):
        for k in range(2):
            await edits.one(2 * round_ + k)
        # half of the runs die at one of their writes, the others at any request
        writes_only = rand.random() < 0.5
        at = rand.randint(1, LAST_WRITE if writes_only else LAST_REQUEST)
        after = rand.random() < 0.5
        code, output = await killed_run(
            settings, mb, at, after=after, writes_only=writes_only
        )
        assert code in (0, CRASHED), output
        log.append(output.strip())
        if code == CRASHED:
            killed += 1
            await lease_runs_out(services, mb)

    # left alone, a run completes (one may leave a retried event for the next)
    done = await run(calendar_sync, mb)
    for _ in range(2):
        if done.status is RunStatus.SUCCESS:
            break
        done = await run(calendar_sync, mb)
    assert done.status is RunStatus.SUCCESS, (done.errors, log)
    assert killed >= 2, ("too few runs were killed: the seed tests little", log)
    # a run killed at a write had committed its CRM writes so far, not their
    # status rows
    assert any(
        line.startswith(("killed at PUT", "killed at PATCH", "killed at POST"))
        and "$batch" not in line
        for line in log
    ), log
    held = await driver.uids(mb)
    assert len(held) == len(set(held)), ("a UID twice at the provider", log)
    assert await titles(driver, mb) == await crm_titles(services, mb), log
    await quiet_sync(driver, calendar_sync, services, mb)

    runs = await calendar_sync.runs(mb.ctx)
    assert not [r for r in runs if r.status is RunStatus.RUNNING]
    interrupted = [r for r in runs if [e.code for e in r.errors] == ["interrupted"]]
    assert len(interrupted) == killed, log
    assert {r.status for r in interrupted} == {RunStatus.FAILED}
    assert {r.errors[0].message for r in interrupted} == {INTERRUPTED}
