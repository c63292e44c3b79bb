"""Benchmark: push notification -> appointment in the CRM, under load.

Run: ``.venv/bin/python -m benchmarks.webhook_latency [--db sqlite|postgres]
[--rate 100] [--seconds 20] [--calendars 20] [--workers 2]``

Everything runs as an operator would run it, each in its own process: the
sandbox (``crmflow sandbox serve``), the web app (``crmflow serve``, which on
SQLite also runs the scheduler in-process) and, on PostgreSQL, ``--workers``
``crmflow worker`` processes; the PostgreSQL cluster is started on loopback
by the test suite's helper (``tests/servers/postgres.py``) and removed
afterwards. This process provisions the users, their Google calendar
integrations and calendar accounts (not measured), waits until every
calendar has its watch channel (made by the first scheduled sync), then
drives the load:

* ``--rate`` new events per second for ``--seconds``, spread round-robin
  over ``--calendars`` Google calendars, each made through the sandbox's
  control API as if someone added it in Google Calendar. The sandbox
  notifies crmflow's webhook for each change (a real HTTP POST); the
  receiver marks the calendar due and wakes the scheduler; a sync imports
  the event as an appointment.
* latency of one event = the appointment's ``created_at`` (written by the
  crmflow process) minus the moment just before the control request was
  sent (same machine clock). Printed: p50, p90, p99, max, the rate achieved,
  and how many webhook-triggered sync runs it took (notifications for one
  calendar that arrive during its sync fold into the next run).

The goal the product set: p99 <= 500 ms at 100 notifications/s, on the
SQLite default and on PostgreSQL with 2 workers. The scheduled interval is
an hour here, so only the push path can bring an event in time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from benchmarks._deploy import (
    column,
    cpu_s,
    deployment,
    scalar,
    wait_for,
)
from sqlalchemy import text


async def _load(
    google: str, emails: list[str], rate: float, seconds: float
) -> tuple[dict[str, float], float]:
    """Make the events; when each was sent, and the rate achieved."""
    sent: dict[str, float] = {}
    count = int(rate * seconds)
    day = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=google + "_sandbox/", timeout=30, limits=limits
    ) as ctl:

        async def one(n: int) -> None:
            start = day + dt.timedelta(minutes=n)
            title = f"bench-{n:06d}"
            sent[title] = time.time()
            response = await ctl.post(
                f"calendars/{emails[n % len(emails)]}/events",
                json={
                    "summary": title,
                    "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": (start + dt.timedelta(minutes=30)).isoformat()},
                },
            )
            response.raise_for_status()

        began = time.perf_counter()
        tasks = []
        for n in range(count):
            pause = began + n / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - began
    return sent, count / took


async def _latencies(admin_url: str, sent: dict[str, float]) -> list[float]:
    from crmflow.store.db import Database

    db = Database(admin_url)
    try:
        async with db.admin() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT title, created_at FROM appointments "
                        "WHERE title LIKE 'bench-%'"
                    )
                )
            ).all()
    finally:
        await db.dispose()
    found = []
    for title, created in rows:
        if isinstance(created, str):  # SQLite without type affinity
            created = dt.datetime.fromisoformat(created)
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        found.append(created.timestamp() - sent[title])
    return sorted(found)


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        env: dict[str, str | None] = dict(
            item.split("=", 1)
            for item in args.env  # checked in main()
        )
        async with deployment(
            args.db, tmp, args.calendars, workers=args.workers, env=env
        ) as running:
            google, admin_url = running.google, running.admin_url
            emails, processes = running.emails, running.processes
            await wait_for(
                admin_url,
                "SELECT count(*) FROM push_channels WHERE resource_id <> ''",
                len(emails),
                "a watch channel on every calendar",
            )
            before = await scalar(
                admin_url,
                "SELECT count(*) FROM calendar_sync_log WHERE sync_type = 'webhook'",
            )
            cpu_before = [cpu_s(p.pid) for p in processes]
            driver_before = time.process_time()
            began = time.perf_counter()
            sent, achieved = await _load(google, emails, args.rate, args.seconds)
            await wait_for(
                admin_url,
                "SELECT count(*) FROM appointments WHERE title LIKE 'bench-%'",
                len(sent),
                "every event in the CRM",
            )
            wall = time.perf_counter() - began
            cpu = [
                cpu_s(p.pid) - before
                for p, before in zip(processes, cpu_before, strict=True)
            ]
            driver_cpu = time.process_time() - driver_before
            runs = (
                await scalar(
                    admin_url,
                    "SELECT count(*) FROM calendar_sync_log "
                    "WHERE sync_type = 'webhook'",
                )
                - before
            )
            latencies = await _latencies(admin_url, sent)
            durations = sorted(
                await column(
                    admin_url,
                    "SELECT duration_ms FROM calendar_sync_log "
                    "WHERE sync_type = 'webhook' AND duration_ms IS NOT NULL",
                )
            )
            dead = [p.args for p in processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"processes ended early: {dead}")
    ms = [v * 1000 for v in latencies]
    where = (
        "SQLite, crmflow serve (in-process scheduler)"
        if args.db == "sqlite"
        else f"PostgreSQL, crmflow serve + {args.workers} workers"
    )
    print(
        f"{where}: {len(ms)} events over {args.calendars} calendars at "
        f"{achieved:.0f}/s (asked {args.rate:.0f}/s for {args.seconds:.0f} s)"
    )
    print(
        f"  notification -> appointment: p50 {statistics.median(ms):.0f} ms, "
        f"p90 {_percentile(ms, 0.90):.0f} ms, p99 {_percentile(ms, 0.99):.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )
    names = ["sandbox", "crmflow serve"] + [f"worker {n}" for n in range(len(cpu) - 2)]
    print(
        f"  CPU over the {wall:.1f} s until the last appointment (2 cores = "
        f"{2 * wall:.1f} s): "
        + ", ".join(f"{n} {c:.1f} s" for n, c in zip(names, cpu, strict=True))
        + f", load driver {driver_cpu:.1f} s"
    )
    print(
        f"  webhook-triggered sync runs: {runs} ({len(ms) / max(runs, 1):.1f} "
        f"events each), run time p50 {statistics.median(durations or [0]):.0f} ms, "
        f"max {max(durations or [0]):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--calendars", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CRMFLOW_NAME=VALUE",
        help="a setting for every crmflow process (repeatable), e.g. "
        "CRMFLOW_SYNC_CONCURRENCY=4",
    )
    args = parser.parse_args()
    for item in args.env:
        if not item.startswith("CRMFLOW_") or "=" not in item:
            parser.error(f"--env {item!r}: expected CRMFLOW_NAME=VALUE")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
