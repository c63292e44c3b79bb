"""Benchmark: what the schedule costs with 10,000 connected accounts, and how
sync throughput grows with workers.

Run: ``.venv/bin/python -m benchmarks.scheduler_overhead [--db sqlite|postgres]
[--accounts 10000] [--idle-s 60] [--synced 120] [--workers 1,2,4]``

Processes as in :mod:`benchmarks.webhook_latency` (``benchmarks/_deploy.py``).

* **Idle overhead.** One user with a Google calendar is connected for real;
  the database then gets ``--accounts`` - 1 more users, each with a calendar
  integration and a synced calendar account, copied from the first with SQL
  (their tokens are never used: nothing is due). Every account was synced
  just now and is next due in an hour: the schedule has nothing to do but
  look. Measured: the CPU the scheduling process used over ``--idle-s``
  seconds, as a share of one core: ``crmflow serve`` on SQLite (its
  in-process runner looks every 5 s), one ``crmflow worker`` on PostgreSQL
  (its periodic enqueue job every 5 s, the push listener, procrastinate's own
  polling). The PostgreSQL server's own CPU is not included.
* **Throughput** (PostgreSQL only): ``--synced`` accounts connected for real
  (empty calendars, already synced once, so each run is a no-change
  incremental sync: one events.list with the sync token). For each worker
  count, that many ``crmflow worker --concurrency 4`` processes are started
  and idle, then every account is made due at once (with the NOTIFY the push
  receiver sends, so no one waits for the periodic enqueue); measured: the
  time until every account has synced again, syncs per second, and CPU
  seconds per sync across the workers.

The goal the product set: idle overhead <= 5 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._deploy import Deployment, cpu_s, deployment, scalar, wait_for
from sqlalchemy import insert, select, text, update

BATCH = 1000


async def _clone_accounts(admin_url: str, count: int) -> None:
    """``count`` more users like the first one, each with a calendar account
    synced now and due in an hour."""
    from crmflow.store import models
    from crmflow.store.db import Database

    db = Database(admin_url)
    now = dt.datetime.now(dt.UTC)
    tables = {
        "user": models.User,
        "member": models.UserOrganization,
        "integration": models.UserIntegration,
        "account": models.CalendarAccount,
    }
    try:
        async with db.admin() as session:
            template: dict[str, dict[str, Any]] = {}
            for name, model in tables.items():
                row = (
                    (await session.execute(select(model.__table__))).mappings().first()
                )
                assert row is not None, name
                template[name] = dict(row)
        for start in range(0, count, BATCH):
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
            for n in range(start, min(start + BATCH, count)):
                user_id, integration_id = uuid.uuid4(), uuid.uuid4()
                email = f"idle{n:06d}@bench.test"
                rows["user"].append(template["user"] | {"id": user_id, "email": email})
                member = template["member"] | {"user_id": user_id}
                if "id" in member:
                    member["id"] = uuid.uuid4()
                rows["member"].append(member)
                rows["integration"].append(
                    template["integration"]
                    | {"id": integration_id, "user_id": user_id, "email": email}
                )
                rows["account"].append(
                    template["account"]
                    | {
                        "id": uuid.uuid4(),
                        "user_id": user_id,
                        "integration_id": integration_id,
                        "last_synced_at": now,
                        "next_sync_at": now + dt.timedelta(hours=1),
                    }
                )
            async with db.admin() as session:
                for name, model in tables.items():
                    await session.execute(insert(model.__table__), rows[name])
        async with db.admin() as session:
            await session.execute(
                update(models.CalendarAccount.__table__).values(
                    next_sync_at=now + dt.timedelta(hours=1)
                )
            )
    finally:
        await db.dispose()


async def idle(kind: str, accounts: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        async with deployment(kind, tmp, 1, serve=kind == "sqlite") as running:
            if kind == "sqlite":
                await wait_for(
                    running.admin_url,
                    "SELECT count(*) FROM calendar_accounts "
                    "WHERE last_synced_at IS NOT NULL",
                    1,
                    "the first sync",
                )
            await _clone_accounts(running.admin_url, accounts - 1)
            total = await scalar(
                running.admin_url, "SELECT count(*) FROM calendar_accounts"
            )
            if kind == "postgres":
                running.start_worker("worker-0")
            scheduler = running.processes[-1]
            await asyncio.sleep(5)  # started, first looks done
            before = cpu_s(scheduler.pid)
            await asyncio.sleep(seconds)
            used = cpu_s(scheduler.pid) - before
            runs = await scalar(
                running.admin_url, "SELECT count(*) FROM calendar_sync_log"
            )
            if scheduler.poll() is not None:
                raise RuntimeError("the scheduling process ended early")
    who = (
        "crmflow serve (in-process runner), SQLite"
        if kind == "sqlite"
        else ("one crmflow worker, PostgreSQL")
    )
    print(
        f"idle overhead, {total:,} connected calendar accounts, nothing due: "
        f"{who}: {used:.2f} CPU s over {seconds:.0f} s = {100 * used / seconds:.2f} % "
        f"of one core ({runs} sync run(s) logged in all)"
    )


async def throughput(synced: int, counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # no webhook receiver runs here: push off
        async with deployment(
            "postgres", tmp, synced, serve=False, env={"CRMFLOW_WEBHOOK_BASE_URL": None}
        ) as running:
            # the first round: initial syncs
            await _round(running, max(counts), warm_up=True)
            for count in counts:
                wall, cpu = await _round(running, count)
                print(
                    f"throughput, {count} worker(s) x concurrency 4: {synced} no-change "
                    f"syncs in {wall:.2f} s = {synced / wall:.1f} syncs/s, "
                    f"{1000 * cpu / synced:.0f} ms of worker CPU per sync"
                )


async def _round(
    running: Deployment, count: int, *, warm_up: bool = False
) -> tuple[float, float]:
    workers = [running.start_worker(f"round-{count}-{n}") for n in range(count)]
    await asyncio.sleep(4)  # started and listening
    before = [cpu_s(w.pid) for w in workers]
    from crmflow.store.db import Database

    db = Database(running.admin_url)
    began_at = dt.datetime.now(dt.UTC)
    began = time.perf_counter()
    try:
        async with db.admin() as session:
            await session.execute(
                text("UPDATE calendar_accounts SET next_sync_at = NULL")
            )
            await session.execute(text("SELECT pg_notify('crmflow_due', '')"))
    finally:
        await db.dispose()
    since = began_at.isoformat()
    synced_since = (
        f"SELECT count(*) FROM calendar_accounts WHERE last_synced_at >= '{since}'"  # noqa: S608
    )
    await wait_for(
        running.admin_url,
        synced_since,
        len(running.emails),
        "every account synced",
    )
    wall = time.perf_counter() - began
    cpu = sum(cpu_s(w.pid) - b for w, b in zip(workers, before, strict=True))
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=60)
        running.processes.remove(worker)
    if warm_up:
        print(
            f"(warm-up: first sync of {len(running.emails)} accounts in {wall:.1f} s)"
        )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--synced", type=int, default=120)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--skip", choices=["idle", "throughput"], help="leave one part out"
    )
    args = parser.parse_args()
    if args.skip != "idle":
        asyncio.run(idle(args.db, args.accounts, args.idle_s))
    if args.skip != "throughput" and args.db == "postgres":
        counts = [int(c) for c in args.workers.split(",")]
        asyncio.run(throughput(args.synced, counts))


if __name__ == "__main__":
    main()
