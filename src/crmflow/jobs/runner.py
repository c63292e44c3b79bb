"""The in-process runner: scheduled syncs inside ``crmflow serve`` / ``demo``.

Whenever a slot is free (at start, when a sync ends, when a push
notification wakes it, and at least every ``tick_s``) the runner asks the
schedule what is due (:class:`~crmflow.store.schedule.ScheduleStore`),
claims accounts for its free slots (a claim is one conditional UPDATE, so a
second runner on the same database never runs it too), runs at most
``concurrency`` syncs at a time through the task functions, and records each
outcome, which sets the account's next sync:
the interval with jitter after success, a back-off after failure
(:mod:`crmflow.domain.schedule`). An account whose sync is running holds its
lease, so a manual Sync at the same time is refused with 409, never doubled.

The loop survives its own failures (a database that is briefly gone, a
bug in one sync): it logs them and tries again at the next tick. Stopping
cancels the loop; a sync cut off half-way leaves its lease to expire and its
cursor where the last stored page put it, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.bootstrap import Services
from crmflow.connections.service import Integrations
from crmflow.domain.schedule import Schedule
from crmflow.errors import CrmflowError
from crmflow.jobs._cancel import cancel_and_wait
from crmflow.jobs.idle import IdleListeners
from crmflow.jobs.tasks import Outcome, SyncTasks, TaskResult
from crmflow.metrics import DUE_ACCOUNTS, FAILING_ACCOUNTS, SYNC_LAG
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from crmflow.services.push import PushChannels
from crmflow.store import cleanup
from crmflow.store.blobs import BlobStore
from crmflow.store.cleanup import Cleanup
from crmflow.store.db import Database
from crmflow.store.schedule import DueAccount, ScheduleStore

_log = logging.getLogger(__name__)

#: how long a claimed account is kept from other runners (a run's lease)
CLAIM = dt.timedelta(minutes=15)
#: access tokens ending sooner than this are refreshed ahead by the sweep
REFRESH_AHEAD = dt.timedelta(minutes=10)
#: the sweep runs at most this often
SWEEP_EVERY = dt.timedelta(minutes=1)
#: integrations refreshed per sweep, at most
SWEEP_LIMIT = 200
#: housekeeping (expired OAuth flows, unnamed attachment files) runs this often
CLEANUP_EVERY = dt.timedelta(hours=1)
#: the longest a provider's ``Retry-After`` holds back an account's next
#: scheduled try (a mistaken header must not stop its sync for days)
MAX_RETRY_AFTER = dt.timedelta(hours=6)
#: the schedule's gauges (due accounts, lag) are read at most this often
STATS_EVERY_S = 5.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _lock_order(account: DueAccount) -> tuple[str, uuid.UUID]:
    return (account.kind.value, account.account_id)


class SyncScheduler:
    """Claims due accounts and runs claimed ones: what every runner does.

    The in-process runner does both in one loop; ``crmflow worker`` claims in
    a periodic job and runs each claimed account as a job of its own
    (:mod:`crmflow.jobs.queue`).
    """

    def __init__(
        self,
        schedule_db: Database,
        tasks: SyncTasks,
        schedule: Schedule,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
        integrations: Integrations | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        """
        Args:
            schedule_db: a database whose sessions see every tenant's accounts
                (the owner role's on PostgreSQL; on SQLite the one file).
            integrations: refresh tokens ahead of expiry (:meth:`sweep_tokens`).
            blobs: the attachment store :meth:`cleanup` sweeps.
        """
        self._db = schedule_db
        self._tasks = tasks
        self._schedule = schedule
        self._clock = clock
        self._rand = rand
        self._integrations = integrations
        self._swept_at: dt.datetime | None = None
        self._blobs = blobs
        self._cleaned_at: dt.datetime | None = None
        self._stats_at = -STATS_EVERY_S

    async def claim_due(self, *, limit: int) -> list[DueAccount]:
        """Claim up to ``limit`` accounts due now (each for one run)."""
        now = self._clock()
        taken: set[tuple[str, uuid.UUID]] = set()
        # one transaction: each claim is a conditional UPDATE, so another
        # runner that read the same due accounts claims none of these; on
        # SQLite it holds the write lock from the start (a read transaction
        # that turns into a writer after someone else wrote would fail)
        async with self._db.admin(write_lock=True) as session:
            store = ScheduleStore(session)
            due = await store.due(now, limit=limit)
            # rows are locked in one fixed order, so two runners that read the
            # due accounts in different orders (a push moved one meanwhile)
            # wait for each other instead of deadlocking
            for account in sorted(due, key=_lock_order):
                if await store.claim(
                    account.kind, account.account_id, now, now + CLAIM
                ):
                    taken.add(_lock_order(account))
        # longest waiting first, as the schedule listed them
        claimed = [account for account in due if _lock_order(account) in taken]
        # what is still waiting after this claim: the queue's depth and lag
        # (at most once per STATS_EVERY_S: under a burst of pushes claims
        # come many times a second, and /metrics reads its own)
        if time.monotonic() - self._stats_at >= STATS_EVERY_S:
            self._stats_at = time.monotonic()
            async with self._db.admin() as session:
                stats = await ScheduleStore(session).stats(now)
            DUE_ACCOUNTS.set(stats.due)
            SYNC_LAG.set(stats.lag_s)
            FAILING_ACCOUNTS.set(stats.failing)
        return claimed

    async def sweep_tokens(self) -> int:
        """Refresh the access tokens that end within :data:`REFRESH_AHEAD`
        (at most once per :data:`SWEEP_EVERY`); how many were refreshed.

        A refresh that fails is recorded on the integration by the refresher
        (a revoked grant: "needs reconnect"), counted in the metrics and
        logged here; the sweep goes on with the next.
        """
        if self._integrations is None:
            return 0
        # the connections service's clock: the one token expiry is written in
        now = self._integrations.deps.clock()
        if self._swept_at is not None and now - self._swept_at < SWEEP_EVERY:
            return 0
        self._swept_at = now
        async with self._db.admin() as session:
            expiring = await ScheduleStore(session).expiring_tokens(
                now + REFRESH_AHEAD, limit=SWEEP_LIMIT
            )
        refreshed = 0
        for token in expiring:
            try:
                await self._integrations.refresh_if_needed(
                    token.ctx, token.kind, token.provider, force=True
                )
            except CrmflowError as exc:
                _log.warning(
                    "token refresh ahead of expiry failed (%s %s): %s",
                    token.provider,
                    token.kind,
                    exc,
                )
                continue
            refreshed += 1
        return refreshed

    async def cleanup(self, *, force: bool = False) -> Cleanup | None:
        """Housekeeping (:mod:`crmflow.store.cleanup`), at most once per
        :data:`CLEANUP_EVERY` unless ``force``; None when it was not time."""
        now = self._clock()
        if (
            not force
            and self._cleaned_at is not None
            and now - self._cleaned_at < CLEANUP_EVERY
        ):
            return None
        self._cleaned_at = now
        if self._blobs is None:
            return None
        done = await cleanup.sweep(self._db, self._blobs, now)
        if done.oauth_flows or done.blobs:
            _log.info(
                "cleanup: %d expired OAuth flows, %d unnamed attachment files removed",
                done.oauth_flows,
                done.blobs,
            )
        return done

    async def run_claimed(self, due: DueAccount) -> Outcome:
        """Run a claimed account's sync and record how it went."""

        async def record(session: AsyncSession, result: TaskResult) -> None:
            await self._record(session, due, result)

        try:
            result = await self._tasks.run(due, record)
        except Exception:
            # a bug, not a provider failure (those are outcomes): log it and
            # back off like a failure, so it is no hot loop
            _log.exception("scheduled %s sync of %s crashed", due.kind, due.account_id)
            result = TaskResult(Outcome.FAILED)
        if not result.recorded:
            # write-locked: on SQLite the UPDATE then waits its turn at the
            # process's write gate; without it, it polls the database's lock
            # with sleeps (1 to 100 ms each) and loses to every write that
            # queued at the gate meanwhile (up to 0.7 s at 100 pushes a second)
            async with self._db.admin(write_lock=True) as session:
                await self._record(session, due, result)
        return result.outcome

    async def _record(
        self, session: AsyncSession, due: DueAccount, result: TaskResult
    ) -> None:
        """When ``due`` syncs next after ``result``, in ``session``'s
        transaction (the run's own last one, or one of its own)."""
        now = self._clock()
        await ScheduleStore(session).finish(
            due.kind,
            due.account_id,
            ok=result.outcome is not Outcome.FAILED,
            schedule=self._schedule,
            now=now,
            rand=self._rand(),
            not_before=(
                now + min(dt.timedelta(seconds=result.retry_after_s), MAX_RETRY_AFTER)
                if result.retry_after_s
                else None
            ),
        )


class InProcessRunner:
    """Runs due syncs in this process until stopped."""

    def __init__(
        self,
        scheduler: SyncScheduler,
        *,
        concurrency: int = 2,
        tick_s: float = 5.0,
    ) -> None:
        """
        Args:
            concurrency: syncs run at the same time, at most.
            tick_s: pause between two looks at the schedule, in seconds.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.scheduler = scheduler
        self._limit = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._tick_s = tick_s
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Look at the schedule now rather than at the next tick (a push
        notification made an account due)."""
        self._woken.set()

    async def tick(self) -> dict[Outcome, int]:
        """Run what is due now, once; how many runs ended how."""
        await self.scheduler.sweep_tokens()
        claimed = await self.scheduler.claim_due(limit=self._concurrency * 4)
        outcomes = await asyncio.gather(*(self._one(d) for d in claimed))
        counts: dict[Outcome, int] = {}
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    async def _one(self, due: DueAccount) -> Outcome:
        async with self._limit:
            return await self.scheduler.run_claimed(due)

    async def run_forever(self) -> None:
        """Keep up to ``concurrency`` syncs running until cancelled.

        A slot that frees up, a :meth:`wake` or every ``tick_s`` seconds
        makes the runner claim what is due for the free slots, so a pushed
        account starts as soon as a slot is free rather than after a whole
        batch. A failure to read the schedule is logged and retried.
        """
        running: set[asyncio.Task[Outcome]] = set()
        housekeeping: asyncio.Task[None] | None = None

        def ended(task: asyncio.Task[Outcome]) -> None:
            running.discard(task)
            self._woken.set()
            if not task.cancelled() and task.exception() is not None:
                # run_claimed turns a sync's crash into an outcome: this is
                # the schedule's own write failing (its claim then lapses)
                _log.error(
                    "recording a scheduled sync failed", exc_info=task.exception()
                )

        try:
            while True:
                # cleared before looking: a wake during the look is kept
                self._woken.clear()
                if housekeeping is None or housekeeping.done():
                    # beside the syncs, never in their way: the token sweep
                    # (each minute) and the cleanup (each hour)
                    housekeeping = asyncio.create_task(self._housekeeping())
                free = self._concurrency - len(running)
                if free > 0:
                    try:
                        claimed = await self.scheduler.claim_due(limit=free)
                    except Exception:
                        _log.exception(
                            "the sync scheduler failed; it tries again shortly"
                        )
                        claimed = []
                    for due in claimed:
                        task = asyncio.create_task(self.scheduler.run_claimed(due))
                        running.add(task)
                        task.add_done_callback(ended)
                # not asyncio.wait_for: on Python 3.11 it swallows a
                # cancellation that comes as the event is set (a run ending
                # as stop() is called), and the loop would go on
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._tick_s):
                        await self._woken.wait()
        finally:
            pending: list[asyncio.Task[Any]] = [*running]
            if housekeeping is not None:
                pending.append(housekeeping)
            for each in pending:
                each.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _housekeeping(self) -> None:
        try:
            await self.scheduler.sweep_tokens()
        except Exception:
            _log.exception("the token sweep failed; it runs again in a minute")
        try:
            await self.scheduler.cleanup()
        except Exception:
            _log.exception("cleanup failed; it runs again in an hour")

    def start(self) -> None:
        """Run the loop as a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run_forever(), name="crmflow-sync")

    async def stop(self) -> None:
        """Stop the loop (a sync under way is cancelled)."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None


def sync_scheduler(services: Services, integrations: Integrations) -> SyncScheduler:
    """The deployment's scheduler: its schedule, the services, push channels."""
    settings = services.settings
    return SyncScheduler(
        services.system_db,
        SyncTasks(
            CalendarSync(integrations),
            MailService(integrations),
            PushChannels(integrations),
        ),
        Schedule(dt.timedelta(seconds=settings.sync_interval_s), settings.sync_jitter),
        integrations=integrations,
        blobs=BlobStore(settings.effective_blob_dir),
    )


class ServeSync:
    """The runner as ``crmflow serve`` / ``demo`` own it (start, stop)."""

    def __init__(self, services: Services, integrations: Integrations) -> None:
        self._services = services
        self.runner = InProcessRunner(
            sync_scheduler(services, integrations),
            concurrency=services.settings.sync_concurrency,
        )
        self.idle = IdleListeners(
            services.system_db,
            MailService(integrations),
            limit=services.settings.imap_idle_max,
            on_change=self.runner.wake,
        )

    async def __aenter__(self) -> ServeSync:
        self.runner.start()
        self.idle.start()
        self._services.push_listeners.append(self.runner.wake)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._services.push_listeners.remove(self.runner.wake)
        await self.idle.stop()
        await self.runner.stop()
