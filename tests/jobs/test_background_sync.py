"""Scheduled syncs on SQLite and PostgreSQL: every connected calendar and
mailbox is synced without anyone pressing Sync, on the interval after
success, with a growing back-off after failures (never a hot loop), and two
runners on one database never run the same account twice."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import Engine

from crmflow.bootstrap import Services
from crmflow.domain.schedule import MIN_RETRY, Schedule
from crmflow.errors import UNEXPECTED_FAILURE
from crmflow.jobs.runner import InProcessRunner, SyncScheduler
from crmflow.jobs.tasks import Outcome, TaskResult
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from crmflow.store import models
from crmflow.store.db import Database
from crmflow.store.schedule import DUE_CHANNEL, ScheduleStore, SyncKind
from crmflow.web.api.calendar_accounts import CalendarAccountOut
from crmflow.web.api.email import EmailAccountOut
from crmflow.web.ui.pages import instant
from tests.calendar_sync.conftest import connect_google
from tests.connections.conftest import Flow, sign_in
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import (
    INTERVAL,
    Clock,
    make_runner,
    notify_mailbox,
    subscribe_mailbox,
)
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"


async def _schedule(admin_db: Database, kind: SyncKind, account_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with admin_db.admin() as session:
        rows = await ScheduleStore(session).overview()
    return next(a for a in rows if a.kind is kind and a.account_id == account_id)


async def test_due_calendars_and_mailboxes_sync_on_their_own(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    google = await connect_google(flow, sandbox, calendar_sync, ctx, ALICE)
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)

    assert await runner.tick() == {Outcome.OK: 2}
    (run,) = await calendar_sync.runs(ctx, google.account.id)
    assert run.sync_type.value == "scheduled"
    assert run.events_imported > 0
    _, messages = await mail.messages(ctx)
    assert messages > 0
    for kind, account_id in (
        (SyncKind.CALENDAR, google.account.id),
        (SyncKind.MAIL, mailbox.id),
    ):
        entry = await _schedule(admin_db, kind, account_id)
        assert entry.next_sync_at == clock.now + INTERVAL
        assert entry.failures == 0
        assert entry.last_synced_at is not None

    # nothing is due until the interval has passed
    clock.advance(INTERVAL - dt.timedelta(seconds=1))
    assert await runner.tick() == {}
    clock.advance(dt.timedelta(seconds=1))
    assert await runner.tick() == {Outcome.OK: 2}


async def test_a_failing_mailbox_backs_off_and_recovers(
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.control("google", "POST", "tokens/expire", json={"email": ALICE})

    pauses: list[dt.timedelta] = []
    for failures in range(1, 7):
        assert await runner.tick() == {Outcome.FAILED: 1}
        entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
        assert entry.failures == failures
        assert entry.last_error is not None
        assert "Connect it again" in entry.last_error
        assert entry.next_sync_at is not None
        pauses.append(entry.next_sync_at - clock.now)
        assert await runner.tick() == {}  # not due again at once: no hot loop
        clock.advance(pauses[-1])
    assert pauses == [MIN_RETRY * 2**n for n in range(3)] + [INTERVAL] * 3
    assert entry.failing

    # the person reconnects: the next scheduled run works and the count resets
    await connect_mailbox(flow, mail, ctx, ALICE)
    assert await runner.tick() == {Outcome.OK: 1}
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert (entry.failures, entry.last_error) == (0, None)


async def test_a_rate_limit_longer_than_the_back_off_is_waited_for(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """A provider that asks for 15 minutes (longer than a worker may wait
    inside a run) gets them: the run fails at once and the schedule does not
    try again before the provider's Retry-After, although its own back-off
    after a first failure is one minute."""
    ctx = tenants.alice.ctx
    google = await connect_google(flow, sandbox, calendar_sync, ctx, ALICE)
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    asked = dt.timedelta(minutes=15)
    for api in ("calendar", "gmail"):
        await sandbox.add_fault(
            "google",
            kind="rate_limit_429",
            api=api,
            retry_after_s=asked.total_seconds(),
            count=1,
        )
    assert await runner.tick() == {Outcome.FAILED: 2}
    (run,) = await calendar_sync.runs(ctx, google.account.id)
    assert run.errors[0].code == "rate_limited"
    assert "slow down" in run.errors[0].message
    for kind, account_id in (
        (SyncKind.CALENDAR, google.account.id),
        (SyncKind.MAIL, mailbox.id),
    ):
        entry = await _schedule(admin_db, kind, account_id)
        assert entry.failures == 1
        assert entry.next_sync_at == clock.now + asked  # not + MIN_RETRY

    clock.advance(MIN_RETRY)
    assert await runner.tick() == {}  # the back-off alone would run now
    clock.advance(asked - MIN_RETRY)
    assert await runner.tick() == {Outcome.OK: 2}


async def test_two_runners_never_sync_the_same_account_twice(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    mail: MailService,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    for actor, email in ((tenants.alice, ALICE), (tenants.bob, "bob@gmail.test")):
        await connect_mailbox(flow, mail, actor.ctx, email)
    first = make_runner(admin_db, calendar_sync, mail, clock)
    second = make_runner(admin_db, calendar_sync, mail, clock)
    before = len(await sandbox.requests("gmail.users.getProfile"))
    counts = await asyncio.gather(first.tick(), second.tick())
    assert sum(n for c in counts for n in c.values()) == 2
    assert all(set(c) <= {Outcome.OK} for c in counts)
    # the provider saw one first import per mailbox, not two
    assert len(await sandbox.requests("gmail.users.getProfile")) == before + 2


async def test_the_runner_works_in_the_background(
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    runner: InProcessRunner,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    seed_demo_google(sandbox.state, ALICE)
    await connect_mailbox(flow, mail, ctx, ALICE)
    assert (await mail.messages(ctx))[1] == 0
    runner.start()
    try:
        # polled: the point is that nothing but the runner's own loop acts
        for _ in range(600):
            if (await mail.messages(ctx))[1] > 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
    assert (await mail.messages(ctx))[1] > 0
    await runner.stop()  # stopping twice is harmless


async def test_a_push_wakes_the_runner_at_once(
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    runner: InProcessRunner,
    services,
    tenants,
) -> None:
    """A runner that would look at the schedule again in an hour syncs a
    due mailbox as soon as a push notification is announced."""
    ctx = tenants.alice.ctx
    seed_demo_google(sandbox.state, ALICE)
    hourly = InProcessRunner(runner.scheduler, tick_s=3600)
    services.push_listeners.append(hourly.wake)
    hourly.start()
    try:
        await asyncio.sleep(0.3)  # its first look: nothing due
        await connect_mailbox(flow, mail, ctx, ALICE)  # due from now on
        await asyncio.sleep(0.3)
        assert (await mail.messages(ctx))[1] == 0  # not looked at again
        services.pushed()
        for _ in range(600):
            if (await mail.messages(ctx))[1] > 0:
                break
            await asyncio.sleep(0.05)
    finally:
        services.push_listeners.remove(hourly.wake)
        await hourly.stop()
    assert (await mail.messages(ctx))[1] > 0


async def test_a_wake_at_the_moment_of_stop_does_not_keep_the_runner_going(
    runner: InProcessRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake (a run ending, a push) in the same instant as :meth:`stop`
    must not swallow the cancellation: the runner stops, rather than looking
    at the schedule again and waiting for its next tick."""
    hourly = InProcessRunner(runner.scheduler, tick_s=3600)
    looked = asyncio.Event()
    claim_due = runner.scheduler.claim_due

    async def claim_due_and_tell(*, limit: int) -> list[Any]:
        try:
            return await claim_due(limit=limit)
        finally:
            looked.set()

    monkeypatch.setattr(runner.scheduler, "claim_due", claim_due_and_tell)
    hourly.start()
    await looked.wait()
    await asyncio.sleep(0.1)  # waiting for its next tick
    hourly.wake()
    try:
        async with asyncio.timeout(10):
            await hourly.stop()
    except TimeoutError:
        pytest.fail("the runner went on after stop(): the cancellation was lost")


@contextlib.contextmanager
def _transactions() -> Iterator[list[list[str]]]:
    """The statements of each transaction committed meanwhile, on every
    engine of this process (each one's first 40 characters, spaces folded)."""
    committed: list[list[str]] = []
    open_: dict[int, list[str]] = {}

    def began(conn: Any) -> None:
        open_[id(conn)] = []

    def seen(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if id(conn) in open_ and not statement.startswith("BEGIN"):
            open_[id(conn)].append(" ".join(statement.split())[:40])

    def ended(conn: Any) -> None:
        committed.append(open_.pop(id(conn), []))

    def dropped(conn: Any) -> None:
        open_.pop(id(conn), None)

    listeners = [
        ("begin", began),
        ("before_cursor_execute", seen),
        ("commit", ended),
        ("rollback", dropped),
    ]
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        yield committed
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)


async def test_a_calendar_runs_next_due_time_commits_with_its_outcome(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """A scheduled calendar run writes when it is due next in the transaction
    that records its outcome: the two land together, and the run costs no
    transaction of its own for it. (A run that cannot start, e.g. one the
    account's lease turns away, is recorded in a transaction of its own.)"""
    ctx = tenants.alice.ctx
    google = await connect_google(flow, sandbox, calendar_sync, ctx, ALICE)
    (due,) = await runner.scheduler.claim_due(limit=10)
    with _transactions() as committed:
        assert await runner.scheduler.run_claimed(due) is Outcome.OK
    writes = [[s for s in t if s.startswith("UPDATE calendar_")] for t in committed]
    # the lease's transaction, then the outcome's: the log row, the account's
    # cursor and outcome, and its next due time
    assert [w for w in writes if w] == [
        ["UPDATE calendar_accounts SET sync_lease_until"[:40]],
        [
            "UPDATE calendar_accounts SET sync_cursor",
            "UPDATE calendar_sync_log SET events_imported"[:40],
            "UPDATE calendar_accounts SET last_synced_at"[:40],
            "UPDATE calendar_accounts SET next_sync_at"[:40],
        ],
    ]
    entry = await _schedule(admin_db, SyncKind.CALENDAR, google.account.id)
    assert (entry.next_sync_at, entry.failures) == (clock.now + INTERVAL, 0)
    assert entry.last_synced_at is not None

    # a run the lease turns away: BUSY, recorded on its own
    clock.advance(INTERVAL)
    (due,) = await runner.scheduler.claim_due(limit=10)
    async with admin_db.admin() as session:
        await session.execute(
            update(models.CalendarAccount)
            .where(models.CalendarAccount.id == google.account.id)
            .values(sync_lease_until=clock.now + dt.timedelta(hours=1))
        )
    assert await runner.scheduler.run_claimed(due) is Outcome.BUSY
    entry = await _schedule(admin_db, SyncKind.CALENDAR, google.account.id)
    assert (entry.next_sync_at, entry.failures) == (clock.now + INTERVAL, 0)


async def test_a_mailbox_runs_next_due_time_commits_with_its_outcome(
    flow: Flow,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """As for a calendar: the mailbox's outcome (its last sync, the lease's
    release) and when it is due next are one transaction."""
    mailbox = await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)
    (due,) = await runner.scheduler.claim_due(limit=10)
    with _transactions() as committed:
        assert await runner.scheduler.run_claimed(due) is Outcome.OK
    writes = [
        [s for s in t if s.startswith("UPDATE email_accounts")] for t in committed
    ]
    # the outcome's transaction: the lease's release, the outcome (an ORM
    # flush), the next due time; no other transaction sets that
    last = [w for w in writes if w][-1]
    assert last[0].startswith("UPDATE email_accounts SET sync_lease_")
    assert last[-1].startswith("UPDATE email_accounts SET next_sync_at")
    assert len(last) == 3
    assert sum(any("next_sync_at" in s for s in w) for w in writes) == 1
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert (entry.next_sync_at, entry.failures) == (clock.now + INTERVAL, 0)


async def test_a_crashed_calendar_run_counts_as_one_failure(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that crashes (a bug, not a provider failure) is logged as
    failed and backs off once: its failure is recorded with its outcome, and
    the runner, seeing the crash, does not record it a second time."""
    ctx = tenants.alice.ctx
    google = await connect_google(flow, sandbox, calendar_sync, ctx, ALICE)

    async def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(calendar_sync, "_run", crash)
    (due,) = await runner.scheduler.claim_due(limit=10)
    assert await runner.scheduler.run_claimed(due) is Outcome.FAILED
    entry = await _schedule(admin_db, SyncKind.CALENDAR, google.account.id)
    assert entry.failures == 1
    assert entry.next_sync_at == clock.now + MIN_RETRY
    (run,) = await calendar_sync.runs(ctx, google.account.id)
    assert run.status.value == "failed"
    assert [e.message for e in run.errors] == [UNEXPECTED_FAILURE]


async def test_a_crashed_mailbox_run_says_so_and_counts_as_one_failure(
    flow: Flow,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mailbox sync that crashes (a bug) leaves the mailbox saying so, not
    "synced", and backs off once."""
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)

    async def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(mail, "_fetch", crash)
    (due,) = await runner.scheduler.claim_due(limit=10)
    assert await runner.scheduler.run_claimed(due) is Outcome.FAILED
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert (entry.failures, entry.next_sync_at) == (1, clock.now + MIN_RETRY)
    account = await mail.account(ctx, mailbox.id)
    assert account.last_synced_at is None
    assert account.last_error == UNEXPECTED_FAILURE


async def test_a_push_during_a_run_keeps_the_account_due(
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    runner: InProcessRunner,
    services,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """A notification that arrives while the account's sync runs may be about
    a change the run missed: the run's end leaves the account due now, and
    the next run is logged as the push's."""
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    await subscribe_mailbox(services, ctx, mailbox.id)
    (due,) = await runner.scheduler.claim_due(limit=10)
    assert not due.pushed
    await notify_mailbox(admin_db, clock.now)
    assert await runner.scheduler.run_claimed(due) is Outcome.OK
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert entry.next_sync_at == clock.now  # not clock.now + INTERVAL
    (again,) = await runner.scheduler.claim_due(limit=10)
    assert (again.account_id, again.pushed) == (mailbox.id, True)


async def test_a_burst_of_pushes_wakes_the_workers_once_per_run(
    flow: Flow,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """Notifications for an account that is due already and not yet claimed
    change nothing (its first notification keeps its place in the queue) and,
    on PostgreSQL, send the workers no wake-up of their own; one that comes
    while the run is under way does, and so does the run's end, which finds
    the account pushed and leaves it due."""
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    (first,) = await runner.scheduler.claim_due(limit=10)
    assert await runner.scheduler.run_claimed(first) is Outcome.OK

    async def push(at: dt.datetime) -> bool:
        return await _push(admin_db, mailbox.id, at)

    async with _wake_ups(admin_db) as heard:
        pushed_at = clock.now
        assert await push(pushed_at)
        for n in range(1, 4):
            assert not await push(pushed_at + dt.timedelta(seconds=n))
        entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
        assert entry.next_sync_at == pushed_at  # first come, first served
        assert await heard(1)

        (due,) = await runner.scheduler.claim_due(limit=10)
        assert (due.account_id, due.pushed) == (mailbox.id, True)
        assert await push(clock.now)  # during the run: it may miss this change
        assert not await push(clock.now)
        assert await heard(2)
        assert await runner.scheduler.run_claimed(due) is Outcome.OK
        assert await heard(3)  # the run's end: the account is due again
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert entry.next_sync_at == clock.now


async def test_a_failed_run_keeps_its_back_off_though_a_push_came_in(
    flow: Flow,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """A failed run is retried after its back-off even when a notification
    arrived while it ran (the retry syncs that change too): pushes never
    turn a failing account into a retry loop, and wake no worker for it."""
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    (claimed,) = await runner.scheduler.claim_due(limit=10)
    assert claimed.account_id == mailbox.id
    async with _wake_ups(admin_db) as heard:
        assert await _push(admin_db, mailbox.id, clock.now)
        retry = await _failed(admin_db, mailbox.id, clock.now)
        assert await heard(1)  # the push's, none for the failed run
    assert retry > clock.now
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert entry.next_sync_at == retry
    assert await runner.scheduler.claim_due(limit=10) == []


async def test_a_push_during_a_failure_back_off_does_not_bring_the_retry_forward(
    flow: Flow,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    """Notifications for an account whose last run failed (a revoked grant,
    a provider asking to slow down) wait for its back-off: they never make
    it due sooner, and wake no worker; the retry is logged as pushed."""
    ctx = tenants.alice.ctx
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    (claimed,) = await runner.scheduler.claim_due(limit=10)
    assert claimed.account_id == mailbox.id
    retry = await _failed(admin_db, mailbox.id, clock.now)
    assert retry > clock.now
    async with _wake_ups(admin_db) as heard:
        for _ in range(3):
            await _push(admin_db, mailbox.id, clock.now)
        assert await heard(0)
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert entry.next_sync_at == retry
    assert await runner.scheduler.claim_due(limit=10) == []
    clock.advance(retry - clock.now)
    (due,) = await runner.scheduler.claim_due(limit=10)
    assert (due.account_id, due.pushed) == (mailbox.id, True)


async def _failed(db: Database, mailbox_id: uuid.UUID, at: dt.datetime) -> dt.datetime:
    """Record that the mailbox's claimed run failed at ``at``; its retry time."""
    async with db.admin() as session:
        return await ScheduleStore(session).finish(
            SyncKind.MAIL,
            mailbox_id,
            ok=False,
            schedule=Schedule(INTERVAL, jitter=0.1),
            now=at,
            rand=0.5,
        )


async def _push(db: Database, mailbox_id: uuid.UUID, at: dt.datetime) -> bool:
    """What a push notification for the mailbox does to its schedule."""
    async with db.admin() as session:
        return await ScheduleStore(session).due_now(SyncKind.MAIL, mailbox_id, at)


@contextlib.asynccontextmanager
async def _wake_ups(db: Database) -> AsyncIterator[Callable[[int], Awaitable[bool]]]:
    """``heard(n)``: whether the workers have had exactly ``n`` wake-ups
    (always True on SQLite, whose runner is woken in-process)."""
    if not db.is_postgres:

        async def anything(_n: int) -> bool:
            return True

        yield anything
        return
    url = db.engine.url.set(drivername="postgresql")
    async with await psycopg.AsyncConnection.connect(
        url.render_as_string(hide_password=False), autocommit=True
    ) as conn:
        await conn.execute(f"LISTEN {DUE_CHANNEL}")
        count = 0

        async def heard(n: int) -> bool:
            nonlocal count
            # a wake-up is delivered at its commit, before the writer returns
            async for _notice in conn.notifies(timeout=0.3):
                count += 1
            return count == n

        yield heard


@pytest.mark.parametrize("concurrency", [0, -1])
def test_concurrency_must_be_positive(concurrency: int, admin_db: Database) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        InProcessRunner(None, concurrency=concurrency)  # type: ignore[arg-type]


async def test_the_pages_show_last_and_next_sync_and_failures(
    web,
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    mail: MailService,
    runner: InProcessRunner,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    google = await connect_google(flow, sandbox, calendar_sync, ctx, ALICE)
    mailbox = await connect_mailbox(flow, mail, ctx, ALICE)
    await sign_in(web, tenants.alice)
    calendars = (await web.get("/calendars")).text
    assert '<dd class="next-sync">soon</dd>' in calendars  # never synced: due

    assert await runner.tick() == {Outcome.OK: 2}
    when = instant(clock.now + INTERVAL)
    calendars = (await web.get("/calendars")).text
    assert f'<dd class="next-sync">{when}</dd>' in calendars
    assert "sync-failures" not in calendars
    email = (await web.get("/email")).text
    assert f'<span class="next-sync">{when}</span>' in email

    for kind, account_id in (
        (SyncKind.CALENDAR, google.account.id),
        (SyncKind.MAIL, mailbox.id),
    ):
        table = (
            models.CalendarAccount if kind is SyncKind.CALENDAR else models.EmailAccount
        )
        async with admin_db.admin() as session:
            await session.execute(
                update(table).where(table.id == account_id).values(sync_failures=3)
            )
    calendars = (await web.get("/calendars")).text
    assert '<dd class="sync-failures">3 in a row;' in calendars
    email = (await web.get("/email")).text
    assert '<span class="sync-failures">3 failed in a row</span>' in email
    # and the API's models say the same
    (info,) = await calendar_sync.accounts(ctx)
    out = CalendarAccountOut.of(info)
    assert (out.sync_failures, out.next_sync_at) == (3, clock.now + INTERVAL)
    (box,) = await mail.accounts(ctx)
    assert EmailAccountOut.of(box).sync_failures == 3


async def test_a_success_resets_the_back_off_in_one_statement(
    flow: Flow, mail: MailService, admin_db: Database, clock: Clock, tenants
) -> None:
    """After failures, a successful run starts the count again with one
    UPDATE (no read of the count); a removed account finishes quietly."""
    mailbox = await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)
    for _ in range(2):
        await _failed(admin_db, mailbox.id, clock.now)
    assert (await _schedule(admin_db, SyncKind.MAIL, mailbox.id)).failures == 2
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    engine = admin_db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with admin_db.admin() as session:
            when = await ScheduleStore(session).finish(
                SyncKind.MAIL,
                mailbox.id,
                ok=True,
                schedule=Schedule(INTERVAL, jitter=0.1),
                now=clock.now,
                rand=0.5,
            )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert when == clock.now + INTERVAL
    assert [s.split()[0] for s in statements if not s.startswith("BEGIN")] == ["UPDATE"]
    entry = await _schedule(admin_db, SyncKind.MAIL, mailbox.id)
    assert (entry.failures, entry.next_sync_at) == (0, when)
    for ok in (True, False):
        async with admin_db.admin() as session:
            gone = await ScheduleStore(session).finish(
                SyncKind.MAIL,
                uuid.uuid4(),
                ok=ok,
                schedule=Schedule(INTERVAL, jitter=0.1),
                now=clock.now,
                rand=0.5,
            )
        assert gone == clock.now + INTERVAL


class _Failing:
    """Scheduled syncs that all fail (the tasks' side of a run is not under
    test here)."""

    async def run(self, _due: object, _record: object = None) -> TaskResult:
        return TaskResult(Outcome.FAILED)


async def test_a_run_is_recorded_in_its_turn_among_a_stream_of_writes(
    flow: Flow, mail: MailService, services: Services, clock: Clock, tenants
) -> None:
    """The schedule's update after a run queues for the write lock like every
    other write of crmflow serve, so a stream of writes (notifications, other
    runs' transactions) cannot keep it waiting. (On SQLite, an update without
    the lock polls the database's lock with sleeps and loses to each write
    that queued meanwhile: the whole stream goes first.)"""
    db = services.system_db
    scheduler = SyncScheduler(
        db,
        _Failing(),  # type: ignore[arg-type]
        Schedule(INTERVAL, jitter=0.1),
        clock=clock,
        rand=lambda: 0.5,
    )
    mailbox = await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)
    (claimed,) = await scheduler.claim_due(limit=10)
    writes = 0
    streaming = asyncio.Event()

    async def stream(count: int) -> None:
        nonlocal writes
        for _ in range(count):
            async with db.admin(write_lock=True) as session:
                await session.execute(
                    update(models.User)
                    .where(models.User.id == tenants.bob.ctx.user_id)
                    .values(is_active=True)
                )
                streaming.set()
                await asyncio.sleep(0.002)
            writes += 1

    others = asyncio.create_task(stream(60))
    await streaming.wait()
    assert await scheduler.run_claimed(claimed) is Outcome.FAILED
    recorded_after = writes
    await others
    # its turn came after the write under way and the one queued before it
    assert recorded_after <= 3
    entry = await _schedule(db, SyncKind.MAIL, mailbox.id)
    assert entry.failures == 1
    assert entry.next_sync_at == Schedule(INTERVAL, jitter=0.1).after_failure(
        clock.now, 1, 0.5
    )
