"""Benchmark: the CPU of one push notification and of one webhook run, alone.

Run: ``.venv/bin/python -m benchmarks.webhook_costs [--db sqlite|postgres]
[--receipts 2000] [--runs 300] [--big 1000]``

``benchmarks/webhook_latency.py`` measures the whole path under load, where
the machine's spread and the way runs fold together hide what one change
saves. This one measures the two costs that latency is made of, one at a
time, in this process (its CPU clock: on PostgreSQL the server's share is not
included), against the sandbox and a throwaway database with ``--calendars``
provisioned Google calendars; no crmflow serve or worker runs meanwhile:

* **receipt**: ``--receipts`` genuine Google notifications, each with a new
  message number, handed to the receiver's function one after another (what
  ``POST /webhooks/google/calendar`` does, without the HTTP server);
* **webhook run**: ``--runs`` times, one new event is added to a calendar
  through the sandbox's control API and the calendar is marked pushed (not
  measured); then the scheduler's claim, the sync, the schedule's update and
  the push channel check (measured), round-robin over the calendars;
* **calendar size** (``--big`` > 0): one calendar gets ``--big`` events and
  is synced; then 30 webhook runs with one new event each on it and on a small
  calendar, taking turns twice.

Printed: CPU per receipt, per webhook run (mean and p50), and the p50s of the
small and the big calendar.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from benchmarks._deploy import deployment, settings_of

#: webhook runs per calendar and turn in the calendar-size phase
SIZE_RUNS = 30


async def _cpu_s(work: Callable[[], Awaitable[Any]]) -> float:
    began = time.process_time()
    await work()
    return time.process_time() - began


async def run(args: argparse.Namespace) -> None:
    from sqlalchemy import func, select

    from crmflow.bootstrap import start_services
    from crmflow.connections.service import Integrations
    from crmflow.jobs.runner import sync_scheduler
    from crmflow.jobs.tasks import Outcome
    from crmflow.services.push import KnownChannels, receive_google_calendar
    from crmflow.store import models
    from crmflow.store.push import Delivery
    from crmflow.store.schedule import ScheduleStore, SyncKind

    with tempfile.TemporaryDirectory() as name:
        async with deployment(
            args.db, Path(name), args.calendars, serve=False
        ) as running:
            services = await start_services(settings_of(running.env))
            scheduler = sync_scheduler(
                services, Integrations(services.db, services.vault, services.settings)
            )
            db = services.system_db
            async with db.admin() as session:
                accounts = {
                    calendar: account
                    for account, calendar in await session.execute(
                        select(
                            models.CalendarAccount.id,
                            models.CalendarAccount.external_calendar_id,
                        )
                    )
                }
            day = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
            added = 0

            async with httpx.AsyncClient(
                base_url=running.google + "_sandbox/", timeout=30
            ) as ctl:

                async def add_event(calendar: str) -> None:
                    nonlocal added
                    added += 1
                    start = day + dt.timedelta(minutes=added)
                    response = await ctl.post(
                        f"calendars/{calendar}/events",
                        json={
                            "summary": f"cost-{added:06d}",
                            "start": {"dateTime": start.isoformat()},
                            "end": {
                                "dateTime": (
                                    start + dt.timedelta(minutes=30)
                                ).isoformat()
                            },
                        },
                    )
                    response.raise_for_status()

                async def pushed(account: uuid.UUID) -> None:
                    async with db.admin(write_lock=True) as session:
                        await ScheduleStore(session).due_now(
                            SyncKind.CALENDAR, account, dt.datetime.now(dt.UTC)
                        )

                async def webhook_run() -> None:
                    [due] = await scheduler.claim_due(limit=1)
                    outcome = await scheduler.run_claimed(due)
                    if outcome is not Outcome.OK:
                        raise RuntimeError(f"a webhook run ended {outcome}")

                # the first sync of each calendar, which also opens its channel
                for account in accounts.values():
                    await pushed(account)
                    await webhook_run()
                channels = [
                    c
                    for c in (await ctl.get("channels")).json()["channels"]
                    if not c.get("stopped")
                ]
                known = KnownChannels()

                async def receipts(first: int, count: int) -> None:
                    for n in range(first, first + count):
                        channel = channels[n % len(channels)]
                        delivery = await receive_google_calendar(
                            db,
                            channel_id=channel["id"],
                            token=channel["token"],
                            resource_id=channel["resource_id"],
                            resource_state="exists",
                            message_number=str(1000 + n),
                            known=known,
                        )
                        if delivery is not Delivery.ACCEPTED:
                            raise RuntimeError(f"a receipt was {delivery}")

                await receipts(0, 200)  # warm-up
                cpu = await _cpu_s(lambda: receipts(200, args.receipts))
                print(
                    f"{args.db}: receipt: {cpu / args.receipts * 1000:.2f} ms of CPU "
                    f"each ({args.receipts} Google notifications, one after another)"
                )
                # the receipts left every calendar pushed: one run each clears that
                for _ in accounts:
                    await webhook_run()

                async def one_run(calendar: str) -> float:
                    await add_event(calendar)
                    await pushed(accounts[calendar])
                    return await _cpu_s(webhook_run)

                calendars = list(accounts)
                for n in range(20):  # warm-up
                    await one_run(calendars[n % len(calendars)])
                costs = [
                    await one_run(calendars[n % len(calendars)])
                    for n in range(args.runs)
                ]
                print(
                    f"{args.db}: webhook run with one new event (claim, sync, schedule, "
                    f"push channel): {statistics.mean(costs) * 1000:.2f} ms of CPU on "
                    f"average, p50 {statistics.median(costs) * 1000:.2f} ms "
                    f"({args.runs} runs over {len(calendars)} calendars)"
                )
                if args.big <= 0:
                    return
                big, small = calendars[0], calendars[1]
                for _ in range(args.big):
                    await add_event(big)
                await pushed(accounts[big])
                imported = await _cpu_s(webhook_run)
                async with db.admin() as session:
                    rows = await session.scalar(
                        select(func.count()).where(
                            models.CalendarEventMapping.calendar_account_id
                            == accounts[big]
                        )
                    )
                print(
                    f"{args.db}: import of {args.big} events: {imported:.2f} s of CPU "
                    f"(the big calendar's status rows: {rows})"
                )
                for _turn in range(2):
                    for label, calendar in (("small", small), ("big", big)):
                        costs = [await one_run(calendar) for _ in range(SIZE_RUNS)]
                        print(
                            f"{args.db}: {label} calendar: webhook run p50 "
                            f"{statistics.median(costs) * 1000:.2f} ms of CPU"
                        )
            await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--calendars", type=int, default=20)
    parser.add_argument("--receipts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--big", type=int, default=1000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
